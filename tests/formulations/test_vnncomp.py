"""VNN-COMP answers (formulations/vnncomp.py) on the copied mnist_fc fixtures and on small made-up properties.

Every decided answer is cross-checked independently of the engine: a violation by re-evaluating its point
on the network; a "holds" by an attack and random samples that must find no counterexample.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polycert.formulations.attack import pgd_attack
from polycert.formulations.errors import InvalidInputError
from polycert.formulations.loaders import load_onnx
from polycert.formulations.network import Network
from polycert.formulations.bounds import symbolic_bounds
from polycert.formulations.relu_bab import optimised_bounds
from polycert.formulations.vnncomp import HOLDS, UNKNOWN, VIOLATED, _refine, _Run, property_input_set, vnncomp_answer
from polycert.formulations.vnnlib import check_counterexample, format_result, parse_result, read_vnnlib

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def mnist_net() -> Network:
    return load_onnx(FIXTURES / "mnist-net_256x2.onnx")


def robustness_text(lower, upper, label: int, n_out: int) -> str:
    """A VNN-LIB robustness property in the mnist_fc layout (box, then an or of Y_j >= Y_label)."""
    lines = [f"(declare-const X_{i} Real)" for i in range(len(lower))]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    for i, (lo, hi) in enumerate(zip(lower, upper)):
        lines += [f"(assert (>= X_{i} {float(lo)!r}))", f"(assert (<= X_{i} {float(hi)!r}))"]
    ors = " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(n_out) if j != label)
    return "\n".join(lines + [f"(assert (or {ors}))"]) + "\n"


def small_net(seed: int) -> Network:
    rng = np.random.default_rng(seed)
    sizes = (5, 12, 12, 3)
    weights = [rng.normal(size=(b, a)) / np.sqrt(a) for a, b in zip(sizes, sizes[1:])]
    return Network.from_arrays(weights, [rng.normal(size=b) * 0.1 for b in sizes[1:]], "relu")


def no_counterexample_found(net: Network, prop, seed: int = 1, samples: int = 2000) -> bool:
    iset = property_input_set(prop)
    label = int(net.predict(prop.center))
    pts = np.concatenate([iset.sample(samples, seed),
                          pgd_attack(net, iset.center, label, iset.eps, domain=iset.domain, steps=30, restarts=1 if samples < 1000 else 5,
                                     seed=seed).points])
    return not any(check_counterexample(prop, net.forward, x) for x in pts)


def test_violated_fixture_returns_a_counterexample_the_network_confirms(mnist_net):
    prop = read_vnnlib(FIXTURES / "vnnlib" / "prop_12_0.03.vnnlib.gz")
    ans = vnncomp_answer(mnist_net, prop, timeout=30)
    assert ans.word == VIOLATED
    assert check_counterexample(prop, mnist_net.forward, ans.x)
    assert np.array_equal(ans.y, mnist_net.forward(ans.x))


def test_robust_fixture_holds_from_a_proven_bound_with_no_counterexample_findable(mnist_net):
    prop = read_vnnlib(FIXTURES / "vnnlib" / "prop_0_0.03.vnnlib.gz")
    ans = vnncomp_answer(mnist_net, prop, timeout=30)
    assert ans.word == HOLDS and ans.lower > 0 and ans.x is None
    assert no_counterexample_found(mnist_net, prop, samples=200)


def test_a_wide_made_up_property_is_violated_before_any_solver_runs(mnist_net):
    base = read_vnnlib(FIXTURES / "vnnlib" / "prop_0_0.03.vnnlib.gz")  # label 7, robust at eps 0.03
    c = base.center
    label = int(mnist_net.predict(c))
    text = robustness_text(np.clip(c - 0.15, 0, 1), np.clip(c + 0.15, 0, 1), label, 10)
    prop = read_vnnlib(text)
    ans = vnncomp_answer(mnist_net, prop, timeout=30)
    assert ans.word == VIOLATED and ans.stage in ("centre", "attack")
    assert set(ans.times) <= {"centre", "symbolic", "attack", "total"}
    assert check_counterexample(prop, mnist_net.forward, ans.x)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 5000), eps=st.sampled_from([0.05, 0.2, 0.5]))
def test_small_networks_answers_agree_with_samples_and_attacks(seed, eps):
    net = small_net(seed)
    c = np.random.default_rng(seed).uniform(0, 1, 5)
    label = int(net.predict(c))
    prop = read_vnnlib(robustness_text(np.clip(c - eps, 0, 1), np.clip(c + eps, 0, 1), label, 3))
    ans = vnncomp_answer(net, prop, timeout=20)
    assert ans.word in (HOLDS, VIOLATED, UNKNOWN)
    if ans.word == VIOLATED:
        assert check_counterexample(prop, net.forward, ans.x)
    if ans.word == HOLDS:
        assert no_counterexample_found(net, prop, seed)
    assert ans.word != UNKNOWN  # such small MIPs are always decided within the budget


def test_result_file_of_a_violation_reads_back_as_a_checked_counterexample(mnist_net):
    prop = read_vnnlib(FIXTURES / "vnnlib" / "prop_12_0.03.vnnlib.gz")
    ans = vnncomp_answer(mnist_net, prop, timeout=30)
    word, x, y = parse_result(format_result("sat", ans.x, ans.y))
    assert word == "sat" and check_counterexample(prop, mnist_net.forward, x)
    assert np.array_equal(y, mnist_net.forward(x))


def test_sizes_that_do_not_match_the_network_and_bad_timeouts_are_refused(mnist_net):
    prop = read_vnnlib(robustness_text([0.0] * 5, [1.0] * 5, 0, 3))
    with pytest.raises(InvalidInputError, match="inputs"):
        vnncomp_answer(mnist_net, prop, timeout=5)
    with pytest.raises(InvalidInputError, match="timeout"):
        vnncomp_answer(small_net(0), prop, timeout=0)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 5000), eps=st.sampled_from([0.2, 0.5]))
def test_refined_bounds_contain_every_attained_pre_activation_and_never_widen(seed, eps):
    rng = np.random.default_rng(seed)
    sizes = (5, 12, 12, 12, 3)
    net = Network.from_arrays([rng.normal(size=(b, a)) / np.sqrt(a) for a, b in zip(sizes, sizes[1:])],
                              [rng.normal(size=b) * 0.1 for b in sizes[1:]], "relu")
    c = rng.uniform(0, 1, 5)
    label = int(net.predict(c))
    prop = read_vnnlib(robustness_text(np.clip(c - eps, 0, 1), np.clip(c + eps, 0, 1), label, 3))
    iset = property_input_set(prop)
    lo, hi = iset.box()
    alpha = optimised_bounds(net, lo, hi, symbolic_bounds(net, lo, hi))
    run = _Run(net, prop, label, tuple(k for k in range(3) if k != label), 60.0)
    refined = _refine(run, iset, alpha, 30.0, "scip")
    points = np.concatenate([iset.sample(500, seed)] + [
        pgd_attack(net, c, k, iset.eps, domain=iset.domain, steps=20, restarts=2, seed=seed).points for k in range(3)])
    for k, (a, r, z) in enumerate(zip(alpha, refined, net.pre_activations(points))):
        assert r.contains(z).all(), f"layer {k}: an attained pre-activation lies outside the refined bounds"
        assert (r.lower >= a.lower).all() and (r.upper <= a.upper).all()


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 5000), eps=st.sampled_from([0.05, 0.2]), activation=st.sampled_from(["gelu", "sigmoid",
                                                                                                 "tanh", "silu"]))
def test_smooth_networks_are_answered_by_the_smooth_branch_and_bound_and_agree_with_samples_and_attacks(
        seed, eps, activation):
    rng = np.random.default_rng(seed)
    sizes = (5, 12, 12, 3)
    weights = [rng.normal(size=(b, a)) / np.sqrt(a) for a, b in zip(sizes, sizes[1:])]
    net = Network.from_arrays(weights, [rng.normal(size=b) * 0.1 for b in sizes[1:]], activation)
    c = rng.uniform(0, 1, 5)
    label = int(net.predict(c))
    prop = read_vnnlib(robustness_text(np.clip(c - eps, 0, 1), np.clip(c + eps, 0, 1), label, 3))
    ans = vnncomp_answer(net, prop, timeout=10)
    if ans.word == VIOLATED:
        assert check_counterexample(prop, net.forward, ans.x)
    if ans.word == HOLDS:
        assert no_counterexample_found(net, prop, seed)
        assert ans.lower > 0


GENERAL_FORM = """
(declare-const X_0 Real)
(declare-const X_1 Real)
(declare-const Y_0 Real)
(declare-const Y_1 Real)
(assert (>= X_0 0.0))
(assert (<= X_0 1.0))
(assert (>= X_1 0.0))
(assert (<= X_1 1.0))
(assert (>= Y_0 {threshold}))
"""


@pytest.mark.parametrize("threshold, expected", [(0.9, VIOLATED), (5.0, UNKNOWN)])
def test_a_property_of_no_robustness_form_is_refuted_by_a_point_or_unknown_never_holds(threshold, expected):
    """Regression: such a property answered *holds* once its centre was no counterexample (Y_0 = X_0 reaches
    1 >= 0.9 at X_0 = 1, while the centre gives 0.5)."""
    net = Network.from_arrays([np.eye(2)], [np.zeros(2)], "relu", name="identity")
    prop = read_vnnlib(GENERAL_FORM.format(threshold=threshold), n_inputs=2, n_outputs=2)
    answer = vnncomp_answer(net, prop, timeout=5)
    assert answer.word == expected
    if expected == VIOLATED:
        assert check_counterexample(prop, net.forward, answer.x)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), radius=st.sampled_from([0.01, 0.05, 0.2, 0.6]))
def test_the_answer_carries_each_targets_bracket_and_the_reason_of_an_unknown(seed, radius):
    net = small_net(seed)
    centre = np.random.default_rng(seed + 1).uniform(0.2, 0.8, size=5)
    label = int(net.predict(centre))
    prop = read_vnnlib(robustness_text(centre - radius, centre + radius, label, 3), n_inputs=5, n_outputs=3)
    answer = vnncomp_answer(net, prop, timeout=10)
    assert [t.target for t in answer.targets] == [k for k in range(3) if k != label]
    for t in answer.targets:  # a sound bracket: no proven bound above a margin a point of the box attains
        assert t.lower <= t.upper + 1e-9
    assert answer.lower == min(t.lower for t in answer.targets) and answer.upper == min(t.upper for t in answer.targets)
    if answer.word == HOLDS:
        assert answer.lower > 0 and answer.reason is None
    elif answer.word == VIOLATED:
        assert answer.upper <= 0 and check_counterexample(prop, net.forward, answer.x)
    else:
        assert answer.reason is not None and answer.undecided
