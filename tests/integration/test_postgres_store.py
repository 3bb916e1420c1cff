"""The store on the real PostgreSQL: idempotent upserts, progress counts, GROUP BY aggregates, the same
code as on SQLite (tests/workers, tests/service)."""

from __future__ import annotations

import base64
import uuid
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



def test_each_chunk_task_carries_its_own_time_limits_to_the_broker(redis_url, monkeypatch):
    import json

    import redis

    from service.dispatch import CeleryDispatcher
    from service.settings import Settings

    queue = f"limits-{uuid.uuid4().hex[:6]}"
    dispatcher = CeleryDispatcher(Settings(broker_url=redis_url, queue_name=queue))
    dispatcher.enqueue([11, 12], [(70.0, 100.0), (130.0, 160.0)])
    client = redis.Redis.from_url(redis_url)
    messages = [json.loads(m) for m in client.lrange(queue, 0, -1)]
    limits = {tuple(json.loads(base64.b64decode(m["body"]))[0]): m["headers"]["timelimit"] for m in messages}
    assert limits == {(11,): [100.0, 70.0], (12,): [160.0, 130.0]}  # Celery's order: (hard, soft)
