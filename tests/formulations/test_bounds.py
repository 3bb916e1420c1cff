"""Bounds: sound on thousands of sampled points and on attack points, symbolic within IBP, batched ==
single, margins back-substituted soundly, GELU's interior minimum, balls, and rejected bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polycert.formulations.activations import GELU_MIN
from polycert.formulations.attack import pgd_attack
from polycert.formulations.bounds import (
    LayerBounds,
    interval_bounds,
    interval_bounds_batch,
    margin_bounds,
    margin_bounds_batch,
    symbolic_bounds,
    symbolic_bounds_batch,
)
from polycert.formulations.errors import InvalidInputError, UnsoundAnswerError
from polycert.formulations.input_sets import InputSet
from polycert.formulations.network import Network

ACTIVATIONS = ("gelu", "relu", "sigmoid", "tanh", "silu")


def random_network(act: str, seed: int, sizes=(4, 6, 5, 3), scale: float = 1.0) -> Network:
    rng = np.random.default_rng(seed)
    weights = [scale * rng.normal(size=(m, n)) for n, m in zip(sizes, sizes[1:])]
    biases = [scale * rng.normal(size=m) for m in sizes[1:]]
    return Network.from_arrays(weights, biases, act)


def box_points(lo: np.ndarray, hi: np.ndarray, n: int, rng) -> np.ndarray:
    """Uniform samples, every vertex of the box (d <= 6) and the centre."""
    d = lo.shape[0]
    vertices = np.array(list(itertools.product((0.0, 1.0), repeat=d)))
    t = np.concatenate([rng.uniform(size=(n, d)), vertices, np.full((1, d), 0.5)])
    return lo + t * (hi - lo)


def margins_at(network: Network, x: np.ndarray, label: int) -> np.ndarray:
    out = network.forward(x)
    return out[:, [label]] - out


def assert_contains(bounds, zs):
    for k, (b, z) in enumerate(zip(bounds, zs)):
        assert (b.lower <= z).all() and (z <= b.upper).all(), f"layer {k} bounds miss a sampled point"


cases = st.tuples(st.sampled_from(ACTIVATIONS), st.integers(0, 10_000), st.floats(0.0, 0.6))


@settings(max_examples=60, deadline=None)
@given(cases)
def test_interval_and_symbolic_bounds_contain_every_sampled_pre_activation(case):
    act, seed, eps = case
    net = random_network(act, seed)
    rng = np.random.default_rng(seed + 1)
    c = rng.uniform(size=4)
    lo, hi = np.clip(c - eps, 0, 1), np.clip(c + eps, 0, 1)
    x = box_points(lo, hi, 2000, rng)
    zs = net.pre_activations(x)
    ibp = interval_bounds(net, lo, hi)
    sym = symbolic_bounds(net, lo, hi)
    assert_contains(ibp, zs)
    assert_contains(sym, zs)
    for s, i in zip(sym, ibp):  # intersected with IBP layer by layer, so never looser
        assert (s.lower >= i.lower).all() and (s.upper <= i.upper).all()


@settings(max_examples=60, deadline=None)
@given(cases)
def test_margin_bounds_hold_at_sampled_and_attack_points(case):
    act, seed, eps = case
    net = random_network(act, seed)
    rng = np.random.default_rng(seed + 2)
    c = rng.uniform(size=4)
    label = int(net.predict(c))
    s = InputSet(c, eps)
    lo, hi = s.box()
    lower, upper = margin_bounds(net, lo, hi, label)
    assert lower[label] == 0.0 and upper[label] == 0.0
    m = margins_at(net, box_points(lo, hi, 2000, rng), label)
    assert (lower <= m).all() and (m <= upper).all()
    attack = pgd_attack(net, c[None, :], [label], eps, steps=20, restarts=2, seed=seed)
    finite = np.isfinite(attack.per_target_margins[0])
    assert (lower[finite] <= attack.per_target_margins[0][finite]).all()
    assert (lower <= margins_at(net, attack.points, label)[0]).all()
    # Back-substituting the difference is at least as tight as subtracting the logit bounds.
    out = symbolic_bounds(net, lo, hi)[-1]
    assert (lower >= out.lower[label] - out.upper - 1e-12 * (1 + np.abs(out.upper))).all()


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(ACTIVATIONS), st.integers(0, 10_000), st.floats(1e3, 1e6))
def test_outward_rounding_keeps_degenerate_boxes_sound_with_large_weights(act, seed, scale):
    # lo == hi: the bounds must contain the float value itself, whatever the summation order.
    net = random_network(act, seed, sizes=(6, 8, 8, 4), scale=scale)
    x = np.random.default_rng(seed).uniform(-1, 1, size=6)
    zs = net.pre_activations(x)
    assert_contains(interval_bounds(net, x, x), zs)
    assert_contains(symbolic_bounds(net, x, x), zs)
    lower, upper = margin_bounds(net, x, x, 0)
    m = margins_at(net, x[None, :], 0)[0]
    assert (lower <= m).all() and (m <= upper).all()


def test_batched_bounds_equal_the_single_input_ones():
    rng = np.random.default_rng(7)
    for act in ACTIVATIONS:
        net = random_network(act, 11)
        c = rng.uniform(size=(9, 4))
        eps = rng.uniform(0, 0.3, size=(9, 1))
        lo, hi = np.clip(c - eps, 0, 1), np.clip(c + eps, 0, 1)
        labels = rng.integers(0, 3, size=9)
        ibp = interval_bounds_batch(net, lo, hi)
        sym = symbolic_bounds_batch(net, lo, hi)
        low, up = margin_bounds_batch(net, lo, hi, labels)
        for i in range(9):
            for batched, single in ((ibp, interval_bounds(net, lo[i], hi[i])), (sym, symbolic_bounds(net, lo[i], hi[i]))):
                for b, s in zip(batched, single):
                    np.testing.assert_allclose(b.lower[i], s.lower, rtol=1e-13, atol=1e-13)
                    np.testing.assert_allclose(b.upper[i], s.upper, rtol=1e-13, atol=1e-13)
            l1, u1 = margin_bounds(net, lo[i], hi[i], int(labels[i]))
            np.testing.assert_allclose(low[i], l1, rtol=1e-13, atol=1e-13)
            np.testing.assert_allclose(up[i], u1, rtol=1e-13, atol=1e-13)


def test_symbolic_bounds_are_strictly_tighter_than_ibp_somewhere_on_deep_networks():
    net = random_network("gelu", 5, sizes=(4, 8, 8, 8, 3))
    lo, hi = np.full(4, 0.2), np.full(4, 0.6)
    ibp, sym = interval_bounds(net, lo, hi), symbolic_bounds(net, lo, hi)
    assert (sym[-1].upper - sym[-1].lower).sum() < 0.9 * (ibp[-1].upper - ibp[-1].lower).sum()


def test_an_interval_straddling_gelus_minimum_gets_the_true_minimum():
    # x in [-1, 0] -> gelu(x) -> identity: the minimum -0.16997 lies inside, not at an endpoint or midpoint.
    net = Network.from_arrays([np.eye(1), np.eye(1)], [np.zeros(1), np.zeros(1)], ["gelu", "identity"])
    lo, hi = np.array([-1.0]), np.array([0.0])
    endpoints_and_mid = float(net.forward(np.array([[-1.0], [-0.5], [0.0]])).min())
    assert endpoints_and_mid > GELU_MIN + 1e-3  # the trap: sampling would claim about -0.154
    for bounds in (interval_bounds(net, lo, hi), symbolic_bounds(net, lo, hi)):
        assert bounds[1].lower[0] <= GELU_MIN
        assert bounds[1].lower[0] >= GELU_MIN - 1e-5  # and tight: the exact image, not a guess
    grid = np.linspace(-1, 0, 20001)[:, None]
    assert symbolic_bounds(net, lo, hi)[1].lower[0] <= net.forward(grid).min()


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(ACTIVATIONS), st.sampled_from(("l1", "l2")), st.integers(0, 10_000), st.floats(0.05, 0.8))
def test_ball_bounds_are_sound_on_ball_samples_and_no_looser_than_box_bounds(act, norm, seed, eps):
    net = random_network(act, seed)
    rng = np.random.default_rng(seed)
    s = InputSet(rng.uniform(size=4), eps, norm)
    lo, hi = s.box()
    x = s.sample(3000, rng)
    zs = net.pre_activations(x)
    label = int(net.predict(s.center))
    ibp_ball, ibp_box = interval_bounds(net, lo, hi, ball=s), interval_bounds(net, lo, hi)
    sym_ball = symbolic_bounds(net, lo, hi, ball=s)
    assert_contains(ibp_ball, zs)
    assert_contains(sym_ball, zs)
    # IBP is monotone in its input intervals, so the Hölder first layer can only help it. (Symbolic
    # bounds are not monotone: the line chosen per neuron changes with its interval.)
    for b, o in zip(ibp_ball, ibp_box):
        assert (b.lower >= o.lower).all() and (b.upper <= o.upper).all()
    assert (sym_ball[0].lower >= ibp_box[0].lower).all() and (sym_ball[0].upper <= ibp_box[0].upper).all()
    lower, upper = margin_bounds(net, lo, hi, label, ball=s)
    m = margins_at(net, x, label)
    assert (lower <= m).all() and (m <= upper).all()


def test_the_first_layer_ball_bound_is_the_exact_dual_norm_extreme():
    # z = w.x over ||x - c||_2 <= eps inside a roomy domain: max = w.c + eps ||w||_2, attained.
    w = np.array([[3.0, -4.0]])
    net = Network.from_arrays([w], [np.zeros(1)], ["identity"])
    s = InputSet(np.array([0.5, 0.5]), 0.1, "l2", domain=(-5.0, 5.0))
    b = interval_bounds(net, *s.box(), ball=s)[0]
    assert b.upper[0] == pytest.approx(-0.5 + 0.5, abs=1e-12)
    assert b.lower[0] == pytest.approx(-0.5 - 0.5, abs=1e-12)
    assert b.upper[0] >= -0.5 + 0.5 and b.lower[0] <= -0.5 - 0.5


def test_initial_bounds_tighten_and_contradicting_ones_are_rejected():
    net = random_network("relu", 3)
    lo, hi = np.full(4, 0.1), np.full(4, 0.5)
    sym = symbolic_bounds(net, lo, hi)
    mid = 0.5 * (sym[0].lower + sym[0].upper)
    tight = [LayerBounds(sym[0].lower, mid), None, None]
    out = symbolic_bounds(net, lo, hi, initial=tight)
    assert (out[0].upper <= mid).all()
    far = [LayerBounds(sym[0].upper + 1, sym[0].upper + 2), None, None]
    with pytest.raises(UnsoundAnswerError, match="disjoint"):
        symbolic_bounds(net, lo, hi, initial=far)


def test_bad_inputs_raise_invalid_input_error():
    net = random_network("gelu", 0)
    lo, hi = np.zeros(4), np.ones(4)
    with pytest.raises(InvalidInputError, match="shape"):
        interval_bounds(net, np.zeros(3), np.ones(3))
    with pytest.raises(InvalidInputError, match="empty"):
        symbolic_bounds(net, hi, lo)
    with pytest.raises(InvalidInputError, match="NaN"):
        symbolic_bounds(net, np.array([0, 0, 0, np.nan]), hi)
    with pytest.raises(InvalidInputError, match="outside"):
        margin_bounds(net, lo, hi, 3)
    with pytest.raises(InvalidInputError, match="integer"):
        margin_bounds(net, lo, hi, 0.5)
    with pytest.raises(InvalidInputError, match="3 integers"):
        margin_bounds_batch(net, np.zeros((3, 4)), np.ones((3, 4)), [0, 1])
    with pytest.raises(InvalidInputError, match="shape"):
        symbolic_bounds_batch(net, lo, hi)
    with pytest.raises(InvalidInputError, match="initial bounds for 1 layers"):
        symbolic_bounds(net, lo, hi, initial=[LayerBounds(np.zeros(6), np.ones(6))])
