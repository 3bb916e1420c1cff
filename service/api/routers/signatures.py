"""Signatures by digit: aggregates of one network's certificates (pixel shares at the lower / upper bound,
per-neuron shares of envelope lines, segments and regions), computed with GROUP BY in SQL, and the
individual certificates with their tight constraints (``/signatures/certificates``, paged).

Both take the same scope: ``network`` (id or name; required when certificates of several networks are
stored), ``digit``, ``job`` (``job_id`` is its older name), ``method``, ``eps``, ``source``
(``signature`` jobs, ``robustness`` jobs' optima; default both) and ``verdict``."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from polycert import reports
from polycert.api.deps import Offset, SessionDep
from polycert.batches import MAX_ROW
from polycert.api.routers.jobs import certificate_public
from polycert.api.schemas import DigitSignatures, EnvelopeActivity, PixelMaps, ResultPage
from polycert.db import repositories as repo

router = APIRouter(prefix="/signatures", tags=["signatures"])

Digit = Annotated[int, Query(ge=0, le=999, description="the true class (label) of the queries")]
NetworkKey = Annotated[str | None, Query(description="network id or name (required when several have certificates)")]
JobKey = Annotated[int | None, Query(ge=1, le=MAX_ROW, description="only this job's certificates")]
Source = Literal["signature", "robustness"] | None
Verdict = Literal["verified", "falsified", "unknown"] | None


def _scope(session, digit, network, job, job_id, method, eps, source, verdict) -> reports.SignatureScope:
    return reports.signature_scope(session, digit, network=network, job_id=job if job is not None else job_id,
                                   method=method, eps=eps, source=source, verdict=verdict)


@router.get("", response_model=DigitSignatures)
def aggregated(
    session: SessionDep, digit: Digit, network: NetworkKey = None, job: JobKey = None, job_id: JobKey = None,
    method: Literal["lp", "mip"] | None = None, eps: Annotated[float | None, Query(ge=0)] = None,
    source: Source = None, verdict: Verdict = None,
) -> DigitSignatures:
    scope = _scope(session, digit, network, job, job_id, method, eps, source, verdict)
    filters = scope.filters()
    size = None if scope.network is None else scope.network.input_size
    return DigitSignatures(
        **reports.digit_signatures(session, scope),
        pixels=PixelMaps(**reports.pixel_maps(session, digit, size, **filters)),
        envelope=EnvelopeActivity(**reports.envelope_activity(session, digit, **filters)),
    )


@router.get("/certificates", response_model=ResultPage)
def individual(
    session: SessionDep, digit: Digit, network: NetworkKey = None, job: JobKey = None, job_id: JobKey = None,
    method: Literal["lp", "mip"] | None = None, eps: Annotated[float | None, Query(ge=0)] = None,
    source: Source = None, verdict: Verdict = None,
    offset: Offset = 0, limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> ResultPage:
    filters = _scope(session, digit, network, job, job_id, method, eps, source, verdict).filters()
    count = repo.count_certificates_for_digit(session, digit, **filters)
    rows = repo.certificates_for_digit(session, digit, offset=offset, limit=limit, **filters)
    tight = repo.signatures_of(session, [c.id for _, c in rows])
    return ResultPage(count=count, offset=offset, limit=limit,
                      data=[certificate_public(q, c, tight[c.id]) for q, c in rows])
