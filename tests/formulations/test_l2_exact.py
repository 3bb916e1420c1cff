"""L2 robustness answered exactly: the L2 ball as a quadratic row in the MIP (SCIP, Gurobi).

Closed form: for a linear map the margin is w.x + b and its minimum over a ball inside the domain is
w.c + b - eps ||w||_2. Property: on random tiny ReLU networks the exact L2 minimum lies between the
polyhedral relaxation's bound (HiGHS, which cannot state the ball) and the best attack, and every point
it reports lies in the ball.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from polycert.formulations import Network
from polycert.formulations.attack import pgd_attack
from polycert.formulations.backends import available_solvers
from polycert.formulations.input_sets import InputSet
from polycert.formulations.robustness import minimum_margin
from tests.formulations.helpers import random_network

QUADRATIC_SOLVERS = [s for s in ("scip", "gurobi") if available_solvers().get(s)]
TOL = 1e-4


@pytest.mark.parametrize("solver", QUADRATIC_SOLVERS)
@pytest.mark.parametrize("seed", range(3))
def test_linear_map_margin_is_the_closed_form(solver, seed):
    rng = np.random.default_rng(seed)
    d = 4
    weight, bias = rng.normal(size=(3, d)), rng.normal(size=3)
    net = Network.from_arrays([weight], [bias], "relu")
    c = np.full(d, 0.5)
    label, target = int(net.predict(c)), (int(net.predict(c)) + 1) % 3
    w = weight[label] - weight[target]
    eps = 0.2  # the ball stays inside [0, 1]^4
    exact = w @ c + bias[label] - bias[target] - eps * np.linalg.norm(w)
    lower, upper, point = minimum_margin(net, c, label, target, eps, norm="l2", solver=solver, tolerance=TOL)
    assert lower <= exact + 1e-9 <= upper + 2e-9
    assert upper - lower <= TOL
    assert np.linalg.norm(point - c) <= eps + 1e-12


@pytest.mark.parametrize("solver", QUADRATIC_SOLVERS)
def test_one_layer_relu_margin_closed_form(solver):
    # f(x) = (relu(x1 + x2 - 1), 0); margin of class 1 over 0 at c = (0.5, 0.5) is -relu(x1 + x2 - 1), whose
    # minimum over the ball of radius eps is -(sqrt(2) eps) (the ball inside the domain)
    net = Network.from_arrays([np.array([[1.0, 1.0], [0.0, 0.0]]), np.eye(2)], [np.array([-1.0, 0.0]), np.zeros(2)],
                              "relu")
    c, eps = np.array([0.5, 0.5]), 0.3
    lower, upper, _ = minimum_margin(net, c, 1, 0, eps, norm="l2", solver=solver, tolerance=TOL)
    assert lower <= -np.sqrt(2) * eps + 1e-9 <= upper + 1e-9
    assert upper - lower <= TOL


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), eps=st.sampled_from([0.1, 0.25, 0.4]))
def test_exact_l2_minimum_between_relaxation_and_attack(seed, eps):
    rng = np.random.default_rng(seed)
    net = random_network(rng, (3, 5, 5, 3), "relu")
    x = rng.uniform(0.3, 0.7, size=3)
    label = int(net.predict(x))
    target = (label + 1) % 3
    lower, upper, point = minimum_margin(net, x, label, target, eps, norm="l2", solver="scip", tolerance=TOL)
    assert upper - lower <= TOL  # the bracket closes, as for L-inf
    assert InputSet(x, eps, norm="l2", domain=(0.0, 1.0)).contains(point, tol=0.0)
    relaxed, _, _ = minimum_margin(net, x, label, target, eps, norm="l2", solver="highs", tolerance=TOL)
    assert relaxed <= upper + 1e-9  # the polyhedral bound is sound, and never above the exact minimum
    attack = pgd_attack(net, x[None, :], np.array([label]), eps, norm="l2", steps=30, restarts=2, targets=[target])
    assert lower <= float(attack.per_target_margins[0, target]) + 1e-9


# -- L2 invertibility (the paper's p = 2), closed forms on a linear map --------------------------------------

from polycert.formulations.invertibility import injectivity, preimage  # noqa: E402


@pytest.mark.parametrize("solver", QUADRATIC_SOLVERS)
def test_l2_preimage_and_injectivity_of_a_linear_map_with_a_kernel(solver):
    # f(x) = (x1 - x2, x3): kernel (1, 1, 0)/sqrt(2); the ball of radius r around c lies inside [0, 1]^3, so the
    # farthest other preimage of f(c) is at L2 distance r and the widest colliding pair at 2r
    net = Network.from_arrays([np.array([[1.0, -1.0, 0.0], [0.0, 0.0, 1.0]])], [np.zeros(2)], "relu")
    c, r = np.full(3, 0.5), 0.3
    pre = preimage(net, c, r, norm="l2", domain=(0.0, 1.0), solver=solver)
    assert pre.verdict.value == "falsified" and pre.norm == "l2"
    assert pre.lower <= r + 1e-9 <= pre.upper + 1e-9 and pre.upper - pre.lower <= 1e-4
    inj = injectivity(net, c, r, norm="l2", domain=(0.0, 1.0), solver=solver)
    assert inj.verdict.value == "falsified"
    assert inj.lower <= 2 * r + 1e-9 <= inj.upper + 1e-9 and inj.upper - inj.lower <= 1e-4


@pytest.mark.parametrize("solver", QUADRATIC_SOLVERS)
def test_l2_injectivity_of_an_injective_map_is_verified(solver):
    net = Network.from_arrays([np.array([[1.0, -1.0], [0.5, 1.0]])], [np.zeros(2)], "relu")
    cert = injectivity(net, np.array([0.5, 0.5]), 0.3, norm="l2", domain=(0.0, 1.0), solver=solver)
    assert cert.verdict.value == "verified" and cert.upper <= 1e-4


def test_the_batched_cascade_closes_l2_brackets_with_a_quadratic_mip_solver():
    from polycert.formulations.cascade import CascadeSettings, certify_batch

    rng = np.random.default_rng(3)
    net = random_network(rng, (3, 8, 8, 3), "relu")
    xs = rng.uniform(0.3, 0.7, size=(2, 3))
    labels = np.array([int(net.predict(x)) for x in xs])
    certs = certify_batch(net, xs, labels, 0.3, norm="l2", settings=CascadeSettings(answer="bounds", mip_solver="scip"))
    for x, label, cert in zip(xs, labels, certs):
        worst = min(cert.targets, key=lambda tb: tb.upper)
        assert worst.upper - worst.lower <= TOL + 1e-5  # exact, as for L-inf
        lower, upper, _ = minimum_margin(net, x, int(label), worst.target, 0.3, norm="l2", solver="scip", tolerance=TOL)
        assert worst.lower <= upper + 1e-9 and lower <= worst.upper + 1e-9
        if cert.counterexample is not None:
            assert InputSet(x, 0.3, norm="l2", domain=(0.0, 1.0)).contains(cert.counterexample, tol=0.0)
