"""Migrations and repositories on SQLite (the PostgreSQL run is in tests/integration)."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import inspect

from polycert.db import repositories as repo
from polycert.db.migrate import DatabaseNotMigratedError, ensure_migrated, head_revision
from polycert.db.session import make_engine
from tests.workers.test_execution import make_job
from tests.service.factories import interval_certify
from polycert.workers.execution import run_chunk


def test_an_unmigrated_database_is_refused_with_the_command_that_fixes_it(tmp_path):
    with pytest.raises(DatabaseNotMigratedError, match="polycert db upgrade"):
        ensure_migrated(make_engine(f"sqlite:///{tmp_path / 'empty.db'}"))


def test_upgrade_creates_every_table_at_the_head_revision(engine):
    ensure_migrated(engine)
    assert head_revision()
    tables = set(inspect(engine).get_table_names())
    assert {"networks", "jobs", "chunks", "queries", "certificates", "signatures", "attacks"} <= tables


def test_the_same_network_is_registered_once(session):
    from polycert.batches import register_network
    from tests.service.factories import small_network

    first, created = register_network(session, small_network(), "npz")
    again, created_again = register_network(session, small_network(), "npz")
    assert created and not created_again and first.id == again.id


def test_pixel_frequencies_are_the_per_digit_count_of_tight_pixels(session):
    job, chunks, network, x = make_job(session, n_inputs=6, eps=(0.3,), methods="lp", chunk_size=10)
    run_chunk(session, chunks[0], certify=interval_certify)
    labels = network.predict(x)
    digit = int(labels[0])
    expected = Counter(int(p) for i in range(len(x)) if labels[i] == digit for p in (x[i] - 0.3 <= 0).nonzero()[0])
    got = {p: n for kind, p, n in repo.pixel_frequencies(session, digit, job_id=job.id)}
    assert got == dict(expected)
    assert repo.count_certificates_for_digit(session, digit, job_id=job.id) == int((labels == digit).sum())


def test_results_are_paged_and_filtered(session):
    job, chunks, *_ = make_job(session)
    for chunk in chunks:
        run_chunk(session, chunk, certify=interval_certify)
    total, page = repo.list_results(session, job.id, repo.ResultFilter(method="mip"), offset=2, limit=3)
    assert total == 6 and len(page) == 3 and all(q.method == "mip" for q, _ in page)
    total_eps, rows = repo.list_results(session, job.id, repo.ResultFilter(eps=0.5), limit=100)
    assert total_eps == 6 and all(q.eps == 0.5 for q, _ in rows)


def test_networks_stored_before_migration_0003_get_the_unit_box_they_were_answered_on(tmp_path):
    import json

    from sqlalchemy import text

    from polycert.db.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0002")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO networks (digest, name, architecture, source_format, input_size, output_size,"
                          " weights) VALUES ('d', 'old', '1-1 identity', 'npz', 1, 1, x'00')"))
    upgrade(url, "head")
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT input_domain FROM networks WHERE name = 'old'")).scalar_one()
    assert json.loads(stored) == {"lower": 0.0, "upper": 1.0}
    assert {c["name"] for c in inspect(engine).get_columns("certificates")} >= {"input_set"}
