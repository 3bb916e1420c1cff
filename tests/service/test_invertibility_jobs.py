"""Invertibility queries through the API and the embedded worker (the real engine, on a 2-2-2 ReLU network
whose answers are known in closed form), prune / quantize endpoints and the command line."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from polycert.formulations.network import Network
from polycert.batches import register_network
from polycert.cli import app as cli
from polycert.dispatch import reset_dispatchers
from tests.service.factories import small_network
from polycert.workers.embedded import EmbeddedPool


def relu_identity() -> Network:
    """f(x) = relu(x) on R^2: injective exactly on balls inside the open positive orthant; on the L-inf ball of
    radius 1 around 0 the farthest pair with f(x) = f(y) is (0, 0), (-1, -1): p* = 1."""
    return Network.from_arrays([np.eye(2), np.eye(2)], [np.zeros(2), np.zeros(2)], ["relu", "identity"], name="relu-id-2")


@pytest.fixture
def pool(settings):
    pool = EmbeddedPool(settings.resolved_database_url)
    yield pool
    pool.shutdown()


@pytest.fixture
def network_id(session):
    row, _ = register_network(session, relu_identity(), "npz")
    session.commit()
    return row.id


def run_job(client, pool, body) -> tuple[dict, list[dict]]:
    response = client.post("/jobs", json=body)
    assert response.status_code == 202, response.text
    pool.wait()
    job = client.get(f"/jobs/{response.json()['id']}").json()
    results = client.get(f"/jobs/{job['id']}/results", params={"limit": 100}).json()["data"]
    return job, results


def test_an_injectivity_job_answers_each_centre_with_a_bracket_and_a_checked_witness(client, pool, network_id):
    job, results = run_job(client, pool, {"kind": "injectivity", "network_id": network_id,
                                          "inputs": [[0.0, 0.0], [2.0, 2.0]], "radius": 1.0})
    assert job["kind"] == "injectivity" and job["status"] == "done" and job["progress"]["done"] == 2
    folded, inside = sorted(results, key=lambda r: r["item"])
    net = relu_identity()

    assert (folded["verdict"], folded["answer"]) == ("falsified", "not invertible")
    assert folded["lower"] <= 1.0 + 1e-9 <= folded["upper"] + 1e-6 and folded["lower"] > 1.0 - 1e-6
    witness = folded["extra"]["witness"]
    x, y = np.asarray(witness["x"]), np.asarray(witness["y"])
    assert np.abs(x).max() <= 1.0 + 1e-9 and np.abs(y).max() <= 1.0 + 1e-9  # inside the ball
    assert np.abs(net.forward(x) - net.forward(y)).max() <= 1e-6  # same output, re-evaluated here
    assert np.isclose(witness["distance"], np.abs(x - y).max()) and witness["distance"] > 0.99

    assert (inside["verdict"], inside["answer"]) == ("verified", "invertible")
    assert inside["upper"] <= 1e-4 and inside["solver"]


def test_a_radius_job_finds_the_distance_to_the_fold_and_dependence_on_itself_holds(client, pool, network_id):
    _, results = run_job(client, pool, {"kind": "radius", "network_id": network_id, "inputs": [[2.0, 1.5]],
                                        "gap": 1e-3})
    (r,) = results
    assert r["verdict"] == "verified" and r["answer"] == "invertible"
    assert r["lower"] <= 1.5 <= r["upper"] and r["upper"] - r["lower"] <= 2e-3  # the fold at x2 = 0
    assert r["extra"]["evaluations"]

    _, results = run_job(client, pool, {"kind": "dependence", "network_id": network_id, "second_network_id": network_id,
                                        "inputs": [[0.0, 0.0]], "radius": 1.0})
    assert [(r["verdict"], r["answer"]) for r in results] == [("verified", "invertible")]


def test_an_l2_injectivity_job_gets_the_papers_p2_answer(client, pool, network_id):
    # relu(x) on the L2 unit disc: f(x) = f(y) for every pair in the closed negative quadrant, whose diameter is
    # sqrt(2) ((-1, 0) and (0, -1)); pairs with a shared positive coordinate are at most 1 apart
    _, results = run_job(client, pool, {"kind": "injectivity", "network_id": network_id, "inputs": [[0.0, 0.0]],
                                        "radius": 1.0, "norm": "l2", "solver": "scip"})
    (r,) = results
    assert (r["verdict"], r["answer"]) == ("falsified", "not invertible")
    assert r["lower"] <= np.sqrt(2) + 1e-9 <= r["upper"] + 1e-6 and r["upper"] - r["lower"] <= 1e-3
    x, y = np.asarray(r["extra"]["witness"]["x"]), np.asarray(r["extra"]["witness"]["y"])
    assert np.linalg.norm(x) <= 1.0 + 1e-9 and np.linalg.norm(y) <= 1.0 + 1e-9


@pytest.mark.parametrize("change, message", [
    ({"kind": "dependence"}, "needs a second network"),
    ({"radius": None}, "needs a radius"),
    ({"inputs": [[0.0, 0.0, 0.0]]}, "expects 2"),
    ({"norm": "l3"}, "norm"),
    ({"norm": "l2", "solver": "highs"}, "L2"),  # L2 needs a back-end that states quadratics
])
def test_bad_invertibility_jobs_get_a_4xx_naming_the_problem(client, network_id, change, message):
    body = {"kind": "injectivity", "network_id": network_id, "inputs": [[0.0, 0.0]], "radius": 1.0, **change}
    response = client.post("/jobs", json=body)
    assert 400 <= response.status_code < 500 and message in str(response.json()["detail"])


def test_prune_and_quantize_register_new_networks_once(client, session):
    row, _ = register_network(session, small_network(3, name="toy"), "npz")
    session.commit()
    pruned = client.post(f"/networks/{row.id}/prune", json={"percent": 50})
    assert pruned.status_code == 201, pruned.text
    body = pruned.json()
    assert body["created"] and body["id"] != row.id and body["name"] == "toy-pruned50"
    assert body["architecture"] == row.architecture
    from polycert.workers.networks import network_from_bytes
    from polycert.db import repositories as repo

    session.expire_all()
    weights = [layer.weight for layer in network_from_bytes(repo.get_network(session, body["id"]).weights).layers]
    original = [layer.weight for layer in small_network(3).layers]
    for w, w0 in zip(weights, original):
        assert (w == 0).sum() == w.size // 2 and np.all((w == 0) | (w == w0))  # half zeroed, the rest kept
        assert np.abs(w0[w == 0]).max() <= np.abs(w0[w != 0]).min()  # the smallest magnitudes went
    again = client.post(f"/networks/{row.id}/prune", json={"percent": 50}).json()
    assert again["id"] == body["id"] and not again["created"]
    assert client.post(f"/networks/{row.id}/prune", json={"percent": 150}).status_code == 422
    assert client.post("/networks/999/prune", json={"percent": 50}).status_code == 404
    quantized = client.post(f"/networks/{row.id}/quantize", json={"bits": 4})
    assert quantized.status_code == 201 and quantized.json()["digest"] not in (row.digest, body["digest"])
    client.headers.pop("Authorization")
    assert client.post(f"/networks/{row.id}/prune", json={"percent": 10}).status_code == 401


def test_the_command_line_prunes_and_runs_an_injectivity_query(session, settings):
    register_network(session, relu_identity(), "npz")
    register_network(session, small_network(3, name="toy"), "npz")
    session.commit()
    runner = CliRunner()
    try:
        result = runner.invoke(cli, ["invert", "injectivity", "--network", "relu-id-2", "--center", "0,0",
                                     "--center", "2,2", "--radius", "1"])
        assert result.exit_code == 0, result.output
        assert "not invertible" in result.output and "invertible" in result.output and "done" in result.output
        pruned = runner.invoke(cli, ["prune", "toy", "--percent", "50"])
        assert pruned.exit_code == 0 and "toy-pruned50" in pruned.output and "registered" in pruned.output, pruned.output
        # the identity's off-diagonal zeros are its smallest weights: pruning them changes nothing
        same = runner.invoke(cli, ["prune", "relu-id-2", "--percent", "50"])
        assert same.exit_code == 0 and "already registered" in same.output
        bad = runner.invoke(cli, ["invert", "dependence", "--network", "relu-id-2", "--center", "0,0", "--radius", "1"])
        assert bad.exit_code == 4 and "second network" in " ".join(bad.output.split())
    finally:
        reset_dispatchers()


def test_the_command_line_asks_an_l2_injectivity_query(session, settings):
    """The L2 job above through ``polycert invert --norm l2``: p* = sqrt 2, and an LP-only solver refused."""
    register_network(session, relu_identity(), "npz")
    session.commit()
    try:
        result = CliRunner().invoke(cli, ["invert", "injectivity", "--network", "relu-id-2", "--center", "0,0",
                                          "--radius", "1", "--norm", "l2", "--solver", "scip"])
        assert result.exit_code == 0, result.output
        assert "not invertible" in result.output and "1.414" in result.output, result.output
        refused = CliRunner().invoke(cli, ["invert", "injectivity", "--network", "relu-id-2", "--center", "0,0",
                                           "--radius", "1", "--norm", "l2", "--solver", "highs"])
        assert refused.exit_code == 4 and "L2" in refused.output, refused.output
    finally:
        reset_dispatchers()
