"""The LP-versus-MIP comparison on the production stack: a real ``polycert serve`` process on PostgreSQL, a
Redis broker and a Celery worker process. Once the job is done its comparison is complete: every pair answered
by both methods, none pending, in the API and in ``polycert compare``."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from polycert.db.models import CertificateRow
from polycert.db.session import get_engine, session_factory

from tests.integration.conftest import service_env
from tests.live import live_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

IMAGES, EPS = 6, [0.01, 0.03]


def misclassified(start: int, stop: int) -> int:
    from polycert.datasets import load_mnist7
    from polycert.zoo import load_builtin

    x, y = load_mnist7("test", resize="area")
    return int((load_builtin("polycert-tiny").predict(x[start:stop]) != y[start:stop]).sum())


def test_a_done_both_job_on_postgres_and_celery_has_a_complete_comparison(postgres_url, redis_url, workers, tmp_path):
    env = service_env(postgres_url, redis_url)
    pool = workers(env)
    pool.start()
    with live_server(tmp_path, **{k: v for k, v in env.items() if k.startswith("POLYCERT_")}) as server:
        with server.client() as client:
            submitted = client.post("/jobs", json={
                "network": "polycert-tiny", "dataset": {"name": "mnist7-area", "start": 5, "stop": 5 + IMAGES},
                "eps": EPS, "methods": "both", "time_limit": 30})
            assert submitted.status_code == 202, submitted.text
            job_id = submitted.json()["id"]
            done = server.wait_job(job_id, timeout=240)
            assert done["status"] == "done", f"{done}\n{pool.logs()}"
            comparison = client.get(f"/jobs/{job_id}/comparison", params={"limit": 1000}).json()
        total = comparison["summary"]["total"]
        assert comparison["count"] == len(comparison["rows"]) == IMAGES * len(EPS)
        assert (total["pairs"], total["answered"], total["pending"]) == (IMAGES * len(EPS), IMAGES * len(EPS), 0)
        assert all(r["agreement"] != "pending" and r["lp_verdict"] and r["mip_verdict"] for r in comparison["rows"])
        assert total["misclassified"] == len(EPS) * misclassified(5, 5 + IMAGES) and total["conflicts"] == 0 and total["negative_gaps"] == 0
        assert sorted({r["source_index"] for r in comparison["rows"]}) == list(range(5, 5 + IMAGES))

        with session_factory(get_engine(postgres_url))() as session:  # the answers really live in PostgreSQL
            stored = session.scalar(select(func.count()).select_from(CertificateRow).where(CertificateRow.job_id == job_id))
        assert stored == 2 * IMAGES * len(EPS)

        printed = server.cli("compare", str(job_id))
        assert printed.returncode == 0, printed.stderr
        assert "still waiting" not in printed.stdout
        all_line = next(line.split() for line in printed.stdout.splitlines() if line.split()[:1] == ["all"])
        assert [int(c) for c in all_line[1:3]] == [total["pairs"], total["misclassified"]]
