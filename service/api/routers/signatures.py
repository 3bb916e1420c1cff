"""Signatures by digit: individual certificates with their tight constraints, and aggregates
(pixel frequency maps, envelope activity), computed with GROUP BY in SQL."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from service import reports
from service.api.deps import SessionDep
from service.api.routers.jobs import certificate_public
from service.api.schemas import DigitSignatures, EnvelopeActivity, PixelMaps, ResultPage
from service.db import repositories as repo

router = APIRouter(prefix="/signatures", tags=["signatures"])

Digit = Annotated[int, Query(ge=0, le=999, description="the true class (label) of the queries")]


def _scope(job_id, method, eps, verdict) -> dict:
    return dict(job_id=job_id, method=method, eps=eps, verdict=verdict)


def _input_size(session, job_id: int | None) -> int | None:
    if job_id is None:
        return None
    job = repo.get_job(session, job_id)
    return None if job is None else job.network.input_size


@router.get("", response_model=DigitSignatures)
def aggregated(
    session: SessionDep, digit: Digit, job_id: int | None = None, method: Literal["lp", "mip"] | None = None,
    eps: Annotated[float | None, Query(ge=0)] = None, verdict: Literal["verified", "falsified", "unknown"] | None = None,
) -> DigitSignatures:
    scope = _scope(job_id, method, eps, verdict)
    return DigitSignatures(
        digit=digit,
        pixels=PixelMaps(**reports.pixel_maps(session, digit, _input_size(session, job_id), **scope)),
        envelope=EnvelopeActivity(**reports.envelope_activity(session, digit, **scope)),
    )


@router.get("/certificates", response_model=ResultPage)
def individual(
    session: SessionDep, digit: Digit, job_id: int | None = None, method: Literal["lp", "mip"] | None = None,
    eps: Annotated[float | None, Query(ge=0)] = None, verdict: Literal["verified", "falsified", "unknown"] | None = None,
    offset: Annotated[int, Query(ge=0)] = 0, limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> ResultPage:
    scope = _scope(job_id, method, eps, verdict)
    count = repo.count_certificates_for_digit(session, digit, **scope)
    rows = repo.certificates_for_digit(session, digit, offset=offset, limit=limit, **scope)
    tight = repo.signatures_of(session, [c.id for _, c in rows])
    return ResultPage(count=count, offset=offset, limit=limit,
                      data=[certificate_public(q, c, tight[c.id]) for q, c in rows])
