"""Chunk sizes: guided self-scheduling from the network's history; every query in exactly one chunk; each
chunk's task limited by its own queries' time limits."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from polycert import batches, chunking
from polycert.db import repositories as repo
from polycert.db.models import ChunkRow, JobRow, QueryRow
from polycert.db.session import session_factory
from polycert.errors import QueueUnavailableError
from tests.service.factories import interval_certify, small_network
from polycert.workers.execution import run_chunk


@given(total=st.integers(0, 5000), largest=st.integers(1, 1200), share=st.integers(1, 8))
def test_guided_sizes_split_the_batch_exactly_and_never_grow(total, largest, share):
    sizes = chunking.guided_sizes(total, largest, share=share)
    assert sum(sizes) == total and all(1 <= n <= largest for n in sizes)
    assert all(a >= b for a, b in zip(sizes, sizes[1:]))


@given(total=st.integers(64, 5000), largest=st.integers(8, 400))
def test_guided_sizes_end_in_small_chunks(total, largest):
    sizes = chunking.guided_sizes(total, largest)
    assert sizes[-1] <= max(1, -(-largest // 4))  # the tail is fine-grained, so workers finish together
    assert len(sizes) <= total // largest + 2 * np.log2(max(2, largest)) + 2  # and the head is large


def test_the_largest_chunk_holds_the_target_time_at_the_history_mean():
    assert chunking.largest_chunk(None, 0.25) == chunking.FIRST_CHUNK
    assert chunking.largest_chunk(0.005, 0.25) == 50
    assert chunking.largest_chunk(1e-9, 0.25) == chunking.LARGEST_CHUNK
    assert chunking.largest_chunk(30.0, 0.25) == 1


def _request(network_id, n=40):
    network = small_network()
    x = np.random.default_rng(2).uniform(size=(n, 4))
    return batches.BatchRequest(network_id=network_id, inputs=x.tolist(), labels=network.predict(x).tolist(),
                                eps=[0.1], methods="lp")


def _sizes(session, job_id):
    rows = session.execute(select(QueryRow.chunk_id, func.count()).where(QueryRow.job_id == job_id)
                           .group_by(QueryRow.chunk_id).order_by(QueryRow.chunk_id)).all()
    return [n for _, n in rows]


def test_a_network_without_history_gets_first_chunks_then_its_history_sizes_the_next_job(session):
    row, _ = batches.register_network(session, small_network(), "npz")
    job, chunks = batches.create_batch(session, _request(row.id), created_by="test")
    session.commit()
    assert _sizes(session, job.id) == chunking.guided_sizes(40, chunking.FIRST_CHUNK)
    assert repo.mean_query_seconds(session, row.id, ["lp"]) is None
    for chunk in chunks:
        run_chunk(session, chunk, certify=interval_certify)
    mean = repo.mean_query_seconds(session, row.id, ["lp"])
    assert mean is not None and mean > 0
    job2, _ = batches.create_batch(session, _request(row.id, 300), created_by="test", chunk_seconds=40 * mean)
    session.commit()
    assert _sizes(session, job2.id) == chunking.guided_sizes(300, chunking.largest_chunk(mean, 40 * mean))
    assert repo.mean_query_seconds(session, row.id, ["mip"]) is None  # per method


def test_a_fixed_chunk_size_is_kept(session):
    row, _ = batches.register_network(session, small_network(), "npz")
    job, _ = batches.create_batch(session, _request(row.id, 23), created_by="test", chunk_size=5)
    session.commit()
    assert _sizes(session, job.id) == [5, 5, 5, 5, 3]


def test_each_chunk_task_is_limited_by_its_own_queries_time_limits(session, settings):
    row, _ = batches.register_network(session, small_network(), "npz")
    sent = []

    class Recording:
        def enqueue(self, chunk_ids, time_limits=None):
            sent.append((list(chunk_ids), list(time_limits)))

    request = _request(row.id, 7).model_copy(update={"time_limit": 2.0})
    batches.submit_batch(session, Recording(), request, created_by="test", chunk_size=3, settings=settings)
    ids = [i for part, _ in sent for i in part]
    limits = [limit for _, part in sent for limit in part]
    assert len(ids) == 3
    slack = settings.task_time_slack
    assert [soft for soft, _ in limits] == [3 * 2.0 + slack, 3 * 2.0 + slack, 1 * 2.0 + slack]
    assert all(hard > soft for soft, hard in limits)


def test_the_first_chunk_is_queued_with_its_queries_committed_before_the_others_are_stored(session, engine, settings):
    row, _ = batches.register_network(session, small_network(), "npz")
    seen = []  # per enqueue call: the chunks sent, and the committed queries per chunk at that moment

    class Recording:
        def enqueue(self, chunk_ids, time_limits=None):
            with session_factory(engine)() as other:  # another connection sees only what is committed
                seen.append((list(chunk_ids), _sizes(other, job_ids(other)[-1])))

    def job_ids(other):
        return other.scalars(select(JobRow.id).order_by(JobRow.id)).all()

    job = batches.submit_batch(session, Recording(), _request(row.id, 10), created_by="test", chunk_size=4,
                               settings=settings)
    chunks = repo.chunk_ids(session, job.id)
    assert seen == [([chunks[0]], [4]), (chunks[1:], [4, 4, 2])]
    for chunk in chunks:  # and the job runs to its end as before
        run_chunk(session, chunk, certify=interval_certify)
    assert batches.get_job_or_raise(session, job.id).status == "done"


def test_a_job_whose_later_chunks_cannot_be_enqueued_fails_with_its_queued_chunks(session, settings):
    row, _ = batches.register_network(session, small_network(), "npz")

    class SecondCallFails:
        calls = 0

        def enqueue(self, chunk_ids, time_limits=None):
            SecondCallFails.calls += 1
            if SecondCallFails.calls == 2:
                raise ConnectionError("broker gone")

    with pytest.raises(QueueUnavailableError, match="broker gone"):
        batches.submit_batch(session, SecondCallFails(), _request(row.id, 10), created_by="test", chunk_size=4,
                             settings=settings)
    job_id = session.scalar(select(JobRow.id).order_by(JobRow.id.desc()))
    session.expire_all()
    job = batches.get_job_or_raise(session, job_id)
    assert job.status == "failed" and "broker gone" in job.error
    statuses = dict(session.execute(select(ChunkRow.position, ChunkRow.status).where(ChunkRow.job_id == job_id)).all())
    assert statuses == {0: "queued", 1: "failed", 2: "failed"}  # the first was sent: its worker may still run it


def test_a_job_whose_later_queries_cannot_be_stored_fails(session, settings, monkeypatch):
    row, _ = batches.register_network(session, small_network(), "npz")
    sent, original = [], repo.add_queries

    def add_queries(s, job_id, chunk_ids, queries):
        if sent:  # the first chunk went out: storing the rest fails (the database went away, say)
            raise OperationalError("INSERT", {}, ConnectionError("server closed the connection"))
        original(s, job_id, chunk_ids, queries)

    class Recording:
        def enqueue(self, chunk_ids, time_limits=None):
            sent.append(list(chunk_ids))

    monkeypatch.setattr(repo, "add_queries", add_queries)
    with pytest.raises(OperationalError):
        batches.submit_batch(session, Recording(), _request(row.id, 10), created_by="test", chunk_size=4,
                             settings=settings)
    job_id = session.scalar(select(JobRow.id).order_by(JobRow.id.desc()))
    job = batches.get_job_or_raise(session, job_id)
    assert len(sent) == 1 and job.status == "failed" and "could not store" in job.error
    assert _sizes(session, job_id) == [4]  # the first chunk's queries, committed before it was sent
