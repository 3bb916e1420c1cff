"""An L2 robustness job through a real ``polycert serve`` process: the MIP certificate is exact.

The uploaded network: h = relu(W1 x + b1) with W1 = [[1, .5], [-1, .5]], b1 = [-.75, .25]; logits
(C - h1 - h2, 0). At c = (.5, .5) both neurons sit at 0 and the largest h1 + h2 over the L2 ball of radius r is
r ||(1, .5)||_2 (one neuron active; both active give only r), so the minimum margin is C - r sqrt(1.25).
The polyhedral hull of the ball (box ∩ L1 ball of radius sqrt(2) r) reaches r (1 + .5 (sqrt 2 - 1)) > that:
only the exact (quadratic) ball closes the bracket.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

from tests.live import live_server

C, R = 0.34, 0.3
EXACT = C - R * np.sqrt(1.25)


def npz_bytes() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, W1=np.array([[1.0, 0.5], [-1.0, 0.5]]), b1=np.array([-0.75, 0.25]),
             W2=np.array([[-1.0, -1.0], [0.0, 0.0]]), b2=np.array([C, 0.0]), activations=np.array(["relu", "identity"]))
    return buffer.getvalue()


@pytest.mark.parametrize("radius, verdict", [(R, "verified"), (0.31, "falsified")])
def test_an_l2_job_gets_an_exact_mip_certificate(tmp_path, radius, verdict):
    exact = C - radius * np.sqrt(1.25)
    assert (exact > 0) == (verdict == "verified")
    with live_server(tmp_path) as server:
        with server.client() as c:
            up = c.post("/networks/upload", files={"file": ("l2key.npz", npz_bytes())},
                        data={"name": "l2key", "domain": "0,1"})
            assert up.status_code == 201, up.text
            job = c.post("/jobs", json=dict(network_id=up.json()["id"], inputs=[[0.5, 0.5]], labels=[0], eps=[radius],
                                            norm="l2", methods="mip", answer="bounds", solver="scip"))
            assert job.status_code == 202, job.text
        assert server.wait_job(job.json()["id"])["status"] == "done", server.tail()
        with server.client() as c:
            certs = c.get(f"/jobs/{job.json()['id']}/results").json()["data"]
    (cert,) = certs
    assert cert["method"] == "mip" and cert["input_set"]["norm"] == "l2"
    assert cert["verdict"] == verdict, cert
    assert cert["lower"] <= exact + 1e-9 <= cert["upper"] + 1e-9
    assert cert["upper"] - cert["lower"] <= 1e-3  # the bracket closes (tolerance 1e-4 plus the solver's slack)
    if verdict == "falsified":
        x = np.asarray(cert["counterexample"][0] if np.ndim(cert["counterexample"]) > 1 else cert["counterexample"])
        assert np.linalg.norm(x - 0.5) <= radius + 1e-12
