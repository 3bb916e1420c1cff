"""Result pages (GET /jobs/{id}/results): every answered query once, in query order, at any offset and with
filters; and the page is chosen on ids, so reading a page does not sort the job's whole rows (bench/load.py:
on a 10,000-query job that sort spilled to disk and cost ~0.1 s a page)."""

from __future__ import annotations

import re

import numpy as np
from sqlalchemy import event, select

from polycert import batches
from polycert.db import repositories as repo
from polycert.db.models import CertificateRow, QueryRow
from polycert.workers.execution import run_chunk
from tests.service.factories import interval_certify, small_network


def _answered_job(session, n: int = 30):
    row, _ = batches.register_network(session, small_network(), "npz")
    x = np.random.default_rng(4).uniform(size=(n, 4))
    request = batches.BatchRequest(network_id=row.id, inputs=x.tolist(), labels=small_network().predict(x).tolist(),
                                   eps=[0.01, 0.2], methods="lp")
    job, chunks = batches.create_batch(session, request, created_by="test", chunk_size=7)
    session.commit()
    for chunk in chunks:
        run_chunk(session, chunk, certify=interval_certify)
    return job.id


def test_walking_the_pages_gives_every_answer_once_in_query_order_with_and_without_filters(session):
    job_id = _answered_job(session)
    everything = session.execute(select(QueryRow.id, CertificateRow.id, CertificateRow.verdict, QueryRow.eps)
                                 .join(CertificateRow, CertificateRow.query_id == QueryRow.id)
                                 .where(QueryRow.job_id == job_id).order_by(QueryRow.id)).all()
    assert len(everything) == 60
    for filters, keep in ((repo.ResultFilter(), lambda r: True),
                          (repo.ResultFilter(verdict="verified"), lambda r: r[2] == "verified"),
                          (repo.ResultFilter(eps=0.2), lambda r: r[3] == 0.2)):
        expected = [(q, c) for q, c, *_ in everything if keep((q, c, *_))]
        walked, offset = [], 0
        while True:
            total, rows = repo.list_results(session, job_id, filters, offset=offset, limit=7)
            assert total == len(expected)
            if not rows:
                break
            walked += [(q.id, c.id) for q, c in rows]
            offset += 7
        assert walked == expected


def test_a_page_reads_whole_rows_only_for_its_own_ids(session, engine):
    job_id = _answered_job(session)
    statements = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(" ".join(statement.split()))

    event.listen(engine, "before_cursor_execute", record)
    try:
        _, rows = repo.list_results(session, job_id, offset=20, limit=5)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert len(rows) == 5
    whole = [s for s in statements if "certificates.extra" in s]
    assert len(whole) == 1
    # the OFFSET / LIMIT sit in the subquery of ids, not on the statement that reads the JSON columns
    inner = re.search(r"\(SELECT queries.id AS qid, certificates.id AS cid FROM .*? OFFSET [^)]*\)", whole[0])
    assert inner is not None, whole[0]
    assert "OFFSET" not in whole[0].replace(inner.group(0), "")
