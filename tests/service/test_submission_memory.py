"""A batch's submission does not hold the whole batch's rows at once (bench/load.py, issue 19): the plan keeps
its inputs as one array (each query a view of its row), and the queries after the first chunk are written in
groups of about ``INSERT_ROWS`` rows, so the API server's peak memory stays flat as batches grow."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest
from sqlalchemy import select

from polycert import batches
from polycert.db import repositories as repo
from polycert.db.models import ChunkRow, JobRow, QueryRow
from polycert.errors import QueueUnavailableError
from tests.service.factories import small_network


class Recording:
    def __init__(self):
        self.sent = []

    def enqueue(self, chunk_ids, time_limits=None):
        self.sent.append(list(chunk_ids))


def _request(network_id: int, n: int) -> batches.BatchRequest:
    x = np.random.default_rng(3).uniform(size=(n, 4))
    return batches.BatchRequest(network_id=network_id, inputs=x.tolist(), labels=small_network().predict(x).tolist(),
                                eps=[0.05, 0.1], methods="lp")


def test_insert_groups_cover_every_chunk_after_the_first_in_order_and_in_bounded_groups():
    sizes = [20, 1000, 1000, 500, 300, 7, 7, 1]
    groups = batches._insert_groups(sizes, rows=1000)
    covered = [i for g in groups for i in range(g.start, g.stop)]
    assert covered == list(range(1, len(sizes)))
    assert all(sum(sizes[g]) < 1000 + max(sizes[g]) for g in groups)
    assert batches._insert_groups([5]) == [] and batches._insert_groups([5, 5]) == [slice(1, 2)]


def test_a_large_batch_is_written_in_bounded_statements_with_every_query_stored_once(session, settings, monkeypatch):
    row, _ = batches.register_network(session, small_network(), "npz")
    monkeypatch.setattr(batches, "INSERT_ROWS", 50)
    statements, original = [], repo.add_queries

    def add_queries(s, job_id, chunk_ids, queries):
        statements.append(sum(len(q) for q in queries))
        original(s, job_id, chunk_ids, queries)

    monkeypatch.setattr(repo, "add_queries", add_queries)
    dispatcher = Recording()
    job = batches.submit_batch(session, dispatcher, _request(row.id, 300), created_by="test", chunk_size=20,
                               settings=settings)
    assert sum(statements) == 600 and len(statements) > 2 and max(statements) <= 60
    assert [c for part in dispatcher.sent for c in part] == repo.chunk_ids(session, job.id)
    stored = session.scalars(select(QueryRow.input).where(QueryRow.job_id == job.id).order_by(QueryRow.id)).all()
    x = np.random.default_rng(3).uniform(size=(300, 4))
    assert np.array_equal(np.asarray(stored), np.repeat(x, 2, axis=0))  # lists again, per query, in order


def test_a_failed_enqueue_of_a_later_group_fails_that_group_and_every_group_after_it(session, settings, monkeypatch):
    row, _ = batches.register_network(session, small_network(), "npz")
    monkeypatch.setattr(batches, "INSERT_ROWS", 40)

    class ThirdCallFails(Recording):
        def enqueue(self, chunk_ids, time_limits=None):
            if len(self.sent) == 2:
                raise ConnectionError("broker gone")
            super().enqueue(chunk_ids, time_limits)

    with pytest.raises(QueueUnavailableError):
        batches.submit_batch(session, ThirdCallFails(), _request(row.id, 100), created_by="test", chunk_size=20,
                             settings=settings)
    job_id = session.scalar(select(JobRow.id).order_by(JobRow.id.desc()))
    session.expire_all()
    statuses = session.scalars(select(ChunkRow.status).where(ChunkRow.job_id == job_id).order_by(ChunkRow.position)).all()
    # chunk 0 alone, then chunks 1-2 (40 queries), then 3-4 (failed to enqueue), 5-6, 7-8, 9 never stored
    assert statuses[:3] == ["queued"] * 3 and set(statuses[3:]) == {"failed"}
    assert batches.get_job_or_raise(session, job_id).status == "failed"


def _submission_peak(session, settings, network_id: int, n: int) -> int:
    request = _request(network_id, n)
    gc.collect()
    tracemalloc.start()
    try:
        batches.submit_batch(session, Recording(), request, created_by="test", chunk_size=500, settings=settings)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_submission_peak_memory_per_query_is_the_plan_not_the_rows(session, settings):
    row, _ = batches.register_network(session, small_network(), "npz")
    _submission_peak(session, settings, row.id, 200)  # warm: first-use allocations
    small = _submission_peak(session, settings, row.id, 1_000)
    large = _submission_peak(session, settings, row.id, 10_000)
    per_query = (large - small) / 18_000  # 2 eps per input
    # the plan's small dict per query (~0.4 KB); before, every query's row, its input as a list and (on
    # PostgreSQL) its JSON text were alive at once besides: ~1.7 KB a query here (SQLite), ~2.8 KB on PostgreSQL
    assert per_query < 800, (small, large, per_query)
