"""The store on the real PostgreSQL: idempotent upserts, progress counts, GROUP BY aggregates, the same
code as on SQLite (tests/workers, tests/service)."""

from __future__ import annotations

import base64
import uuid
from collections import Counter

import pytest
from sqlalchemy import func, select

from polycert.db import repositories as repo
from polycert.db.migrate import ensure_migrated
from polycert.db.models import CertificateRow, SignatureRow
from polycert.db.session import make_engine, session_factory
from tests.service.factories import interval_certify
from tests.workers.test_execution import make_job
from polycert.workers.execution import run_chunk

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
    assert len(comparison) == 5 and all(lp is not None and mip is not None for _, lp, mip, _ in comparison)
    assert all(klp is None for *_, klp in comparison)  # the job did not ask for the k-neuron LP



def test_each_chunk_task_carries_its_own_time_limits_to_the_broker(redis_url, monkeypatch):
    import json

    import redis

    from polycert.dispatch import CeleryDispatcher
    from polycert.settings import Settings

    queue = f"limits-{uuid.uuid4().hex[:6]}"
    dispatcher = CeleryDispatcher(Settings(broker_url=redis_url, queue_name=queue))
    dispatcher.enqueue([11, 12], [(70.0, 100.0), (130.0, 160.0)])
    client = redis.Redis.from_url(redis_url)
    messages = [json.loads(m) for m in client.lrange(queue, 0, -1)]
    limits = {tuple(json.loads(base64.b64decode(m["body"]))[0]): m["headers"]["timelimit"] for m in messages}
    assert limits == {(11,): [100.0, 70.0], (12,): [160.0, 130.0]}  # Celery's order: (hard, soft)


# -- the early store: what the cascade's cheap stages decide is written while the engine goes on -----------
from polycert.formulations.cascade import certify_batch as cascade_batch  # noqa: E402
from polycert.formulations.errors import UnsoundAnswerError  # noqa: E402
from polycert.db.models import AttackRow, ChunkRow, JobRow  # noqa: E402
from sqlalchemy.exc import OperationalError  # noqa: E402


def _stored(pg_session, job_id):
    pg_session.expire_all()
    return pg_session.scalars(select(CertificateRow).where(CertificateRow.job_id == job_id)).all()


def test_early_answers_are_sent_while_the_engine_works_and_their_wall_time_shares_add_up(pg_session, monkeypatch):
    import time

    job, chunks, _, _ = make_job(pg_session, n_inputs=6, eps=(0.01, 0.2, 0.8), methods="mip", chunk_size=18)
    sent = []
    real_send = repo.send_answers

    def sending(session, answers):
        early = real_send(session, answers)
        sent.append((len(answers), early is not None and early.pipeline is not None))
        return early

    def reports_ten_early(network, xs, labels, eps, *, on_decided, **kw):
        certs = cascade_batch(network, xs, labels, eps, **kw)
        on_decided(list(range(10)), certs[:10])  # as the cascade does after its attack stage
        time.sleep(0.2)  # the LP and MIP stages on the other 8
        return certs

    monkeypatch.setattr(repo, "send_answers", sending)
    start = time.perf_counter()
    outcome = run_chunk(pg_session, chunks[0], certify_batch=reports_ten_early)
    elapsed = time.perf_counter() - start
    certs = _stored(pg_session, job.id)
    pg_session.refresh(job)
    assert sent == [(10, True)], "the early answers went out in pipeline mode, before the engine ended"
    assert (outcome.stored, len(certs), job.done, job.status) == (18, 18, 18, "done")
    assert pg_session.get(ChunkRow, chunks[0]).status == "done"
    falsified = [c for c in certs if c.verdict == "falsified"]
    attacks = pg_session.scalars(select(AttackRow).where(AttackRow.query_id.in_([c.query_id for c in falsified]))).all()
    assert {a.certificate_id for a in attacks if a.found} <= {c.id for c in falsified}
    by_query = sorted(certs, key=lambda c: c.query_id)
    early, late = [c.wall_time for c in by_query[:10]], [c.wall_time for c in by_query[10:]]
    assert len(set(early)) == 1  # the time up to the early report, shared by every query
    assert all(w > early[0] + 0.2 / 8 * 0.9 for w in late)  # plus a share of the time after it
    assert 0.2 <= sum(early) + sum(late) <= elapsed  # the engine's time, not more


def test_an_early_store_is_counted_once_and_skips_what_is_already_stored(pg_session):
    job, chunks, _, _ = make_job(pg_session, n_inputs=4, eps=(0.01, 0.8), methods="mip", chunk_size=8)
    run_chunk(pg_session, chunks[0], certify_batch=cascade_batch)
    pg_session.refresh(job)
    assert (job.done, job.status) == (8, "done")
    stored = _stored(pg_session, job.id)
    queries = {q.id: q for q in repo.pending_queries(pg_session, chunks[0])}
    assert queries == {}  # nothing left to answer
    # the same answers sent again (a redelivered chunk that raced its first run): nothing inserted, nothing counted
    from polycert.db.models import QueryRow
    rows = {q.id: q for q in pg_session.scalars(select(QueryRow).where(QueryRow.job_id == job.id))}
    again = [repo.Answer(rows[c.query_id], {k: getattr(c, k) for k in repo._CERTIFICATE_COLUMNS
                                             if k not in ("query_id", "job_id", "method")}) for c in stored]
    early = repo.send_answers(pg_session, again[:5]).settle()
    assert (early.inserted, early.errors) == (0, 0)
    assert repo.store_answers(pg_session, again[5:], early=early) == 0
    pg_session.commit()
    pg_session.refresh(job)
    assert (job.done, len(_stored(pg_session, job.id))) == (8, 8)


def test_an_early_store_rolled_back_with_its_chunk_leaves_nothing_and_the_rerun_stores_every_answer_once(pg_session):
    job, chunks, _, _ = make_job(pg_session, n_inputs=4, eps=(0.01, 0.8), methods="mip", chunk_size=8)

    def dies_after_the_early_report(network, xs, labels, eps, *, on_decided, **kw):
        certs = cascade_batch(network, xs, labels, eps, **kw)
        on_decided([0, 1], certs[:2])  # sent to the server in this chunk's transaction
        raise OperationalError("SELECT ...", {}, Exception("server closed the connection"))  # transient

    with pytest.raises(OperationalError):  # the Celery task retries it
        run_chunk(pg_session, chunks[0], certify_batch=dies_after_the_early_report)
    pg_session.rollback()
    assert _stored(pg_session, job.id) == []  # the early answers went with the transaction: nothing half-stored
    assert pg_session.get(ChunkRow, chunks[0]).status == "running"
    run_chunk(pg_session, chunks[0], certify_batch=cascade_batch)
    certs = _stored(pg_session, job.id)
    pg_session.refresh(job)
    assert (len(certs), len({c.query_id for c in certs}), job.done, job.status) == (8, 8, 8, "done")


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
    pg_session.refresh(job)
    assert len(certs) == 8 and len(per_query) == 6  # the two early answers are kept, not recomputed
    assert sum(c.solver == "interval" for c in certs) == 6
    assert (job.done, job.status) == (8, "done")


def test_an_alias_is_stored_once_on_postgres_and_names_its_network(pg_session):
    from polycert import batches
    from tests.service.factories import small_network

    row, _ = batches.register_network(pg_session, small_network(987_001, name="aliased"), "npz")
    alias = f"alias-{uuid.uuid4().hex[:8]}"
    assert repo.add_network_alias(pg_session, row.id, alias)
    assert not repo.add_network_alias(pg_session, row.id, alias)
    pg_session.commit()
    assert batches.resolve_network(pg_session, network_id=None, name=alias).id == row.id
    assert repo.network_aliases(pg_session, [row.id]) == {row.id: [alias]}


def test_registering_a_network_on_postgres_says_whether_it_was_new(pg_session):
    from polycert import batches
    from tests.service.factories import small_network

    network = small_network(987_002, name="fresh")  # a seed no other test uses: new to the database
    assert batches.register_network(pg_session, network, "npz")[1] is True
    assert batches.register_network(pg_session, network, "npz")[1] is False
