"""The one function a worker runs per chunk: load the queries, call the engine, store certificates.

Celery tasks (:mod:`workers.tasks`) and the embedded in-process pool (:mod:`workers.embedded`) both call
:func:`run_chunk`, so there is one code path. The engine call is the batched cascade (issue 7): the
chunk's queries are grouped by (method, norm, target) and each group is one
``formulations.cascade.certify_batch`` call (each input with its own eps), stages and limits from
``Settings.cascade``, the answer (bounds or verdict) and the per-query deadline from the job. The queries of a
group whose cascade call raised are answered one at a time by the same cascade, so one bad query cannot take
the group down; a failure alone is that query's answer (unknown, with the message).

Exactly-once: every query is committed on its own, and the store is an idempotent upsert keyed on
``(query_id, method)``; a redelivered chunk (worker killed, ``acks_late``) resumes with the queries that
have no certificate yet, one query at a time (a query that kills its process is found and given up alone).
"""

from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np

from polycert.formulations.certificate import Certificate, UnknownReason, Verdict
from polycert.formulations.errors import PolyCertError
from polycert.db import repositories as repo
from polycert.db.models import QueryRow
from polycert.settings import get_settings
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from . import faults
from .kinds import jsonable
from .networks import cached_network, stored_network

try:  # Celery's soft time limit, raised inside the task when the chunk runs out of time
    from billiard.exceptions import SoftTimeLimitExceeded as _SoftTimeLimit
except ImportError:  # pragma: no cover - billiard ships with Celery
    class _SoftTimeLimit(Exception):
        pass

Certify = Callable[..., Certificate]
CertifyBatch = Callable[..., list[Certificate]]
OnDecided = Callable[[list[int], list[Certificate]], None]  # formulations.cascade.OnDecided
INPUT_KINDS = ("input_lower", "input_upper")
CANCEL_CHECK_SECONDS = 0.5  # how stale a worker's view of "cancelled" may be
FLUSH_SECONDS = 0.5  # how stale a job's progress may be


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def default_certify() -> Certify:
    from polycert.formulations.robustness import certify  # imported late: the engine is heavy and optional at import

    return certify


def default_certify_batch() -> CertifyBatch:
    from polycert.formulations.cascade import certify_batch

    return certify_batch


def warm_up(certify_batch: CertifyBatch) -> None:
    """Cascade calls on a toy ReLU network that go through every stage (the cheap ones switched off, so that
    the LP, the branching and the MIP solver run too): the engine's lazy imports (the LP and MIP solvers'
    libraries) and caches are loaded, so that a worker's first chunk costs what its later ones do."""
    from polycert.formulations.cascade import CascadeSettings
    from polycert.formulations.network import Network

    rng = np.random.default_rng(0)
    toy = Network.from_arrays([rng.normal(size=(3, 4)), rng.normal(size=(2, 3))], [np.zeros(3), np.zeros(2)], "relu",
                              name="warm-up")
    x = np.full((2, 4), 0.5)
    labels, eps = toy.predict(x), np.array([0.01, 0.3])
    for branching in (True, False):
        settings = CascadeSettings(symbolic=False, attack_steps=0, strong_attack_steps=0, branching=branching)
        certify_batch(toy, x, labels, eps, method="mip", settings=settings)


def job_domain(network, parameters: dict[str, Any]):
    """The box a job's balls are clipped to: the one the job recorded at submission (the network's domain or a
    narrower one, :func:`service.batches.job_domain`). Jobs stored before jobs recorded it were asked on the
    network's domain, which was then [0, 1] for every network."""
    from polycert.formulations.domains import Domain, network_domain, parse_domain

    if parameters.get("domain") is not None:
        return parse_domain(parameters["domain"]).check_size(network.input_size)
    return network_domain(network, default=Domain.unit())


def input_domain(network, parameters: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """The job's domain as the engine takes it (scalars, or per-coordinate arrays)."""
    return job_domain(network, parameters or {}).pair()


def input_set_record(query: QueryRow, parameters: dict[str, Any]) -> dict[str, Any]:
    """The exact set a robustness certificate is about: norm, eps, the centre's digest and the domain."""
    from polycert.formulations.domains import center_digest, parse_domain

    return dict(norm=query.norm, eps=float(query.eps), center_sha256=center_digest(query.input),
                domain=parse_domain(parameters["domain"]).to_json())


def certify_query(certify: Certify, network, query: QueryRow, parameters: dict[str, Any]) -> Certificate:
    """One engine call for one stored query."""
    faults.strike([query.item])  # tests only: nothing unless Settings.fault_inject names this query
    kwargs: dict[str, Any] = dict(method=query.method, norm=query.norm, time_limit=parameters.get("time_limit"),
                                  domain=input_domain(network, parameters))
    for option in ("solver", "lp_solver"):  # only what the job chose; the engine has its defaults
        if parameters.get(option):
            kwargs[option] = parameters[option]
    if query.target is not None:
        kwargs["targets"] = [query.target]
    return certify(network, np.asarray(query.input, dtype=np.float64), query.label, query.eps, **kwargs)


def _finite_or(value: float | None, default: float) -> float:
    return default if value is None else float(value)


def _number(value: Any) -> float | None:
    """A float for a JSON column (which cannot hold NaN or infinities: those become None)."""
    value = float(value)
    return value if math.isfinite(value) else None


def _enum_value(value: Any) -> Any:
    return getattr(value, "value", value)


def target_records(targets) -> list[dict[str, Any]]:
    """Per-target bounds (:class:`TargetBound`) as the JSON of the ``targets`` column."""
    return [dict(target=int(t.target), lower=_number(t.lower), upper=_number(t.upper), verdict=_enum_value(t.verdict),
                 reason=_enum_value(t.reason), solver=t.solver, solve_time=_number(t.solve_time), stage=t.stage)
            for t in targets]


def certificate_record(cert: Certificate, wall_time: float) -> dict[str, Any]:
    """A certificate as column values of ``certificates``. Built field by field, not via ``to_dict()``:
    that deep-copies every target's tight constraints, which cost as much as an LP solve here."""
    counterexample = None if cert.counterexample is None else np.asarray(cert.counterexample, dtype=np.float64).tolist()
    targets = target_records(cert.targets)
    return dict(
        verdict=_enum_value(cert.verdict), reason=_enum_value(cert.reason), stage=cert.stage or "",
        lower=float(cert.lower), upper=float(cert.upper), gap=float(cert.gap),
        counterexample=counterexample,
        counterexample_value=None if cert.counterexample_value is None else float(cert.counterexample_value),
        targets=targets, solver=cert.solver or "",
        times={k: _number(v) for k, v in cert.times.items()}, size={k: int(v) for k, v in cert.size.items()},
        error=None, wall_time=wall_time, extra=jsonable(cert.extra) if cert.extra else None,
    )


def unknown_record(reason: UnknownReason, message: str, wall_time: float) -> dict[str, Any]:
    """The certificate of a query the engine could not answer: unknown, bounds (-inf, +inf)."""
    return dict(
        verdict=Verdict.UNKNOWN.value, reason=reason.value, stage="", lower=-math.inf, upper=math.inf, gap=math.inf,
        counterexample=None, counterexample_value=None, targets=[], solver="", times={}, size={},
        error=message[:2000], wall_time=wall_time,
    )


def signature_rows(cert: Certificate) -> list[dict[str, Any]]:
    """Tight constraints as rows; a pixel at its bound carries its coordinate in ``pixel``."""
    rows = []
    for tag in cert.tight:
        pixel = None
        if tag.kind in INPUT_KINDS:
            pixel = tag.neuron if tag.neuron is not None else tag.index
        rows.append(dict(kind=tag.kind, layer=tag.layer, neuron=tag.neuron, index=tag.index, pixel=pixel))
    return rows


def attack_row(cert: Certificate) -> dict[str, Any] | None:
    if cert.counterexample is not None:
        return dict(found=True, margin=cert.counterexample_value, point=np.asarray(cert.counterexample).tolist(),
                    seconds=float(cert.times.get("attack", 0.0)))
    if "attack" in cert.times:
        return dict(found=False, margin=None, point=None, seconds=float(cert.times["attack"]))
    return None


@dataclass(frozen=True)
class ChunkOutcome:
    chunk_id: int
    stored: int  # certificates this run inserted
    skipped: int  # queries already answered (redelivery) or skipped (cancelled job)
    status: str  # done / cancelled / missing


class _Buffer:
    """Answers waiting to be written: flushed in one transaction at most every FLUSH_SECONDS, so the
    database costs a few round trips per flush instead of per query. A worker killed before a flush
    loses only unflushed answers, which the redelivered chunk recomputes (still one certificate each).

    :meth:`send` starts writing answers that are final while the engine still works (on PostgreSQL,
    :func:`repo.send_answers`: the server writes them while this process computes, in this transaction);
    :meth:`settle` waits for that, and the next flush counts them in the job's progress and commits them
    with the rest. (A writer *thread* for the same purpose was measured slower: the GIL hands the waiting
    thread back only every switch interval, and its extra transaction cost more than the overlap saved.)"""

    def __init__(self, session: Session) -> None:
        self.session, self.answers, self.stored, self.last = session, [], 0, time.monotonic()
        self.pending: repo.EarlyStore | None = None  # sent, not yet settled
        self.settled: repo.EarlyStore | None = None  # settled, not yet counted in the job's progress

    def add(self, answer: repo.Answer) -> None:
        self.answers.append(answer)
        if time.monotonic() - self.last >= FLUSH_SECONDS:
            self.flush()

    def send(self, answers: list[repo.Answer]) -> None:
        """Answers the engine will not change: start writing them now where the database allows it."""
        self.settle()
        self.pending = repo.send_answers(self.session, answers)
        if self.pending is None:  # SQLite: with the next flush
            self.answers.extend(answers)

    def settle(self) -> None:
        """Wait for the answers :meth:`send` started writing (before any other statement on the session)."""
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.settle()
            if self.settled is None:
                self.settled = pending
            else:
                self.settled.inserted += pending.inserted
                self.settled.errors += pending.errors

    def flush(self, finish: tuple[int, str] | None = None) -> None:
        """Store the waiting answers (and, with ``finish=(chunk_id, status)``, the chunk's status) in one
        transaction, with the settled early ones counted in the job's progress."""
        self.settle()
        self.stored += repo.store_answers(self.session, self.answers, finish=finish, early=self.settled)
        self.session.commit()
        self.answers, self.last, self.settled = [], time.monotonic(), None


def batch_groups(queries: Sequence[QueryRow]) -> list[tuple[tuple[str, str, int | None], list[QueryRow]]]:
    """The chunk's queries as cascade calls: one group per (method, norm, target) in order of first appearance
    (``target`` None: every other class). An LP and a MIP query of the same (item, eps, norm, target) — what a
    ``methods="both"`` job makes — go to one ``"both"`` group as the pair [lp, mip], so that the cascade runs
    their shared stages once."""
    lp_of = {(q.item, q.eps, q.norm, q.target): q for q in queries if q.method == "lp"}
    partner = {}
    for q in queries:
        key = (q.item, q.eps, q.norm, q.target)
        if q.method == "mip" and key in lp_of and lp_of[key].id not in partner:
            partner[lp_of[key].id], partner[q.id] = q, lp_of[key]
    groups: dict[tuple[str, str, int | None], list[QueryRow]] = {}
    for query in queries:
        if query.id in partner:
            if query.method == "lp":
                groups.setdefault(("both", query.norm, query.target), []).extend([query, partner[query.id]])
            continue
        groups.setdefault((query.method, query.norm, query.target), []).append(query)
    return list(groups.items())


def certify_group(certify_batch: CertifyBatch, network, group: Sequence[QueryRow], parameters: dict[str, Any],
                  on_decided: OnDecided | None = None, method: str | None = None) -> list[Certificate]:
    """One cascade call for a group of queries sharing (method, norm, target); one certificate per query, in order.

    ``method="both"``: the group is [lp, mip] pairs of one input each (:func:`batch_groups`); one call answers
    both, and its pairs are laid out as the group is (an early report's indices too)."""
    method = method or group[0].method
    faults.strike([q.item for q in group])  # tests only: nothing unless Settings.fault_inject names one of them
    inputs = group[::2] if method == "both" else group
    report = on_decided
    if method == "both" and on_decided is not None:
        def report(indices: list[int], pairs: list) -> None:
            on_decided([j for i in indices for j in (2 * i, 2 * i + 1)], [c for pair in pairs for c in pair])
    certs = cascade_call(certify_batch, network, np.asarray([q.input for q in inputs], dtype=np.float64),
                         np.asarray([q.label for q in inputs], dtype=np.int64),
                         np.asarray([q.eps for q in inputs], dtype=np.float64),
                         method=method, norm=group[0].norm, parameters=parameters, on_decided=report,
                         target=group[0].target)
    if method == "both":
        certs = [c for pair in certs for c in pair]
    if len(certs) != len(group):
        raise RuntimeError(f"the cascade answered {len(certs)} of {len(group)} queries")
    return list(certs)


def cascade_call(certify_batch: CertifyBatch, network, xs: np.ndarray, labels: np.ndarray, eps: np.ndarray, *,
                 method: str, norm: str, parameters: dict[str, Any], on_decided: OnDecided | None = None,
                 target: int | None = None) -> list[Certificate]:
    """The engine call a worker makes for a chunk: the cascade with the service's settings and the job's
    limits and answer (``bench/queue.py`` times the same call in process, as the serial baseline)."""
    extra: dict[str, Any] = {} if on_decided is None else {"on_decided": on_decided}  # stand-ins need not know it
    if target is not None:
        extra["targets"] = [int(target)]
    settings = get_settings().cascade.engine_settings(query_time_limit=parameters.get("time_limit"),
                                                      n_targets=network.output_size - 1,
                                                      solver=parameters.get("solver"),
                                                      answer=parameters.get("answer") or "bounds")
    return certify_batch(network, xs, labels, eps, method=method, settings=settings, norm=norm,
                         domain=input_domain(network, parameters), **extra)


def _answer(query: QueryRow, cert: Certificate, wall_time: float, parameters: dict[str, Any]) -> repo.Answer:
    record = dict(certificate_record(cert, wall_time), input_set=input_set_record(query, parameters))
    return repo.Answer(query, record, signature_rows(cert), attack_row(cert))


def _one_by_one(engine: Certify | None, certify_batch: CertifyBatch | None, network, group: Sequence[QueryRow],
                parameters: dict[str, Any], add: Callable[[repo.Answer], None], note: str = "") -> None:
    """Query by query: the same cascade with one input (so one bad query cannot take its group's answers
    down), or a stand-in per-query ``engine``; an engine refusal is an answer (unknown, solver error)."""
    for query in group:
        start = time.perf_counter()
        try:
            if certify_batch is not None:
                cert = certify_group(certify_batch, network, [query], parameters)[0]
            else:
                cert = certify_query(engine, network, query, parameters)
            answer = _answer(query, cert, time.perf_counter() - start, parameters)
        except PolyCertError as exc:  # the engine's refusal; anything else is a bug and fails the job visibly
            message = f"{note}{type(exc).__name__}: {exc}"
            record = unknown_record(UnknownReason.SOLVER_ERROR, message, time.perf_counter() - start)
            answer = repo.Answer(query, dict(record, input_set=input_set_record(query, parameters)))
        add(answer)


def run_chunk(session: Session, chunk_id: int, *, certify: Certify | None = None,
              certify_batch: CertifyBatch | None = None, worker: str | None = None, retries: int = 0) -> ChunkOutcome:
    """Answer every unanswered query of a chunk; answers are committed in small batches (``_Buffer``).

    A chunk delivered again after its process died (``acks_late``: a worker killed, or a solver that took its
    pool process down) is a suspect: its queries are answered one at a time, each committed before the next
    is started, so that a query that kills its process (a poison pill) is the first unanswered one at the next
    delivery. Past ``Settings.chunk_max_attempts`` lost deliveries that query is answered ``unknown (solver
    error)`` and the others are answered on. ``retries``: the deliveries that were retries of a transient
    error (Celery's ``request.retries``), not lost processes.

    ``certify_batch`` (default: the cascade) answers groups of queries; ``certify`` (default:
    ``formulations.robustness.certify``) answers single-target queries and the queries of a group whose
    cascade call raised. A per-query ``certify`` given without ``certify_batch`` (a stand-in engine) is
    called query by query.
    """
    claim = repo.claim_chunk(session, chunk_id, worker or worker_name())  # committed with the reads below
    if claim is None:
        return ChunkOutcome(chunk_id, 0, 0, "missing")
    network = cached_network(claim.network_digest)
    if network is None:  # the first chunk of this network in this process: read and decode its weights
        network_row = repo.get_network(session, claim.network_id)
        assert network_row is not None
        network = stored_network(network_row)
    parameters = dict(claim.job_parameters)
    if parameters.get("time_limit") is None:  # every query has a limit: the job's, or the service's
        parameters["time_limit"] = get_settings().query_time_limit
    if certify_batch is None and certify is None:
        certify_batch = default_certify_batch()
    engine = certify

    queries = repo.pending_queries(session, chunk_id)
    session.commit()  # the claim is durable (attempts count) and no transaction stays open during the engine
    buffer = _Buffer(session)
    lost = claim.attempts - 1 - retries  # earlier deliveries whose process died before the chunk finished
    isolate = lost > 0
    if lost >= get_settings().chunk_max_attempts and queries:  # the same query took its process down each time
        suspect, queries = queries[0], queries[1:]
        record = unknown_record(UnknownReason.SOLVER_ERROR, f"its worker process died {lost} times while answering"
                                " it (the chunk's first unanswered query; later ones are answered one at a time)", 0.0)
        if claim.job_kind != "robustness":
            record["answer"] = "unknown"
        given_up = _Buffer(session)
        given_up.answers.append(repo.Answer(suspect, record))
        given_up.flush(finish=None if queries else (chunk_id, "done"))
        if not queries:
            return ChunkOutcome(chunk_id, given_up.stored, 1 - given_up.stored, "done")
        outcome = _run_kind(session, buffer, chunk_id, claim, network, parameters, queries, engine, certify_batch, isolate)
        return replace(outcome, stored=outcome.stored + given_up.stored)
    return _run_kind(session, buffer, chunk_id, claim, network, parameters, queries, engine, certify_batch, isolate)


def _run_kind(session: Session, buffer: _Buffer, chunk_id: int, claim: repo.Claim, network, parameters: dict[str, Any],
              queries: Sequence[QueryRow], engine: Certify | None, certify_batch: CertifyBatch | None,
              isolate: bool) -> ChunkOutcome:
    if claim.job_kind == "signature":  # logit maximisations, a maximize_logit_batch call per method
        return _run_signatures(session, buffer, chunk_id, claim, network, parameters, queries)
    if claim.job_kind != "robustness":  # invertibility and VNN-COMP: one expensive engine call per query
        return _run_other_kind(session, buffer, chunk_id, claim, network, parameters, queries)
    parameters["domain"] = job_domain(network, parameters).to_json()  # every certificate states the set it is about
    return _run_robustness(session, buffer, chunk_id, claim, network, parameters, queries, engine, certify_batch,
                           isolate=isolate)


def _run_robustness(session: Session, buffer: _Buffer, chunk_id: int, claim: repo.Claim, network,
                    parameters: dict[str, Any], queries: Sequence[QueryRow], engine: Certify,
                    certify_batch: CertifyBatch | None, *, isolate: bool = False) -> ChunkOutcome:
    """Robustness queries: a cascade call per (method, norm, target) group; with ``isolate``, a call per query,
    each answer committed before the next call (a suspect chunk, :func:`run_chunk`)."""
    if certify_batch is None:
        groups = [(None, [q]) for q in queries]
    elif isolate:
        groups = [group for q in queries for group in batch_groups([q])]
    else:
        groups = batch_groups(queries)
    checked, cancelled, answered = time.monotonic(), claim.job_status == "cancelled", set()

    def add(answer: repo.Answer) -> None:
        buffer.add(answer)
        answered.add(answer.query.id)

    for key, group in groups:
        if buffer.answers and (isolate or time.monotonic() - buffer.last >= FLUSH_SECONDS):  # progress stays visible
            buffer.flush()
        if time.monotonic() - checked > CANCEL_CHECK_SECONDS:  # a round trip per query would cost ~10 %
            checked = time.monotonic()
            cancelled = repo.job_status(session, claim.job_id) == "cancelled"
            session.commit()
        if cancelled:
            return _finish(buffer, chunk_id, "cancelled", len(queries))
        try:
            if key is None:
                _one_by_one(engine, None, network, group, parameters, add)
                continue
            try:
                _cascade_group(certify_batch, network, group, parameters, buffer, answered, method=key[0])
            except (_SoftTimeLimit, SQLAlchemyError):
                raise  # the clock, or the database: not the cascade's failure
            except Exception as exc:  # the cascade failed on this group: answer its queries one by one
                note = f"cascade failed on the group ({type(exc).__name__}: {str(exc)[:300]}); alone: "
                rest = [q for q in group if q.id not in answered]
                _one_by_one(engine, None if engine is not None else certify_batch, network, rest, parameters, add, note)
        except _SoftTimeLimit:
            _give_up(buffer, [q for q in queries if q.id not in answered], "the chunk reached its time limit")
            return _finish(buffer, chunk_id, "done", len(queries))
    return _finish(buffer, chunk_id, "done", len(queries))


def _cascade_group(certify_batch: CertifyBatch, network, group: Sequence[QueryRow], parameters: dict[str, Any],
                   buffer: _Buffer, answered: set[int], method: str | None = None) -> None:
    """One cascade call for a group. The answers its cheap stages decide are sent to the database as soon
    as the cascade reports them (unless they are the whole group: nothing left to overlap with), the rest
    buffered when it returns.

    Each certificate's ``wall_time`` is its share of the engine time: the time up to the early report is
    shared by every query of the group, the time after it by the queries still open then; the shares add
    up to the call's wall time, less the time spent handing the early answers over (the service's)."""
    start = time.perf_counter()
    early: set[int] = set()
    shared = handing_over = 0.0  # what every query got of the time before the early report; the callback's time

    def decided(indices: list[int], certs: list[Certificate]) -> None:
        nonlocal shared, handing_over
        now = time.perf_counter()
        shared = (now - start) / len(group)
        answers = [_answer(group[i], cert, shared, parameters) for i, cert in zip(indices, certs)]
        if len(indices) < len(group):
            buffer.send(answers)
        else:
            buffer.answers.extend(answers)  # the chunk's last flush takes them
        early.update(indices)
        answered.update(group[i].id for i in indices)
        handing_over += time.perf_counter() - now

    try:
        certs = certify_group(certify_batch, network, group, parameters, on_decided=decided, method=method)
    finally:
        buffer.settle()  # the server wrote the early answers while the LP and MIP stages ran
    total = time.perf_counter() - start - handing_over
    late = [i for i in range(len(group)) if i not in early]
    each = shared + (total - shared * len(group)) / max(1, len(late))
    for i in late:
        buffer.answers.append(_answer(group[i], certs[i], each, parameters))
        answered.add(group[i].id)


def _run_other_kind(session: Session, buffer: _Buffer, chunk_id: int, claim: repo.Claim, network, parameters: dict[str, Any],
                    queries: Sequence[QueryRow]) -> ChunkOutcome:
    """Invertibility and VNN-COMP queries (:mod:`workers.kinds`), each answered on its own."""
    from . import kinds

    second = None
    if parameters.get("second_network_id") is not None:
        row = repo.get_network(session, int(parameters["second_network_id"]))
        if row is None:
            raise ValueError(f"job {claim.job_id}: its second network {parameters['second_network_id']} is gone")
        second = stored_network(row)
    for i, query in enumerate(queries):
        if repo.job_status(session, claim.job_id) == "cancelled":  # one round trip per (expensive) query is cheap
            session.commit()
            return _finish(buffer, chunk_id, "cancelled", len(queries))
        session.commit()
        start = time.perf_counter()
        try:
            if claim.job_kind == kinds.VNNCOMP:
                own = (query.parameters or {}).get("network_id")
                net = network
                if own is not None and own != claim.network_id:
                    row = repo.get_network(session, int(own))
                    net = stored_network(row)
                timeout = float((query.parameters or {}).get("timeout") or parameters["time_limit"])
                record = kinds.vnncomp_record(net, query.parameters["vnnlib"], timeout, parameters.get("solver"))
            else:
                cert = kinds.invertibility_certificate(claim.job_kind, network, np.asarray(query.input, dtype=np.float64),
                                                       parameters, second)
                record = kinds.invertibility_record(cert, time.perf_counter() - start)
                if parameters.get("domain") is not None:  # the ball the pairs lie in (its eps: the radius asked)
                    record["input_set"] = input_set_record(query, parameters)
        except _SoftTimeLimit:
            _give_up(buffer, queries[i:], "the chunk reached its time limit", answer="unknown")
            return _finish(buffer, chunk_id, "done", len(queries))
        except PolyCertError as exc:
            record = unknown_record(UnknownReason.SOLVER_ERROR, f"{type(exc).__name__}: {exc}", time.perf_counter() - start)
            record["answer"] = "unknown"
        buffer.add(repo.Answer(query, record))
        buffer.flush()  # expensive answers are written at once
    return _finish(buffer, chunk_id, "done", len(queries))


def _run_signatures(session: Session, buffer: _Buffer, chunk_id: int, claim: repo.Claim, network,
                    parameters: dict[str, Any], queries: Sequence[QueryRow]) -> ChunkOutcome:
    """Signature queries (:mod:`workers.signatures`): one engine call per method group, stored at once."""
    from . import signatures

    answered: set[int] = set()
    for _, group in signatures.method_groups(queries):
        if repo.job_status(session, claim.job_id) == "cancelled":
            session.commit()
            return _finish(buffer, chunk_id, "cancelled", len(queries))
        session.commit()
        try:
            answers = signatures.answer_group(network, group, parameters, input_domain(network))
        except _SoftTimeLimit:
            _give_up(buffer, [q for q in queries if q.id not in answered], "the chunk reached its time limit",
                     answer="unknown")
            return _finish(buffer, chunk_id, "done", len(queries))
        for query, record, rows in answers:
            buffer.answers.append(repo.Answer(query, record, rows))
            answered.add(query.id)
        buffer.flush()
    return _finish(buffer, chunk_id, "done", len(queries))


def _finish(buffer: _Buffer, chunk_id: int, status: str, n_queries: int) -> ChunkOutcome:
    buffer.flush(finish=(chunk_id, status))  # the last answers and the chunk's status: one transaction
    return ChunkOutcome(chunk_id, buffer.stored, n_queries - buffer.stored, status)


def record_failure(session: Session, chunk_id: int, exc: BaseException) -> None:
    """Mark a chunk (and its job) failed after an error that is neither an answer nor transient."""
    session.rollback()
    repo.fail_chunk(session, chunk_id, f"{type(exc).__name__}: {exc}")
    session.commit()


def give_up_chunk(engine, chunk_id: int, message: str) -> int:
    """Answer every unanswered query of a chunk ``unknown (time limit)`` with ``message`` and finish the chunk
    (its process was killed at the hard time limit: nothing will answer them); returns how many it stored."""
    from polycert.db.session import session_factory

    with session_factory(engine)() as session:
        queries = repo.pending_queries(session, chunk_id)
        kind = repo.chunk_job_kind(session, chunk_id)
        if kind is None:
            return 0
        buffer = _Buffer(session)
        _give_up(buffer, queries, message, answer=None if kind == "robustness" else "unknown")
        return _finish(buffer, chunk_id, "done", len(queries)).stored


def _give_up(buffer: _Buffer, queries: Sequence[QueryRow], message: str, answer: str | None = None) -> None:
    """Answer ``unknown (time limit)`` for queries the chunk has no time (or no worker) left for."""
    for query in queries:
        record = unknown_record(UnknownReason.TIME_LIMIT, message, 0.0)
        if answer is not None:
            record["answer"] = answer
        buffer.answers.append(repo.Answer(query, record))
