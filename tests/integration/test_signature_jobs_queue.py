"""The signature job of the live-server test, once more on the production stack: a real ``polycert serve``
on PostgreSQL, its chunks through Redis to a Celery worker process; the same checks of what comes back."""

from __future__ import annotations

import pytest

from tests import signature_checks as checks
from tests.live import live_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_signature_job_through_redis_and_a_celery_worker_lands_in_postgresql_and_reads_back_by_digit(
        tmp_path, postgres_url, redis_url, workers):
    from tests.integration.conftest import service_env

    env = service_env(postgres_url, redis_url)
    env.pop("POLYCERT_CHUNK_SIZE")  # the signature planner's own sizes (per method cost)
    pool = workers(env)
    pool.start(concurrency=2)
    with live_server(tmp_path, **{k: v for k, v in env.items() if k.startswith("POLYCERT_")}) as server:
        with server.client() as client:
            created = client.post("/jobs", json=checks.JOB)
            assert created.status_code == 202, created.text
        job = server.wait_job(created.json()["id"], timeout=900)
        assert job["status"] == "done", pool.logs() + server.tail()
        assert job["progress"]["chunks"].get("done", 0) >= 2  # LP and MIP queries went in chunks of their own
        with server.client() as client:
            certs = checks.check_job(client, job["id"], n_images=10)
            checks.check_digit_maps(client, certs)
