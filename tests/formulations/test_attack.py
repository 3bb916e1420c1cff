"""PGD attack: finds a constructed counterexample, never leaves the input set, re-evaluates every margin,
agrees with the sound margin bounds, is deterministic, and rejects bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polycert.formulations.activations import get_activation
from polycert.formulations.attack import margin_and_gradient, pgd_attack
from polycert.formulations.bounds import margin_bounds_batch
from polycert.formulations.errors import InvalidInputError
from polycert.formulations.input_sets import ball_boxes, contains_points
from polycert.formulations.network import Network

ACTIVATIONS = ("gelu", "relu", "sigmoid", "tanh", "silu")
NORMS = ("linf", "l1", "l2")


def threshold_network(act: str, d: int = 5) -> Network:
    """logit0 = 0, logit1 = f(x_0 + 1) - f(1.5): class 1 exactly when x_0 > 0.5 (f increasing on [1, 2]).

    A hidden layer of d units (unit i sees x_i + 1) so the attack must find the one coordinate that matters.
    """
    hidden = np.eye(d)
    out = np.zeros((2, d))
    out[1, 0] = 1.0
    f = get_activation(act)
    return Network.from_arrays([hidden, out], [np.ones(d), np.array([0.0, -float(f(np.float64(1.5)))])],
                               [act, "identity"])


def random_network(act: str, seed: int, sizes=(4, 6, 5, 3)) -> Network:
    rng = np.random.default_rng(seed)
    return Network.from_arrays([rng.normal(size=(m, n)) for n, m in zip(sizes, sizes[1:])],
                               [rng.normal(size=m) for m in sizes[1:]], act)


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("norm", NORMS)
def test_attack_finds_the_constructed_counterexample_and_it_checks_out(act, norm):
    net = threshold_network(act)
    center = np.full(5, 0.45)  # class 0; x_0 = 0.55 (inside every ball of radius 0.1 below) is class 1
    assert net.predict(center) == 0
    result = pgd_attack(net, center[None, :], [0], 0.1, norm=norm, steps=30, restarts=2)
    assert result.found[0]
    x = result.points[0]
    assert x[0] > 0.5 and net.predict(x) == 1
    assert contains_points(x[None], center[None], np.array([0.1]), norm, np.zeros(5), np.ones(5), tol=0.0)[0]
    logits = net.forward(x)
    assert result.margins[0] == logits[0] - logits[1] <= 0
    # The best possible margin is -(f(1.55) - f(1.5)) at x_0 = 0.55; PGD gets there.
    f = get_activation(act)
    assert result.margins[0] == pytest.approx(-(float(f(np.float64(1.55))) - float(f(np.float64(1.5)))), abs=1e-6)


def test_a_point_that_stays_in_its_class_is_not_reported_found():
    net = threshold_network("gelu")
    center = np.full(5, 0.3)  # x_0 <= 0.4 in the ball: always class 0
    result = pgd_attack(net, center[None, :], [0], 0.1, steps=20, restarts=2)
    assert not result.found[0] and result.margins[0] > 0


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(ACTIVATIONS), st.sampled_from(NORMS), st.integers(0, 10_000), st.floats(0.0, 0.7),
       st.integers(0, 3))
def test_points_are_inside_and_margins_are_re_evaluated_and_above_the_sound_bound(act, norm, seed, eps, odi):
    net = random_network(act, seed)
    rng = np.random.default_rng(seed)
    centers = rng.uniform(-0.1, 1.0, size=(4, 4))  # some centres slightly outside the domain
    eps = eps + {"linf": 0.1, "l2": 0.2, "l1": 0.4}[norm]  # every ball must still meet [0, 1]^4
    labels = net.predict(np.clip(centers, 0, 1))
    result = pgd_attack(net, centers, labels, eps, norm=norm, steps=10, restarts=2, seed=seed, odi_steps=odi)
    e = np.full(4, eps)
    assert contains_points(result.points, centers, e, norm, np.zeros(4), np.ones(4), tol=0.0).all()
    logits = net.forward(result.points)
    rows = np.arange(4)
    margins = logits[rows, labels][:, None] - logits
    margins[rows, labels] = np.inf
    np.testing.assert_array_equal(result.margins, margins.min(axis=1))
    np.testing.assert_array_equal(result.found, result.margins <= 0)
    np.testing.assert_array_equal(result.margins, result.per_target_margins.min(axis=1))
    assert np.isinf(result.per_target_margins[rows, labels]).all()
    # Cross-check with the sound bounds: no attack point beats a lower bound.
    lo, hi = ball_boxes(centers, e, norm, np.zeros(4), np.ones(4))
    lower, _ = margin_bounds_batch(net, lo, hi, labels, ball=(centers, e, norm))
    attacked = np.isfinite(result.per_target_margins)
    assert (lower[attacked] <= result.per_target_margins[attacked]).all()


def test_same_seed_same_answer_and_targets_restrict_the_attack():
    net = random_network("tanh", 1, sizes=(4, 6, 5, 4))
    centers = np.random.default_rng(2).uniform(size=(6, 4))
    labels = net.predict(centers)
    for odi in (0, 5):
        a = pgd_attack(net, centers, labels, 0.2, seed=5, steps=15, odi_steps=odi)
        b = pgd_attack(net, centers, labels, 0.2, seed=5, steps=15, odi_steps=odi)
        np.testing.assert_array_equal(a.points, b.points)
        np.testing.assert_array_equal(a.per_target_margins, b.per_target_margins)
    only = pgd_attack(net, centers, labels, 0.2, seed=5, steps=15, targets=[3])
    other = np.arange(4) != 3
    assert np.isinf(only.per_target_margins[:, other]).all()
    assert (np.isfinite(only.per_target_margins[:, 3]) == (labels != 3)).all()


def test_zero_radius_returns_the_centre_and_its_margin():
    net = random_network("silu", 4)
    centers = np.random.default_rng(0).uniform(size=(3, 4))
    labels = np.array([0, 1, 2])
    result = pgd_attack(net, centers, labels, 0.0)
    np.testing.assert_array_equal(result.points, centers)
    logits = net.forward(centers)
    margins = logits[np.arange(3), labels][:, None] - logits
    margins[np.arange(3), labels] = np.inf
    np.testing.assert_array_equal(result.margins, margins.min(axis=1))
    np.testing.assert_array_equal(result.found, margins.min(axis=1) <= 0)


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_analytic_gradient_matches_finite_differences(act):
    net = random_network(act, 9)
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(5, 4))
    spec = np.eye(3)[[0, 1, 2, 0, 1]] - np.eye(3)[[1, 2, 0, 2, 0]]
    _, g = margin_and_gradient(net, x, spec)
    h = 1e-6
    for i in range(4):
        step = np.zeros(4)
        step[i] = h
        up, _ = margin_and_gradient(net, x + step, spec)
        down, _ = margin_and_gradient(net, x - step, spec)
        np.testing.assert_allclose(g[:, i], (up - down) / (2 * h), rtol=1e-5, atol=1e-6)


def test_bad_inputs_raise_invalid_input_error():
    net = random_network("gelu", 0)
    c = np.full((2, 4), 0.5)
    with pytest.raises(InvalidInputError, match="outside 0..2"):
        pgd_attack(net, c, [0, 3], 0.1)
    with pytest.raises(InvalidInputError, match="eps must be >= 0"):
        pgd_attack(net, c, [0, 1], -0.1)
    with pytest.raises(InvalidInputError, match="one value per input"):
        pgd_attack(net, c, [0, 1], [0.1, 0.1, 0.1])
    with pytest.raises(InvalidInputError, match="unknown norm"):
        pgd_attack(net, c, [0, 1], 0.1, norm="l7")
    with pytest.raises(InvalidInputError, match="steps"):
        pgd_attack(net, c, [0, 1], 0.1, steps=-1)
    with pytest.raises(InvalidInputError, match="odi_steps"):
        pgd_attack(net, c, [0, 1], 0.1, odi_steps=-2)
    with pytest.raises(InvalidInputError, match="step_size"):
        pgd_attack(net, c, [0, 1], 0.1, step_size=0.0)
    with pytest.raises(InvalidInputError, match="target"):
        pgd_attack(net, c, [0, 1], 0.1, targets=[5])
    with pytest.raises(InvalidInputError, match="NaN"):
        pgd_attack(net, np.array([[0.5, 0.5, np.nan, 0.5]]), [0], 0.1)
    with pytest.raises(InvalidInputError, match="expects 4"):
        pgd_attack(net, np.zeros((1, 3)), [0], 0.1)


@given(seed=st.integers(0, 2**16), eps=st.floats(0.01, 0.5))
@settings(max_examples=25, deadline=None)
def test_an_attack_past_its_deadline_still_answers_points_of_the_set_with_their_true_margins(seed, eps):
    import time

    net = random_network("gelu", seed)
    rng = np.random.default_rng(seed)
    xs, labels = rng.uniform(0, 1, (3, 4)), rng.integers(0, 3, 3)
    late = pgd_attack(net, xs, labels, eps, steps=50, restarts=3, seed=seed, deadline=time.monotonic() - 1.0)
    full = pgd_attack(net, xs, labels, eps, steps=50, restarts=3, seed=seed)
    lo, hi = ball_boxes(xs, np.full(3, eps), "linf", np.zeros(4), np.ones(4))
    assert contains_points(late.points, xs, np.full(3, eps), "linf", np.zeros(4), np.ones(4), tol=0.0).all()
    logits = net.forward(late.points)
    true = np.array([min(logits[i, labels[i]] - logits[i, k] for k in range(3) if k != labels[i]) for i in range(3)])
    np.testing.assert_allclose(late.margins, true, atol=1e-12)
    assert (full.margins <= late.margins + 1e-12).all()  # the search only improves on its starts
    assert (lo <= late.points).all() and (late.points <= hi).all()
