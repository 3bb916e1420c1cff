"""The soundness campaign's oracles (bench/soundness.py) are right on cases whose answers are known, and the
campaign runs end to end: an oracle that misses what it should find would let engine bugs through unseen."""

from __future__ import annotations

import importlib.util
import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _campaign():
    spec = importlib.util.spec_from_file_location("bench_soundness", ROOT / "bench" / "soundness.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


S = _campaign()


def _brute_force_min(net, c, label: int, eps: float, norm: str, n: int = 801):
    """min over a fine grid of the 2-D set (every target), by plain evaluation."""
    axes = [np.linspace(max(0.0, c[i] - eps), min(1.0, c[i] + eps), n) for i in range(2)]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
    pts = pts[S.dist(pts, c, norm) <= eps]
    m = net.margins(pts, label)
    m[:, label] = np.inf
    return m.min(0)


@pytest.mark.parametrize("seed,norm", list(itertools.product(range(4), ["linf", "l1"])))
def test_the_enumeration_oracle_equals_brute_force_on_a_two_input_relu_net(seed, norm):
    rng = np.random.default_rng(seed)
    net = S.Net([rng.normal(size=(4, 2)), rng.normal(size=(3, 4))], [rng.normal(0, 0.3, 4), rng.normal(0, 0.3, 3)], "relu")
    c = rng.uniform(0.2, 0.8, 2)
    label = int(np.argmax(net.forward(c)))
    exact, _ = S.relu_exact_min(net, c, label, 0.15, norm)
    grid = _brute_force_min(net, c, label, 0.15, norm)
    # the grid is an upper bound of the exact minimum, close to it (spacing 3.75e-4, slopes of order 10)
    assert np.all(exact <= grid + 1e-9)
    assert np.allclose(exact, grid, atol=2e-2)
    assert exact[label] == np.inf


def test_the_attack_finds_a_known_counterexample_and_it_lies_in_the_set():
    # logit0 - logit1 = 1 - 4 x0 - 4 x1: positive at (0.1, 0.1), negative only near the corner (0.3, 0.3)
    net = S.Net([np.eye(2), np.array([[-2.0, -2.0], [2.0, 2.0]])], [np.zeros(2), np.array([0.5, -0.5])], "relu")
    c = np.array([[0.1, 0.1]])
    for norm, eps, expected in (("linf", 0.2, 1 - 4 * 0.6), ("l1", 0.4, 1 - 4 * 0.6), ("l2", 0.3, 1 - 4 * (0.2 + 0.3 * np.sqrt(2)))):
        best, where = S.attack(net, c, np.array([0]), np.array([eps]), norm, np.random.default_rng(0))
        assert best[0, 1] < 0 and abs(best[0, 1] - expected) < 1e-3, (norm, best[0, 1], expected)
        assert S.inside(where[0, 1], c[0], eps, norm)
        assert abs(net.margins(where[0, 1], 0)[1] - best[0, 1]) < 1e-12


def test_the_grid_bracket_holds_the_true_minimum_of_a_smooth_net():
    rng = np.random.default_rng(5)
    net = S.Net([rng.normal(size=(5, 1)), rng.normal(size=(2, 5))], [rng.normal(size=5), rng.normal(size=2)], "gelu")
    c, eps = np.array([0.5]), 0.4
    label = int(np.argmax(net.forward(c)))
    lower, upper = S.grid_bracket(net, c, label, eps, 200)
    xs = np.linspace(0.1, 0.9, 200_001)[:, None]
    true = (net.forward(xs)[:, label] - net.forward(xs)[:, 1 - label]).min()
    assert lower[1 - label] <= true <= upper[1 - label] + 1e-12


def test_the_gradients_match_finite_differences_for_every_activation():
    rng = np.random.default_rng(1)
    for activation in S.ACTIVATIONS:
        net = S.random_net(rng, activation, d=3)
        x = rng.uniform(size=(4, 3))
        m, g = net.margin_and_grad(x, 0, 1)
        h = 1e-6
        fd = np.stack([(net.margins(x + h * e, 0)[:, 1] - net.margins(x - h * e, 0)[:, 1]) / (2 * h)
                       for e in np.eye(3)], -1)
        assert np.allclose(g, fd, atol=1e-5), activation
        assert np.allclose(m, net.margins(x, 0)[:, 1])


def test_the_null_segment_oracle_finds_the_known_non_injectivity_of_a_rank_one_relu_net():
    # f(x) = relu(x0 + x1) - constant along (1, -1): pairs up to 2 * eps apart in L-inf on a box around c
    net = S.Net([np.array([[1.0, 1.0]]), np.array([[1.0]])], [np.array([0.0]), np.array([0.0])], "relu")
    c, eps = np.array([0.5, 0.5]), 0.1
    best, (x, y) = S.relu_null_segments(net, c, eps, "linf", [c])
    assert abs(best - 2 * eps) < 1e-6
    assert np.allclose(net.forward(x), net.forward(y)) and S.inside(x, c, eps, "linf") and S.inside(y, c, eps, "linf")


def test_the_campaign_flags_a_wrong_lower_bound(tmp_path):
    """A certificate whose lower bound is above an attainable margin is written as a disagreement case."""
    from polycert.formulations import Network
    from polycert.formulations.robustness import certify

    net = S.Net([np.eye(2), np.array([[-2.0, -2.0], [2.0, 2.0]])], [np.zeros(2), np.array([0.5, -0.5])], "relu")
    engine_net = Network.from_arrays(net.W, net.b, "relu")
    c = np.array([0.1, 0.1])
    cert = certify(engine_net, c, 0, 0.05, method="lp")
    forged = type(cert)(**{**cert.__dict__, "lower": cert.lower + 10.0, "targets": ()})
    camp = S.Campaign(0, tmp_path)
    best, where = S.attack(net, c[None], np.array([0]), np.array([0.05]), "linf", camp.rng)
    camp.check_certificate(net, engine_net, "lp", "linf", c, 0, 0.05, cert, best[0], where[0])
    assert not camp.disagreements
    camp.check_certificate(net, engine_net, "lp", "linf", c, 0, 0.05, forged, best[0], where[0])
    assert len(camp.disagreements) == 1
    case = json.loads(next(tmp_path.glob("case-*.json")).read_text())
    assert case["network"]["activation"] == "relu" and case["eps"] == 0.05 and "point" in case["evidence"]


def test_the_campaign_runs_end_to_end_in_a_short_budget(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "soundness.py"), "--minutes", "0.2", "--seed", "3",
                          "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "DISAGREEMENTS: 0" in out.stdout, out.stdout[-3000:]
    assert "checked queries" in out.stdout


def test_decision_invariance_is_checked_against_a_known_farthest_point(tmp_path):
    """logit0 - logit1 = 1 - 4 (x0 + x1): from (0.1, 0.1) in an L-inf ball of 0.2 clipped to [0, 1]^2 the class
    holds up to x0 + x1 < 0.25, so the farthest point keeping it is 0.15 away, at (0, 0.25) or (0.25, 0)."""
    from polycert.formulations import Network
    from polycert.formulations.invertibility import decision_invariance

    net = S.Net([np.eye(2), np.array([[-2.0, -2.0], [2.0, 2.0]])], [np.zeros(2), np.array([0.5, -0.5])], "relu")
    engine_net = Network.from_arrays(net.W, net.b, "relu")
    c = np.array([0.1, 0.1])
    cert = decision_invariance(engine_net, c, radius=0.2, norm="linf", domain=(0.0, 1.0), time_limit=10.0)
    assert abs(cert.upper - 0.15) < 1e-3 and abs(cert.lower - 0.15) < 1e-3
    camp = S.Campaign(0, tmp_path)
    camp.invariance(net, engine_net, "linf", c, 0.2)
    assert camp.checked[("relu", "invariance")] == 1 and not camp.disagreements
