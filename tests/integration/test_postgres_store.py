"""The store on the real PostgreSQL: idempotent upserts, progress counts, GROUP BY aggregates, the same
code as on SQLite (tests/workers, tests/service)."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import func, select

from service.db import repositories as repo
from service.db.migrate import ensure_migrated
from service.db.models import CertificateRow, SignatureRow
from service.db.session import make_engine, session_factory
from tests.service.factories import interval_certify
from tests.workers.test_execution import make_job
from workers.execution import run_chunk

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_session(postgres_url):
    engine = make_engine(postgres_url)
    ensure_migrated(engine)
    with session_factory(engine)() as session:
        yield session
    engine.dispose()


def test_a_chunk_run_twice_on_postgres_stores_each_certificate_once(pg_session):
    job, chunks, network, x = make_job(pg_session, n_inputs=5, eps=(0.3,), methods="both", chunk_size=4)
    for chunk in chunks + chunks:
        run_chunk(pg_session, chunk, certify=interval_certify)
    pg_session.refresh(job)
    stored = pg_session.scalar(select(func.count()).select_from(CertificateRow).where(CertificateRow.job_id == job.id))
    assert (job.done, job.status, stored) == (10, "done", 10)

    labels = network.predict(x)
    digit = int(labels[0])
    expected = Counter(int(p) for i in range(len(x)) if labels[i] == digit for p in (x[i] - 0.3 <= 0).nonzero()[0])
    got = {p: n for _, p, n in repo.pixel_frequencies(pg_session, digit, job_id=job.id, method="lp")}
    assert got == dict(expected)
    comparison = repo.comparison_pairs(pg_session, job.id)
    assert len(comparison) == 5 and all(lp is not None and mip is not None for _, lp, mip in comparison)


# -- the background writer: what the cascade's cheap stages decide is stored while the engine goes on ------
from formulations.cascade import certify_batch as cascade_batch  # noqa: E402
from formulations.errors import UnsoundAnswerError  # noqa: E402
from service.db.models import AttackRow, ChunkRow  # noqa: E402
from sqlalchemy.exc import OperationalError  # noqa: E402


def _stored(pg_session, job_id):
    pg_session.expire_all()
    return pg_session.scalars(select(CertificateRow).where(CertificateRow.job_id == job_id)).all()


def test_early_answers_are_written_in_the_background_and_their_wall_time_shares_add_up(pg_session):
    job, chunks, _, _ = make_job(pg_session, n_inputs=6, eps=(0.01, 0.2, 0.8), methods="mip", chunk_size=18)
    reports = []

    def reporting(network, xs, labels, eps, *, on_decided, **kw):
        def seen(indices, certs):
            reports.append(list(indices))
            on_decided(indices, certs)
        return cascade_batch(network, xs, labels, eps, on_decided=seen, **kw)

    outcome = run_chunk(pg_session, chunks[0], certify_batch=reporting)
    certs = _stored(pg_session, job.id)
    pg_session.refresh(job)
    assert len(reports) == 1 and reports[0], "the cascade reports what its cheap stages decided, once"
    assert (outcome.stored, len(certs), job.done, job.status) == (18, 18, 18, "done")
    assert pg_session.get(ChunkRow, chunks[0]).status == "done"
    falsified = [c for c in certs if c.verdict == "falsified"]
    attacks = pg_session.scalars(select(AttackRow).where(AttackRow.query_id.in_([c.query_id for c in falsified]))).all()
    assert {a.certificate_id for a in attacks if a.found} <= {c.id for c in falsified}
    early = {c.wall_time for c in certs if c.stage in ("center", "symbolic", "attack")}
    late = [c.wall_time for c in certs if c.stage not in ("center", "symbolic", "attack")]
    assert len(early) == 1  # the time up to the early report, shared by every query
    assert all(w > next(iter(early)) for w in late)  # plus a share of the time after it


def test_a_cascade_that_fails_after_its_early_report_answers_only_the_rest_per_query(pg_session):
    job, chunks, _, _ = make_job(pg_session, n_inputs=4, eps=(0.01, 0.8), methods="mip", chunk_size=8)
    per_query = []

    def fails_late(network, xs, labels, eps, *, on_decided, **kw):
        certs = cascade_batch(network, xs, labels, eps, **kw)
        on_decided([0, 1], certs[:2])
        raise UnsoundAnswerError("a bound above an attained margin")

    def counting(network, x, label, eps, **kw):
        per_query.append(float(eps))
        return interval_certify(network, x, label, eps, **kw)

    run_chunk(pg_session, chunks[0], certify=counting, certify_batch=fails_late)
    certs = _stored(pg_session, job.id)
    assert len(certs) == 8 and len(per_query) == 6  # the two early answers are kept, not recomputed
    assert sum(c.solver == "interval" for c in certs) == 6


def test_a_failed_background_write_fails_the_chunk_and_its_retry_stores_every_answer_once(pg_session, monkeypatch):
    import threading

    job, chunks, _, _ = make_job(pg_session, n_inputs=4, eps=(0.01, 0.8), methods="mip", chunk_size=8)
    real_store = repo.store_answers

    def flaky(session, answers, **kw):
        if threading.current_thread().name == "polycert-writer":
            raise OperationalError("INSERT ...", {}, Exception("server closed the connection"))
        return real_store(session, answers, **kw)

    def reports_two_early(network, xs, labels, eps, *, on_decided, **kw):
        certs = cascade_batch(network, xs, labels, eps, **kw)
        on_decided([0, 1], certs[:2])  # the rest still open: these go to the writer thread
        return certs

    monkeypatch.setattr(repo, "store_answers", flaky)
    with pytest.raises(OperationalError):  # transient: the Celery task retries it
        run_chunk(pg_session, chunks[0], certify_batch=reports_two_early)
    pg_session.rollback()
    assert pg_session.get(ChunkRow, chunks[0]).status == "running"  # not done: nothing lost silently
    monkeypatch.setattr(repo, "store_answers", real_store)
    run_chunk(pg_session, chunks[0], certify_batch=reports_two_early)
    certs = _stored(pg_session, job.id)
    pg_session.refresh(job)
    assert (len(certs), len({c.query_id for c in certs}), job.done, job.status) == (8, 8, 8, "done")
