"""Soundness cross-checks of the robustness query: attacks, exact MIP, solvers and enumeration agree."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from polycert.formulations import InvalidInputError, Network, SolverNotAvailableError, Verdict
from polycert.formulations.backends import available_solvers
from polycert.formulations.robustness import certify, margins, minimum_margin
from tests.formulations.helpers import random_network, relu_enumeration_min_margin, relu_margin_instance


def sampled_min_margin(network: Network, x: np.ndarray, label: int, eps: float, rng, n: int = 4000) -> float:
    lo, hi = np.clip(x - eps, 0, 1), np.clip(x + eps, 0, 1)
    pts = lo + rng.uniform(size=(n, x.size)) * (hi - lo)
    corners = np.where(rng.uniform(size=(n, x.size)) < 0.5, lo, hi)
    m = margins(network, np.vstack([pts, corners]), label)
    m[:, label] = np.inf
    return float(m.min())


@pytest.mark.parametrize("activation", ["gelu", "relu", "sigmoid", "tanh", "silu"])
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), eps=st.sampled_from([0.02, 0.05, 0.1, 0.2]))
def test_no_verified_answer_is_contradicted_by_sampling_and_lp_below_mip(activation, seed, eps):
    rng = np.random.default_rng(seed)
    net = random_network(rng, (4, 5, 4, 3), activation)
    x = rng.uniform(0.2, 0.8, size=4)
    label = int(net.predict(x))
    lp = certify(net, x, label, eps, method="lp")
    mip = certify(net, x, label, eps, method="mip")
    sampled = sampled_min_margin(net, x, label, eps, rng)
    for cert in (lp, mip):
        assert cert.lower <= sampled + 1e-9
        assert cert.lower <= cert.upper + 1e-9
        if cert.verdict == Verdict.VERIFIED:
            assert sampled > 0
        if cert.verdict == Verdict.FALSIFIED:
            assert cert.counterexample is not None
            assert np.all(cert.counterexample >= np.clip(x - eps, 0, 1) - 1e-12)
            assert np.all(cert.counterexample <= np.clip(x + eps, 0, 1) + 1e-12)
            assert margins(net, cert.counterexample, label).min() <= 0
    # the exact answer is decided, and never looser than the LP
    assert mip.verdict != Verdict.UNKNOWN
    assert lp.lower <= mip.upper + 1e-9
    if lp.verdict == Verdict.VERIFIED:
        assert mip.verdict == Verdict.VERIFIED
    if mip.verdict == Verdict.FALSIFIED:
        assert lp.verdict != Verdict.VERIFIED


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000))
def test_relu_mip_equals_activation_pattern_enumeration(seed):
    eps = 0.2
    net, x, label, target, lo, hi = relu_margin_instance(np.random.default_rng(seed), (3, 4, 3, 3), eps)
    lower, upper, point = minimum_margin(net, x, label, target, eps, tolerance=1e-6)
    exact = relu_enumeration_min_margin(net, lo, hi, label, target)
    assert lower <= exact + 1e-6
    assert abs(upper - exact) <= 1e-5 * (1 + abs(exact))


@pytest.mark.parametrize("activation", ["gelu", "relu"])
def test_scip_and_ortools_agree_on_the_exact_minimum_margin(activation):
    solvers = available_solvers()
    if not solvers.get("ortools-scip"):
        pytest.skip("OR-Tools' SCIP is not usable here")
    rng = np.random.default_rng(7)
    net = random_network(rng, (4, 5, 4, 3), activation)
    x = rng.uniform(0.3, 0.7, size=4)
    label = int(net.predict(x))
    results = [minimum_margin(net, x, label, (label + 1) % 3, 0.15, solver=s, tolerance=1e-5)
               for s in ("scip", "ortools-scip")]
    (l1, u1, _), (l2, u2, _) = results
    assert max(l1, l2) <= min(u1, u2) + 1e-6
    assert abs(u1 - u2) <= 1e-4 * (1 + abs(u1))


def test_misclassified_input_is_falsified_by_itself():
    rng = np.random.default_rng(3)
    net = random_network(rng, (4, 5, 3), "gelu")
    x = rng.uniform(0.2, 0.8, size=4)
    wrong = (int(net.predict(x)) + 1) % 3
    cert = certify(net, x, wrong, 0.0, method="lp")
    assert cert.verdict == Verdict.FALSIFIED
    np.testing.assert_array_equal(cert.counterexample, x)


def test_zero_radius_on_correct_input_is_verified():
    rng = np.random.default_rng(4)
    net = random_network(rng, (4, 5, 3), "gelu")
    x = rng.uniform(0.2, 0.8, size=4)
    cert = certify(net, x, int(net.predict(x)), 0.0, method="mip")
    assert cert.verdict == Verdict.VERIFIED
    assert cert.lower > 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"x": np.array([np.nan, 0.5, 0.5, 0.5])}, "NaN"),
        ({"x": np.zeros(5)}, "expects 4"),
        ({"eps": -0.1}, "eps"),
        ({"label": 7}, "out of range"),
        ({"method": "magic"}, "method"),
        ({"solver": "no-such-solver"}, "no-such-solver"),
    ],
)
def test_bad_queries_raise_typed_errors_naming_the_problem(kwargs, message):
    rng = np.random.default_rng(5)
    net = random_network(rng, (4, 5, 3), "gelu")
    args = {"x": np.full(4, 0.5), "label": 0, "eps": 0.01, "method": "mip"}
    args.update(kwargs)
    error = SolverNotAvailableError if "solver" in kwargs else InvalidInputError
    with pytest.raises(error, match=message):
        certify(net, args.pop("x"), args.pop("label"), args.pop("eps"), **args)
