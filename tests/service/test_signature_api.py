"""Signature jobs and GET /signatures on the in-process app: bad requests get a 4xx naming the problem."""

from __future__ import annotations

import numpy as np
import pytest

from polycert.batches import register_network
from tests.service.factories import small_network
from polycert.workers.embedded import EmbeddedPool


@pytest.fixture
def pool(settings):
    pool = EmbeddedPool(settings.resolved_database_url)
    yield pool
    pool.shutdown()


@pytest.fixture
def network_id(session):
    row, _ = register_network(session, small_network(), "npz")
    session.commit()
    return row.id


def signature_job(network_id, **change):
    x = np.random.default_rng(2).uniform(size=(2, 4))
    return {"kind": "signature", "network_id": network_id, "inputs": x.tolist(),
            "labels": small_network().predict(x).tolist(), "eps": [0.1], "methods": "lp", **change}


@pytest.mark.parametrize("change, message", [
    ({"target_class": 5}, "target_class 5 is outside 0..1"),
    ({"eps": [2.0]}, "eps must lie in [0, 1]"),
    ({"labels": [0]}, "one label each"),
    ({"inputs": [[0.1, 0.2]] * 2}, "expects 4"),
    ({"methods": "sdp"}, "methods"),
    ({"norm": "l2"}, "norm"),  # signature balls are L-inf: an unknown field is refused, not ignored
])
def test_a_bad_signature_job_gets_a_4xx_naming_the_problem(client, network_id, change, message):
    response = client.post("/jobs", json=signature_job(network_id, **change))
    assert 400 <= response.status_code < 500
    assert message in str(response.json()["detail"])


def test_a_signature_job_maximises_the_target_class_and_the_lookup_by_digit_counts_it(client, pool, network_id):
    created = client.post("/jobs", json=signature_job(network_id, target_class=1))
    assert created.status_code == 202 and created.json()["kind"] == "signature"
    pool.wait()
    data = client.get(f"/jobs/{created.json()['id']}/results", params={"signatures": True}).json()["data"]
    assert len(data) == 2 and {c["extra"]["class"] for c in data} == {1}
    digit = data[0]["label"]
    body = client.get("/signatures", params={"digit": digit, "network": str(network_id)}).json()
    assert body["n"] == sum(c["label"] == digit for c in data) and body["image_side"] == 2  # 4 inputs: a 2 x 2 image
    assert client.get("/signatures", params={"digit": digit, "source": "robustness"}).json()["n"] == 0
    assert client.get("/signatures", params={"digit": 2, "network": str(network_id)}).status_code == 422
    assert client.get("/signatures", params={"digit": 0, "source": "vnncomp"}).status_code == 422
