"""A batch submitted over HTTP is answered by the real engine in a real worker and comes back over HTTP:
on PostgreSQL + Redis + a Celery worker process, and on SQLite + the embedded worker (same suite).
The fault tests (a worker SIGKILLed mid-batch, and the others) are in test_faults.py."""

from __future__ import annotations

import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from polycert.api.app import create_app
from polycert.db.models import CertificateRow
from polycert.db.session import get_engine, session_factory
from polycert.dispatch import reset_dispatchers
from polycert.settings import get_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NETWORK = "verianet"  # the study's 49-3-3-10 GELU network, shipped (no training needed)
DATASET = {"name": "mnist7-bilinear", "start": 0, "stop": 4}


@pytest.fixture(params=["postgres-celery", "sqlite-embedded"])
def stack(request, tmp_path, monkeypatch, workers):
    """(client, database url, worker pool or None) for one backend, configured through POLYCERT_* env."""
    from tests.integration.conftest import service_env, use_service_env

    if request.param == "postgres-celery":
        env = service_env(request.getfixturevalue("postgres_url"), request.getfixturevalue("redis_url"))
    else:
        from polycert.db.migrate import upgrade

        url = f"sqlite:///{tmp_path / 'polycert.db'}"
        upgrade(url)
        env = service_env(url, None)
    use_service_env(monkeypatch, env)
    get_settings.cache_clear()
    settings = get_settings()
    pool = None
    if not settings.embedded:
        pool = workers(env)
        pool.start()
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {settings.api_token}"
        yield client, settings.resolved_database_url, pool
    reset_dispatchers()
    get_settings.cache_clear()


def wait_for(client, job_id: int, timeout: float, pool=None) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] in ("done", "cancelled", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not done after {timeout}s: {job}\n{pool.logs() if pool else ''}")


def certificate_counts(database_url: str, job_id: int) -> tuple[int, int]:
    with session_factory(get_engine(database_url))() as session:
        rows = session.execute(select(func.count(), func.count(func.distinct(CertificateRow.query_id)))
                               .where(CertificateRow.job_id == job_id)).one()
    return int(rows[0]), int(rows[1])


def test_a_batch_over_http_comes_back_with_certificates_signatures_and_comparison(stack):
    from polycert.formulations.robustness import certify
    from polycert.zoo import load_builtin

    client, database_url, pool = stack
    registered = client.post("/networks", json={"builtin": NETWORK})
    assert registered.status_code == 201, registered.text
    body = {"network_id": registered.json()["id"], "dataset": DATASET, "eps": [0.005, 0.03], "methods": "both",
            "time_limit": 30}
    submitted = client.post("/jobs", json=body)
    assert submitted.status_code == 202, submitted.text
    job = wait_for(client, submitted.json()["id"], timeout=90, pool=pool)
    assert job["status"] == "done" and job["progress"]["done"] == 16 and job["progress"]["errors"] == 0
    assert certificate_counts(database_url, job["id"]) == (16, 16)

    results = client.get(f"/jobs/{job['id']}/results", params={"limit": 100, "signatures": True}).json()
    assert results["count"] == 16
    # the stored answers are the cascade's (stages recorded) and agree with the exact per-query MIP
    network = load_builtin(NETWORK)
    from polycert.formulations.cascade import STAGES
    from polycert.datasets import load_preprocessed

    assert all(r["stage"] in STAGES for r in results["data"])
    x, y = load_preprocessed("mnist7-bilinear")
    from polycert.formulations.domains import center_digest

    for r in results["data"]:  # every certificate states its set: the built-in's [0, 1], its eps, its image
        assert r["input_set"]["domain"] == {"lower": 0.0, "upper": 1.0}, r["input_set"]
        assert r["input_set"]["eps"] == r["eps"] and r["input_set"]["norm"] == "linf"
        assert r["input_set"]["center_sha256"] == center_digest(x[r["source_index"]])
    for mip in [r for r in results["data"] if r["method"] == "mip"][:2]:
        direct = certify(network, x[mip["source_index"]], int(y[mip["source_index"]]), mip["eps"], method="mip",
                         time_limit=30)
        assert "unknown" in (mip["verdict"], direct.verdict.value) or mip["verdict"] == direct.verdict.value
    for r in results["data"]:  # soundness of what was stored: verified means the lower bound is positive
        if r["verdict"] == "verified":
            assert r["lower"] > 0
        if r["verdict"] == "falsified":
            assert network.forward(np.asarray(r["counterexample"])).argmax() != r["label"] or r["counterexample_value"] <= 0

    comparison = client.get(f"/jobs/{job['id']}/comparison").json()
    assert len(comparison["rows"]) == 8
    total = comparison["summary"]["total"]
    assert total["answered"] == 8 and total["conflicts"] == 0
    assert total["lp_verified"] == sum(r["verdict"] == "verified" for r in results["data"] if r["method"] == "lp")
    assert total["lp_only_verified"] == 0  # the LP relaxation cannot verify what the exact MIP refutes

    digit = results["data"][0]["label"]
    signatures = client.get("/signatures", params={"digit": digit, "job_id": job["id"]}).json()
    assert signatures["pixels"]["certificates"] == sum(r["label"] == digit for r in results["data"])
    assert signatures["pixels"]["input_size"] == 49
    stored_tight = sum(len(r["tight"]) for r in results["data"] if r["label"] == digit)
    aggregated = sum(signatures["pixels"]["counts"]["input_lower"]) + sum(signatures["pixels"]["counts"]["input_upper"]) \
        + sum(a["count"] for a in signatures["envelope"]["activity"])
    assert aggregated <= stored_tight  # GROUP BY counts certificates, at most one per tag kind/position


def test_a_worker_refuses_to_start_on_an_unmigrated_database(tmp_path, redis_url, workers):
    from tests.integration.conftest import service_env

    pool = workers(service_env(f"sqlite:///{tmp_path / 'unmigrated.db'}", redis_url))
    proc = pool.start()
    assert proc.wait(timeout=60) != 0
    assert "polycert db upgrade" in pool.logs()
