"""Jobs: submit a batch, status and progress, cancel, results (paged, filtered), LP-versus-MIP comparison."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Query, status

from polycert import batches, reports
from polycert.batches import MAX_ROW
from polycert.api.deps import DispatcherDep, JobId, Offset, SessionDep, SettingsDep, TokenDep
from polycert.api.schemas import (
    AttackPublic, CertificatePublic, ComparisonPublic, InputSetPublic, JobCreate, JobList, JobPublic, Message, Progress,
    ResultPage, RobustnessCurves, Tight,
)
from polycert.db import repositories as repo

router = APIRouter(prefix="/jobs", tags=["jobs"])


def job_public(session, job) -> JobPublic:
    out = JobPublic.model_validate(job)
    out.progress = Progress(**reports.progress(session, job))
    return out


def input_set_public(query, stored: dict | None, box: bool = False) -> InputSetPublic | None:
    """The certificate's set as stored; with ``box``, the smallest box holding it, from the query's centre."""
    if stored is None:
        return None
    out = InputSetPublic(**stored)
    if box:
        from polycert.formulations.domains import parse_domain
        from polycert.formulations.input_sets import InputSet

        centre = np.asarray(query.input, dtype=np.float64)
        lo, hi = InputSet(centre, out.eps, norm=out.norm, domain=parse_domain(stored["domain"]).pair(centre.size)).box()
        out.lower, out.upper = lo.tolist(), hi.tolist()
    return out


def certificate_public(query, cert, tight=None, attack=None, box: bool = False) -> CertificatePublic:
    return CertificatePublic(
        id=cert.id, query_id=query.id, job_id=query.job_id, item=query.item, source_index=query.source_index,
        label=query.label, target=query.target, eps=query.eps, norm=query.norm, method=query.method,
        verdict=cert.verdict, reason=cert.reason, stage=cert.stage, lower=cert.lower, upper=cert.upper, gap=cert.gap,
        counterexample=cert.counterexample, counterexample_value=cert.counterexample_value, solver=cert.solver,
        times=cert.times, size=cert.size, targets=cert.targets, error=cert.error, wall_time=cert.wall_time,
        answer=cert.answer, extra=cert.extra,
        tight=None if tight is None else [Tight(kind=s.kind, layer=s.layer, neuron=s.neuron, index=s.index, pixel=s.pixel) for s in tight],
        attack=None if attack is None else AttackPublic(found=attack.found, margin=attack.margin, seconds=attack.seconds),
        input_set=input_set_public(query, cert.input_set, box),
    )


@router.post("", response_model=JobPublic, status_code=status.HTTP_202_ACCEPTED)
def submit(body: JobCreate, session: SessionDep, settings: SettingsDep, dispatcher: DispatcherDep, user: TokenDep) -> JobPublic:
    """Submit a job: a robustness batch (``kind`` robustness, the default), invertibility queries (``kind``
    injectivity / preimage / dependence / invariance / radius) or a VNN-COMP batch (``kind`` vnncomp). The job
    is stored, split into chunks and enqueued; poll ``GET /jobs/{id}``."""
    job = batches.submit_batch(session, dispatcher, body, created_by=user, settings=settings)
    return job_public(session, job)


@router.get("", response_model=JobList)
def list_jobs(session: SessionDep, offset: Offset = 0,
              limit: Annotated[int, Query(ge=1, le=500)] = 50) -> JobList:
    count, rows = repo.list_jobs(session, offset=offset, limit=limit)
    return JobList(count=count, data=[job_public(session, j) for j in rows])


@router.get("/{job_id}", response_model=JobPublic)
def get_job(job_id: JobId, session: SessionDep) -> JobPublic:
    return job_public(session, batches.get_job_or_raise(session, job_id))


@router.post("/{job_id}/cancel", response_model=Message)
def cancel(job_id: JobId, session: SessionDep, _user: TokenDep) -> Message:
    if not batches.cancel(session, job_id):
        raise HTTPException(status.HTTP_409_CONFLICT, f"job {job_id} is not queued or running")
    return Message(message=f"job {job_id} cancelled; queries already answered are kept")


@router.post("/{job_id}/requeue", response_model=Message)
def requeue(job_id: JobId, session: SessionDep, settings: SettingsDep, dispatcher: DispatcherDep, _user: TokenDep) -> Message:
    """Send the job's unfinished chunks to the queue again (queued ones, and running ones past their hard
    time limit): for a broker that lost its messages. Repeating it is harmless; a job that ended is a 409."""
    sent = batches.requeue(session, dispatcher, job_id, settings)
    return Message(message=f"job {job_id}: {sent} chunk{'s' if sent != 1 else ''} sent to the queue again")


@router.get("/{job_id}/results", response_model=ResultPage)
def results(
    job_id: JobId,
    session: SessionDep,
    verdict: Literal["verified", "falsified", "unknown"] | None = None,
    method: Literal["lp", "klp", "mip", "vnncomp"] | None = None,
    eps: Annotated[float | None, Query(ge=0)] = None,
    label: Annotated[int | None, Query(ge=0, le=MAX_ROW)] = None,
    signatures: bool = False,
    boxes: Annotated[bool, Query(description="state each certificate's input set as a box too (lower, upper per coordinate)")] = False,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ResultPage:
    batches.get_job_or_raise(session, job_id)
    count, rows = repo.list_results(session, job_id, repo.ResultFilter(verdict, method, eps, label), offset=offset, limit=limit)
    ids = [c.id for _, c in rows]
    tight = repo.signatures_of(session, ids) if signatures else {}
    attacks = repo.attacks_of(session, ids)
    data = [certificate_public(q, c, tight.get(c.id) if signatures else None, attacks.get(c.id), boxes) for q, c in rows]
    return ResultPage(count=count, offset=offset, limit=limit, data=data)


@router.get("/{job_id}/comparison", response_model=ComparisonPublic)
def comparison(
    job_id: JobId,
    session: SessionDep,
    differ: bool | None = None,
    eps: Annotated[float | None, Query(ge=0)] = None,
    digit: Annotated[int | None, Query(ge=0, le=MAX_ROW)] = None,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ComparisonPublic:
    """Per (input, eps): LP bound, MIP bracket, relaxation gap, agreement; rows filtered (``differ``: only
    pairs whose verdicts differ, or with false only those that agree; ``eps``; ``digit``: the true label) and
    paged. The summary (overall, per eps, per digit) always covers the whole job."""
    job = batches.get_job_or_raise(session, job_id)
    if not {"lp", "mip"} <= set(batches.method_list(job.parameters.get("methods") or ())):
        raise HTTPException(status.HTTP_409_CONFLICT, f"job {job_id} did not run both LP and MIP (methods={job.parameters.get('methods')!r})")
    result = reports.compare(session, job_id)
    kept = reports.select_rows(result.rows, differ=differ, eps=eps, digit=digit)
    return ComparisonPublic(job_id=job_id, summary=result.summary, count=len(kept), offset=offset, limit=limit,
                            rows=[r.__dict__ for r in kept[offset:offset + limit]])


@router.get("/{job_id}/curves", response_model=RobustnessCurves)
def curves(job_id: JobId, session: SessionDep) -> RobustnessCurves:
    """Robustness curves of a robustness job: per digit and eps, the share of inputs verified by LP, by the
    exact MIP, and not falsified by the attack (an upper bound), from its stored certificates."""
    job = batches.get_job_or_raise(session, job_id)
    if job.kind != "robustness":
        raise HTTPException(status.HTTP_409_CONFLICT, f"job {job_id} is a {job.kind} job; curves are of robustness jobs")
    return RobustnessCurves(**reports.robustness_curves(session, job))
