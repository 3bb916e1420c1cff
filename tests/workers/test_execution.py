"""run_chunk: one certificate per query however often a chunk runs; engine errors and time limits are
answers (unknown), not crashes; cancellation stops a chunk; progress counts stay exact."""

from __future__ import annotations

import numpy as np
from billiard.exceptions import SoftTimeLimitExceeded
from sqlalchemy import func, select

from polycert.formulations.errors import SolverNotAvailableError
from polycert import batches
from polycert.db import repositories as repo
from polycert.db.models import CertificateRow, QueryRow, SignatureRow
from tests.service.factories import interval_certify, small_network
from polycert.db.session import session_factory
from polycert.workers.execution import run_chunk


def make_job(session, n_inputs=3, eps=(0.01, 0.5), methods="both", chunk_size=4):
    network = small_network()
    row, _ = batches.register_network(session, network, "npz", domain=(0.0, 1.0))  # inputs are pixels in [0, 1]
    x = np.random.default_rng(1).uniform(size=(n_inputs, 4))
    request = batches.BatchRequest(network_id=row.id, inputs=x.tolist(), labels=network.predict(x).tolist(),
                                   eps=list(eps), methods=methods)
    job, chunks = batches.create_batch(session, request, created_by="test", chunk_size=chunk_size)
    session.commit()
    return job, chunks, network, x


def unpair(session, job) -> None:
    """Give the job's MIP queries items of their own, so that a chunk holds an LP group and a MIP group."""
    for q in session.scalars(select(QueryRow).where(QueryRow.job_id == job.id, QueryRow.method == "mip")):
        q.item += 1000
    session.commit()


def count(session, model, **where):
    stmt = select(func.count()).select_from(model)
    for k, v in where.items():
        stmt = stmt.where(getattr(model, k) == v)
    return session.scalar(stmt)


def test_every_query_gets_one_certificate_and_the_job_is_done(session):
    job, chunks, _, _ = make_job(session)
    assert job.total == 3 * 2 * 2 and len(chunks) == 3
    for chunk in chunks:
        run_chunk(session, chunk, certify=interval_certify)
    session.refresh(job)
    assert (job.status, job.done, job.errors) == ("done", 12, 0)
    assert count(session, CertificateRow, job_id=job.id) == 12


def test_a_chunk_run_twice_stores_each_certificate_once(session):
    job, chunks, _, _ = make_job(session)
    first = run_chunk(session, chunks[0], certify=interval_certify)
    signatures_before = count(session, SignatureRow)
    second = run_chunk(session, chunks[0], certify=interval_certify)
    assert (first.stored, second.stored, second.skipped) == (4, 0, 0)
    assert count(session, CertificateRow, job_id=job.id) == 4
    assert count(session, SignatureRow) == signatures_before
    session.refresh(job)
    assert job.done == 4 and job.status == "running"


def test_a_redelivered_chunk_answers_only_what_is_missing(session):
    job, chunks, _, _ = make_job(session)
    calls = []

    def dies_after_two(network, x, label, eps, **kw):
        if len(calls) == 2:
            raise KeyboardInterrupt("worker killed")  # not an engine error: propagates like a dying worker
        calls.append(eps)
        return interval_certify(network, x, label, eps, **kw)

    try:
        run_chunk(session, chunks[0], certify=dies_after_two)
    except KeyboardInterrupt:
        session.rollback()
    survived = count(session, CertificateRow, job_id=job.id)  # answers flushed before the "kill"
    assert survived <= 2
    outcome = run_chunk(session, chunks[0], certify=interval_certify)
    assert outcome.stored == 4 - survived
    assert count(session, CertificateRow, job_id=job.id) == 4
    session.refresh(job)
    assert job.done == 4


def test_certificates_match_the_engine_and_keep_pixel_signatures(session):
    job, chunks, network, x = make_job(session, n_inputs=1, eps=(0.5,), methods="lp")
    run_chunk(session, chunks[0], certify=interval_certify)
    cert = session.scalars(select(CertificateRow)).one()
    expected = interval_certify(network, x[0], int(network.predict(x[0])), 0.5)
    assert cert.verdict == expected.verdict.value
    assert np.isclose(cert.lower, expected.lower) and np.isclose(cert.upper, expected.upper)
    pixels = sorted(s.pixel for s in session.scalars(select(SignatureRow).where(SignatureRow.kind == "input_lower")))
    assert pixels == list(np.flatnonzero(x[0] - 0.5 <= 0))


def test_an_engine_error_is_stored_as_unknown_with_its_message(session):
    job, chunks, _, _ = make_job(session, n_inputs=1, eps=(0.1,), methods="mip")

    def no_solver(*_a, **_k):
        raise SolverNotAvailableError("gurobi has no licence here")

    run_chunk(session, chunks[0], certify=no_solver)
    cert = session.scalars(select(CertificateRow)).one()
    assert (cert.verdict, cert.reason) == ("unknown", "solver error")
    assert "gurobi has no licence here" in cert.error
    session.refresh(job)
    assert (job.done, job.errors, job.status) == (1, 1, "done")


def test_a_chunk_out_of_time_answers_unknown_time_limit(session):
    job, chunks, _, _ = make_job(session, n_inputs=2, eps=(0.1,), methods="lp")

    calls = []

    def slow_second(network, x, label, eps, **kw):
        calls.append(eps)
        if len(calls) == 2:
            raise SoftTimeLimitExceeded()
        return interval_certify(network, x, label, eps, **kw)

    run_chunk(session, chunks[0], certify=slow_second)
    reasons = [c.reason for c in session.scalars(select(CertificateRow).order_by(CertificateRow.query_id))]
    assert reasons[0] != "time limit" and reasons[1] == "time limit" and len(reasons) == 2
    session.refresh(job)
    assert job.status == "done"


def test_a_cancelled_job_stops_its_chunks(session):
    job, chunks, _, _ = make_job(session)
    run_chunk(session, chunks[0], certify=interval_certify)
    assert batches.cancel(session, job.id)
    outcome = run_chunk(session, chunks[1], certify=interval_certify)
    assert (outcome.status, outcome.stored) == ("cancelled", 0)
    session.refresh(job)
    assert job.status == "cancelled" and job.done == 4


def test_an_unexpected_error_fails_the_job_with_its_message_instead_of_hanging_it(settings, session):
    from polycert.workers.embedded import EmbeddedPool

    job, chunks, _, _ = make_job(session, n_inputs=1, eps=(0.1,), methods="lp")

    def broken(*_a, **_k):
        raise ImportError("cannot import name 'certify'")

    pool = EmbeddedPool(settings.resolved_database_url, certify=broken)
    pool.enqueue(chunks)
    try:
        pool.wait()
        raised = False
    except ImportError:
        raised = True
    pool.shutdown()
    session.expire_all()
    job = repo.get_job(session, job.id)
    assert raised and job.status == "failed" and "cannot import name 'certify'" in job.error


def test_every_query_reaches_the_engine_with_a_time_limit(session, settings):
    job, chunks, _, _ = make_job(session, n_inputs=1, eps=(0.1,), methods="lp")
    seen = []

    def recording(network, x, label, eps, **kw):
        seen.append(kw)
        return interval_certify(network, x, label, eps, **kw)

    run_chunk(session, chunks[0], certify=recording)
    assert seen[0]["time_limit"] == settings.query_time_limit and seen[0]["method"] == "lp"
    assert "solver" not in seen[0]


def test_a_query_that_keeps_killing_its_process_is_answered_unknown_solver_error_and_the_rest_are_answered(session, settings):
    job, chunks, _, _ = make_job(session, n_inputs=1, eps=(0.1, 0.2), methods="lp")
    for _ in range(settings.chunk_max_attempts):  # each delivery claimed the chunk, then its process died
        repo.claim_chunk(session, chunks[0], "lost")
    session.commit()
    seen = []

    def recording(network, x, label, eps, **kw):
        seen.append(eps)
        return interval_certify(network, x, label, eps, **kw)

    outcome = run_chunk(session, chunks[0], certify=recording)
    assert outcome.stored == 2 and seen == [0.2]  # the suspect (the first unanswered) never reaches the engine again
    certs = {c.query_id: c for c in session.scalars(select(CertificateRow))}
    suspect, other = sorted(certs)
    assert (certs[suspect].verdict, certs[suspect].reason) == ("unknown", "solver error")
    assert "process died 3 times" in certs[suspect].error and certs[other].error is None


def test_retries_of_a_transient_error_are_not_counted_as_lost_processes(session, settings):
    job, chunks, _, _ = make_job(session, n_inputs=1, eps=(0.1,), methods="lp")
    for _ in range(settings.chunk_max_attempts):  # deliveries that were retries (the database went away)
        repo.claim_chunk(session, chunks[0], "retried")
    session.commit()
    outcome = run_chunk(session, chunks[0], certify=interval_certify, retries=settings.chunk_max_attempts)
    assert outcome.stored == 1
    assert session.scalars(select(CertificateRow)).one().error is None


def test_a_chunk_delivered_again_commits_each_answer_before_the_next_engine_call(session, settings):
    job, chunks, _, _ = make_job(session, n_inputs=2, eps=(0.1, 0.2), methods="lp")
    repo.claim_chunk(session, chunks[0], "lost")  # the first delivery's process died
    session.commit()
    committed = []

    def counting(network, x, label, eps, **kw):
        with session_factory(session.get_bind())() as other:  # what another connection sees: committed rows
            committed.append(other.scalar(select(func.count()).select_from(CertificateRow)))
        return interval_certify(network, x, label, eps, **kw)

    run_chunk(session, chunks[0], certify=counting)
    assert committed == [0, 1, 2, 3]


# -- the batched cascade (issue 7): one engine call per (method, norm) group of a chunk ----------------
from polycert.formulations.cascade import STAGES, CascadeSettings, certify_batch as cascade_batch  # noqa: E402
from polycert.formulations.errors import UnsoundAnswerError  # noqa: E402
from polycert.formulations.robustness import certify as exact_certify  # noqa: E402
from polycert import reports  # noqa: E402


def recording_cascade(calls):
    def engine(network, xs, labels, eps, **kw):
        calls.append(dict(kw, n=len(xs), eps=np.asarray(eps).tolist()))
        return cascade_batch(network, xs, labels, eps, **kw)

    return engine


def test_the_cascade_answers_both_methods_of_a_chunk_in_one_call_and_records_stages(session):
    job, chunks, network, x = make_job(session, n_inputs=3, eps=(0.01, 0.5), methods="both", chunk_size=12)
    calls = []
    run_chunk(session, chunks[0], certify_batch=recording_cascade(calls))
    assert [(c["method"], c["n"]) for c in calls] == [("both", 6)]  # each (input, eps) once, for both answers
    assert calls[0]["eps"] == [0.01, 0.5] * 3  # each input keeps its own radius
    certs = session.scalars(select(CertificateRow).where(CertificateRow.job_id == job.id)).all()
    assert len(certs) == 12 and {c.stage for c in certs} <= set(STAGES)
    assert sorted(c.method for c in certs) == ["lp"] * 6 + ["mip"] * 6
    by_query = {c.query_id: c for c in certs}
    queries = session.scalars(select(QueryRow).where(QueryRow.job_id == job.id)).all()
    for q in queries:  # each stored answer is its own query's: method, and the bound of that method's pair
        assert by_query[q.id].method == q.method
    pairs = {}
    for q in queries:
        pairs.setdefault((q.item, q.eps), {})[q.method] = by_query[q.id]
    assert all(p["mip"].lower >= p["lp"].lower - 1e-7 for p in pairs.values())
    assert all(c.stage for c in certs if c.verdict != "unknown")
    assert all(c.verdict != "unknown" for c in certs if c.method == "mip")  # exact on a 4-3-2 ReLU net


def test_a_lone_lp_or_mip_query_keeps_its_own_group():
    from types import SimpleNamespace as Q

    from polycert.workers.execution import batch_groups

    qs = [Q(id=1, item=0, eps=0.1, norm="linf", target=None, method="lp"),
          Q(id=2, item=0, eps=0.1, norm="linf", target=None, method="mip"),
          Q(id=3, item=1, eps=0.1, norm="linf", target=None, method="mip"),  # its LP query is elsewhere
          Q(id=4, item=2, eps=0.2, norm="linf", target=None, method="lp")]
    groups = [(key, [q.id for q in group]) for key, group in batch_groups(qs)]
    assert groups == [(("both", "linf", None), [1, 2]), (("mip", "linf", None), [3]), (("lp", "linf", None), [4])]


def test_cascade_verdicts_agree_with_the_exact_per_query_mip(session):
    job, chunks, network, x = make_job(session, n_inputs=4, eps=(0.05, 0.3), methods="mip", chunk_size=8)
    run_chunk(session, chunks[0])  # the default engines: the real cascade
    rows = repo.list_results(session, job.id, limit=100)[1]
    assert len(rows) == 8
    for query, cert in rows:
        exact = exact_certify(network, np.asarray(query.input), query.label, query.eps, method="mip")
        assert cert.verdict == exact.verdict.value, (query.item, query.eps, cert.stage)
        if cert.verdict == "verified":
            assert cert.lower > 0
        else:
            assert network.forward(np.asarray(cert.counterexample)).argmax() != query.label or cert.counterexample_value <= 0


def test_methods_both_runs_lp_and_mip_cascades_and_the_comparison_has_no_conflict(session):
    job, chunks, _, _ = make_job(session, n_inputs=5, eps=(0.02, 0.2, 0.6), methods="both", chunk_size=10)
    for chunk in chunks:
        run_chunk(session, chunk)
    summary = reports.compare(session, job.id).summary["total"]
    assert summary["pairs"] == 15 and summary["answered"] == 15
    assert summary["conflicts"] == 0 and summary["lp_only_verified"] == 0
    assert summary["mip_verified"] + summary["mip_falsified"] == 15
    assert summary["mip_verified"] >= summary["lp_verified"]


def test_the_cascade_gets_the_settings_and_the_query_time_limit(session, settings, monkeypatch):
    from polycert.settings import get_settings

    monkeypatch.setenv("POLYCERT_CASCADE__ATTACK_STEPS", "7")
    monkeypatch.setenv("POLYCERT_QUERY_TIME_LIMIT", "8")
    get_settings.cache_clear()
    job, chunks, network, _ = make_job(session, n_inputs=1, eps=(0.1,), methods="mip")
    calls = []
    run_chunk(session, chunks[0], certify_batch=recording_cascade(calls))
    cascade = calls[0]["settings"]
    assert isinstance(cascade, CascadeSettings) and cascade.attack_steps == 7
    assert cascade.mip_time_limit == 8.0 / (network.output_size - 1) and cascade.lp_time_limit == 8.0
    assert calls[0]["domain"] == (0.0, 1.0) and calls[0]["norm"] == "linf"


def test_a_failing_cascade_falls_back_to_the_per_query_engine(session):
    job, chunks, _, _ = make_job(session, n_inputs=2, eps=(0.1,), methods="mip")

    def unsound(*_a, **_k):
        raise UnsoundAnswerError("bound 0.3 above an attained margin 0.1")

    def no_solver(*_a, **_k):
        raise SolverNotAvailableError("gurobi has no licence here")

    run_chunk(session, chunks[0], certify=no_solver, certify_batch=unsound)
    certs = session.scalars(select(CertificateRow)).all()
    assert len(certs) == 2 and {(c.verdict, c.reason) for c in certs} == {("unknown", "solver error")}
    assert all("cascade failed on the group (UnsoundAnswerError" in c.error and "gurobi has no licence" in c.error
               for c in certs)

    job2, chunks2, _, _ = make_job(session, n_inputs=2, eps=(0.1,), methods="lp")
    run_chunk(session, chunks2[0], certify=interval_certify, certify_batch=unsound)
    certs = session.scalars(select(CertificateRow).where(CertificateRow.job_id == job2.id)).all()
    assert len(certs) == 2 and all(c.solver == "interval" and c.error is None for c in certs)


def test_a_chunk_out_of_time_in_the_cascade_answers_the_rest_unknown_time_limit(session):
    job, chunks, _, _ = make_job(session, n_inputs=2, eps=(0.1,), methods="both", chunk_size=4)
    unpair(session, job)
    calls = []

    def second_group_times_out(network, xs, labels, eps, **kw):
        calls.append(kw["method"])
        if len(calls) == 2:
            raise SoftTimeLimitExceeded()
        return cascade_batch(network, xs, labels, eps, **kw)

    run_chunk(session, chunks[0], certify_batch=second_group_times_out)
    by_method = {}
    for c in session.scalars(select(CertificateRow)):
        by_method.setdefault(c.method, []).append(c.reason)
    assert calls == ["lp", "mip"] and by_method["mip"] == ["time limit", "time limit"]
    assert len(by_method["lp"]) == 2 and "time limit" not in by_method["lp"]
    session.refresh(job)
    assert job.status == "done" and job.done == 4


def test_a_job_cancelled_during_a_group_stops_before_the_next_group(session, monkeypatch):
    import polycert.workers.execution as execution

    monkeypatch.setattr(execution, "CANCEL_CHECK_SECONDS", 0.0)
    job, chunks, _, _ = make_job(session, n_inputs=2, eps=(0.1,), methods="both", chunk_size=4)
    unpair(session, job)
    calls = []

    def cancels(network, xs, labels, eps, **kw):
        calls.append(kw["method"])
        batches.cancel(session, job.id)
        return cascade_batch(network, xs, labels, eps, **kw)

    outcome = run_chunk(session, chunks[0], certify_batch=cancels)
    assert calls == ["lp"] and outcome.status == "cancelled" and outcome.stored == 2


def test_single_target_queries_go_through_the_cascade_with_their_target(session):
    network = small_network()
    row, _ = batches.register_network(session, network, "npz", domain=(0.0, 1.0))  # inputs are pixels in [0, 1]
    x = np.random.default_rng(3).uniform(size=(2, 4))
    target = int(1 - network.predict(x[0]))
    request = batches.BatchRequest(network_id=row.id, inputs=x.tolist(), labels=network.predict(x).tolist(),
                                   eps=[0.1], methods="lp", target=target)
    job, chunks = batches.create_batch(session, request, created_by="test", chunk_size=4)
    session.commit()
    batch_calls = []
    run_chunk(session, chunks[0], certify_batch=recording_cascade(batch_calls))
    assert [c["targets"] for c in batch_calls] == [[target]] and batch_calls[0]["n"] == 2
    certs = session.scalars(select(CertificateRow).where(CertificateRow.job_id == job.id)).all()
    assert len(certs) == 2 and all([t["target"] for t in c.targets] == [target] for c in certs)


def test_the_engine_gets_the_jobs_narrowed_per_coordinate_domain_and_each_certificate_states_it(session):
    network = small_network()
    row, _ = batches.register_network(session, network, "npz", domain={"lower": [-1, -1, None, 0], "upper": 1})
    x = np.array([[0.0, 0.5, -3.0, 0.5]])
    narrowed = {"lower": [-0.5, -1.0, -4.0, 0.0], "upper": [1.0, 1.0, 0.0, 1.0]}
    request = batches.BatchRequest(network_id=row.id, inputs=x.tolist(), labels=network.predict(x).tolist(), eps=[0.3],
                                   methods="mip", domain=(narrowed["lower"], narrowed["upper"]))
    job, chunks = batches.create_batch(session, request, created_by="test", chunk_size=4)
    session.commit()
    calls = []
    run_chunk(session, chunks[0], certify_batch=recording_cascade(calls))
    lo, hi = calls[0]["domain"]
    assert lo.tolist() == narrowed["lower"] and hi.tolist() == narrowed["upper"]
    cert = session.scalar(select(CertificateRow).where(CertificateRow.job_id == job.id))
    assert cert.input_set["domain"] == narrowed and cert.input_set["eps"] == 0.3 and cert.input_set["norm"] == "linf"
    if cert.counterexample is not None:
        assert ((np.array(cert.counterexample) >= lo) & (np.array(cert.counterexample) <= hi)).all()


def test_jobs_stored_before_jobs_recorded_their_domain_keep_the_one_they_were_asked_on():
    from polycert.formulations.domains import Domain, with_domain
    from polycert.workers.execution import job_domain

    old_blob_network = small_network()  # decoded from a blob without metadata: answered on [0, 1] back then
    assert job_domain(old_blob_network, {}) == Domain.unit()
    assert job_domain(with_domain(old_blob_network, "-1,1"), {}) == Domain(-1, 1)
    assert job_domain(old_blob_network, {"domain": {"lower": None, "upper": 2.0}}) == Domain(None, 2.0)
