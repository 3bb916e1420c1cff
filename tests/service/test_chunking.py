"""Chunk sizes: guided self-scheduling from the network's history; every query in exactly one chunk; each
chunk's task limited by its own queries' time limits."""

from __future__ import annotations

import numpy as np
from hypothesis import given, strategies as st
from sqlalchemy import func, select

from service import batches, chunking
from service.db import repositories as repo
from service.db.models import QueryRow
from tests.service.factories import interval_certify, small_network
from workers.execution import run_chunk


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
    (ids, limits), = sent
    assert len(ids) == 3
    slack = settings.task_time_slack
    assert [soft for soft, _ in limits] == [3 * 2.0 + slack, 3 * 2.0 + slack, 1 * 2.0 + slack]
    assert all(hard > soft for soft, hard in limits)
