"""The HTTP API on SQLite with the embedded pool (a stand-in engine; the real one runs in tests/integration)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from polycert.api.app import create_app
from polycert.batches import register_network
from polycert.db.migrate import DatabaseNotMigratedError
from polycert.settings import Settings
from tests.service.factories import interval_certify, small_network
from polycert.workers.embedded import EmbeddedPool


@pytest.fixture
def pool(settings):
    pool = EmbeddedPool(settings.resolved_database_url, certify=interval_certify)
    yield pool
    pool.shutdown()


@pytest.fixture
def network_id(session):
    row, _ = register_network(session, small_network(), "npz", domain=(0.0, 1.0))  # the stand-in clips to [0, 1]
    session.commit()
    return row.id


def batch(network_id, n=4, eps=(0.01, 0.4), methods="both"):
    net = small_network()
    x = np.random.default_rng(2).uniform(size=(n, 4))
    return {"network_id": network_id, "inputs": x.tolist(), "labels": net.predict(x).tolist(), "eps": list(eps), "methods": methods}


def test_the_app_refuses_to_start_on_an_unmigrated_database(tmp_path):
    with pytest.raises(DatabaseNotMigratedError, match="polycert db upgrade"):
        create_app(Settings(database_url=f"sqlite:///{tmp_path / 'fresh.db'}"))


def test_write_endpoints_need_the_token(client, network_id):
    client.headers.pop("Authorization")
    assert client.post("/jobs", json=batch(network_id)).status_code == 401
    client.headers["Authorization"] = "Bearer wrong"
    assert client.post("/jobs", json=batch(network_id)).status_code == 401
    assert client.get("/networks").status_code == 200


@pytest.mark.parametrize("change, message", [
    ({"eps": [2.0]}, "eps 2 exceeds the linf extent 1 of the input domain [0, 1]"),
    ({"eps": [-0.1]}, "eps must be >= 0"),
    ({"eps": [float("nan")]}, "finite number"),  # refused by the request model, at body.eps
    ({"eps": [float("inf")]}, "finite number"),
    ({"domain": [-1, 1]}, "the job's domain [-1, 1] is not inside the input domain [0, 1]"),
    ({"labels": [0]}, "one label each"),
    ({"inputs": [[0.1, 0.2]] * 4}, "network 'toy-4-3-2' expects 4"),
    ({"labels": [7, 0, 0, 0]}, "labels [7] are outside 0..1"),
    ({"network_id": 999}, "no network with id 999"),
])
def test_bad_batches_get_a_4xx_naming_the_problem(client, network_id, change, message):
    # sent as text: httpx refuses to write NaN, which json.dumps writes as a user's JSON library may
    response = client.post("/jobs", content=json.dumps({**batch(network_id), **change}),
                           headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500
    assert message in str(response.json()["detail"])


def test_a_batch_is_answered_with_results_comparison_and_signatures(client, pool, network_id):
    job = client.post("/jobs", json=batch(network_id)).json()
    assert job["progress"]["total"] == 4 * 2 * 2
    pool.wait()
    status = client.get(f"/jobs/{job['id']}").json()
    assert status["status"] == "done" and status["progress"]["done"] == 16

    page = client.get(f"/jobs/{job['id']}/results", params={"method": "lp", "limit": 3, "signatures": True}).json()
    assert page["count"] == 8 and len(page["data"]) == 3
    assert all(r["method"] == "lp" and r["tight"] for r in page["data"])

    comparison = client.get(f"/jobs/{job['id']}/comparison").json()
    assert len(comparison["rows"]) == 8
    verdicts = client.get(f"/jobs/{job['id']}/results", params={"limit": 100}).json()["data"]
    lp_verified = sum(r["verdict"] == "verified" for r in verdicts if r["method"] == "lp")
    assert comparison["summary"]["total"]["lp_verified"] == lp_verified
    assert comparison["summary"]["total"]["conflicts"] == 0

    digit = verdicts[0]["label"]
    signatures = client.get("/signatures", params={"digit": digit, "job_id": job["id"]}).json()
    n = sum(r["label"] == digit for r in verdicts)
    assert signatures["pixels"]["certificates"] == n
    assert signatures["envelope"]["activity"][0]["kind"] == "relu_active"
    assert signatures["envelope"]["activity"][0]["count"] == n
    individual = client.get("/signatures/certificates", params={"digit": digit, "job_id": job["id"]}).json()
    assert individual["count"] == n and individual["data"][0]["tight"]


def test_a_cancelled_job_reports_cancelled_and_cannot_be_cancelled_twice(client, network_id, pool):
    job = client.post("/jobs", json=batch(network_id)).json()
    first = client.post(f"/jobs/{job['id']}/cancel")
    pool.wait()
    if first.status_code == 200:
        assert client.get(f"/jobs/{job['id']}").json()["status"] == "cancelled"
    else:  # the pool finished the job before the cancel arrived
        assert client.get(f"/jobs/{job['id']}").json()["status"] == "done"
    assert client.post(f"/jobs/{job['id']}/cancel").status_code == 409


def test_unknown_ids_are_404(client):
    assert client.get("/jobs/12345").status_code == 404
    assert client.get("/networks/12345").status_code == 404
    assert client.get("/jobs/12345/comparison").status_code == 404


def test_the_openapi_schema_lists_the_resources(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/jobs", "/jobs/{job_id}/results", "/jobs/{job_id}/comparison", "/signatures", "/networks/upload"} <= set(paths)


def test_an_uploaded_npz_is_registered_once_by_content(client, tmp_path):
    from polycert.formulations.loaders import save_npz

    network = small_network(7, name="uploaded")
    path = save_npz(network, tmp_path / "net.npz")
    files = {"file": ("net.npz", path.read_bytes(), "application/octet-stream")}
    first = client.post("/networks/upload", files=files, data={"activations": "relu,identity"})
    assert first.status_code == 201, first.text
    assert first.json()["digest"] == network.digest() and first.json()["created"]
    again = client.post("/networks/upload", files=files, data={"activations": "relu,identity"})
    assert again.json()["id"] == first.json()["id"] and not again.json()["created"]


@pytest.mark.parametrize("filename, content, message", [
    ("net.npz", b"not a zip file", "net.npz"),
    ("net.txt", b"whatever", "must end in one of"),
])
def test_a_bad_upload_gets_a_4xx_naming_the_problem(client, filename, content, message):
    response = client.post("/networks/upload", files={"file": (filename, content, "application/octet-stream")})
    assert response.status_code == 422 and message in response.json()["detail"]
