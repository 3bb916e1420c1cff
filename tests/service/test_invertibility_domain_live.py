"""An invertibility job asks about pairs inside the network's input domain, or the narrower box it names
(issue 17, item 1: the input set is part of the question and of the answer), through a live server.

f(x) = relu(x) on R^2, the L-inf ball of radius 1 around 0. Pairs with f(x) = f(y) differ only where both
coordinates are <= 0, so the farthest pair inside a box [lo, hi]^2 is max(0, -lo) apart: 1 on [-1, 1]
(not invertible: (0, 0) and (-1, -1)), 0 on [0, 1] (invertible). Each answer must say which box it is about.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

from polycert.formulations.loaders import save_npz
from polycert.formulations.network import Network
from tests.live import live_server

pytestmark = pytest.mark.slow


def farthest_equal_pair(lo: float) -> float:
    """The closed form above."""
    return max(0.0, -lo)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inv-domain")
    net = Network.from_arrays([np.eye(2), np.eye(2)], [np.zeros(2), np.zeros(2)], ["relu", "identity"], name="relu-id")
    path = save_npz(net, tmp / "relu-id.npz")
    with live_server(tmp) as srv:
        with srv.client() as c:
            up = c.post("/networks/upload", files={"file": ("relu-id.npz", io.BytesIO(path.read_bytes()))},
                        data={"name": "relu-id", "activations": "relu,identity", "domain": "-1,1"})
            assert up.status_code == 201, up.text
        yield srv


def _answer(server, **fields) -> tuple[dict, dict]:
    with server.client() as c:
        response = c.post("/jobs", json={"kind": "injectivity", "network": "relu-id", "inputs": [[0.0, 0.0]],
                                         "radius": 1.0, **fields})
        assert response.status_code == 202, response.text
        job = server.wait_job(response.json()["id"], timeout=120)
        (cert,) = c.get(f"/jobs/{job['id']}/results").json()["data"]
    return job, cert


@pytest.mark.parametrize("domain, lo", [(None, -1.0), ([0.0, 1.0], 0.0), ([-0.5, 1.0], -0.5)])
def test_the_pairs_lie_in_the_networks_domain_or_the_narrower_one_the_job_names(server, domain, lo):
    job, cert = _answer(server, **({} if domain is None else {"domain": domain}))
    assert job["status"] == "done", job
    assert job["parameters"]["domain"] == {"lower": lo, "upper": 1.0}
    assert cert["input_set"]["domain"] == {"lower": lo, "upper": 1.0} and cert["input_set"]["eps"] == 1.0
    exact = farthest_equal_pair(lo)
    assert cert["lower"] - 1e-6 <= exact <= cert["upper"] + 1e-6, cert
    if exact > 0:
        assert cert["answer"] == "not invertible"
        x, y = (np.asarray(cert["extra"]["witness"][k]) for k in ("x", "y"))
        for p in (x, y):  # the witness pair is in the ball and in the box asked
            assert (p >= lo - 1e-9).all() and (p <= 1.0 + 1e-9).all()
        assert np.allclose(np.maximum(x, 0), np.maximum(y, 0), atol=1e-6)
    else:
        assert cert["answer"] == "invertible", cert


def test_a_domain_outside_the_networks_is_refused_with_a_message(server):
    with server.client() as c:
        response = c.post("/jobs", json={"kind": "injectivity", "network": "relu-id", "inputs": [[0.0, 0.0]],
                                         "radius": 1.0, "domain": [-2.0, 2.0]})
    assert response.status_code == 422
    assert "not inside the input domain" in response.json()["detail"] and "relu-id" in response.json()["detail"]
