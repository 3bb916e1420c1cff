"""Envelopes: every line certified with its margin, the single-neuron hull, nesting, and the known trap."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from polycert.formulations.activations import GELU_ARGMIN, SILU_ARGMIN, get_activation
from polycert.formulations.envelopes import (
    curvature_lines,
    LINE_MARGIN,
    LOWER,
    UPPER,
    certify_intercepts,
    certify_line,
    envelope,
    envelope_arrays,
    envelopes,
    hull_endpoint_slopes,
    hull_gap,
    linear_bounds,
)
from polycert.formulations.errors import InvalidInputError

from .test_activations import NONTRIVIAL, interval, samples

HALF = LINE_MARGIN / 2
SQRT2_ = math.sqrt(2.0)


def residuals(act, lines, x):
    """f - line for lower lines, line - f for upper lines: >= margin/2 means valid with room to spare."""
    f = act.value(x)
    return [(f - line(x)) if line.side == LOWER else (line(x) - f) for line in lines]


@settings(max_examples=200, deadline=None)
@given(interval(), st.integers(1, 7), st.integers(1, 7))
@example(("gelu", -50.0, 50.0), 3, 3)
@example(("gelu", 0.0, 3.0), 3, 3)
@example(("gelu", GELU_ARGMIN - 0.3, GELU_ARGMIN + 0.3), 5, 5)
@example(("silu", SILU_ARGMIN - 2.0, 2.5), 4, 4)
@example(("tanh", 0.7, 0.7), 3, 3)
def test_every_envelope_line_holds_with_its_margin(case, n_lower, n_upper):
    name, lower, upper = case
    act = get_activation(name)
    env = envelope(act, lower, upper, n_lower=n_lower, n_upper=n_upper)
    assert 1 <= len(env.lower_lines) <= n_lower and 1 <= len(env.upper_lines) <= n_upper
    assert all(line.side == LOWER for line in env.lower_lines)
    assert all(line.side == UPPER for line in env.upper_lines)
    x = samples(act, lower, upper)
    for r in residuals(act, env.lower_lines + env.upper_lines, x):
        assert r.min() >= HALF


@pytest.mark.parametrize("name", NONTRIVIAL)
@pytest.mark.parametrize("n_lines", [1, 3, 6])
def test_envelope_arrays_hold_on_every_row_and_have_a_fixed_width(name, n_lines):
    act = get_activation(name)
    rng = np.random.default_rng(7)
    centre = np.concatenate([rng.normal(0.0, 3.0, 300), [GELU_ARGMIN, math.sqrt(2), -math.sqrt(2), SILU_ARGMIN, 0.0]])
    radius = rng.choice([0.0, 1e-9, 0.3, 2.0, 40.0], size=centre.size)
    lower, upper = centre - radius, centre + radius * rng.uniform(0, 1, centre.size)
    lo_s, lo_c, up_s, up_c = envelope_arrays(act, lower, upper, n_lines)
    for arr in (lo_s, lo_c, up_s, up_c):
        assert arr.shape == (centre.size, n_lines) and np.all(np.isfinite(arr))
    t = rng.uniform(0, 1, (1, 1, 400))
    x = lower[:, None, None] + t * (upper - lower)[:, None, None]  # (n, 1, 400)
    f = act.value(x)
    assert np.min(f - (lo_s[..., None] * x + lo_c[..., None])) >= HALF
    assert np.min((up_s[..., None] * x + up_c[..., None]) - f) >= HALF
    # the batch computes what the one-interval function computes
    env = envelope(act, lower[0], upper[0], n_lower=n_lines, n_upper=n_lines)
    assert {(l.slope, l.intercept) for l in env.lower_lines} == set(zip(lo_s[0].tolist(), lo_c[0].tolist()))


@settings(max_examples=100, deadline=None)
@given(interval(), st.integers(1, 8))
def test_more_lines_never_loosen_the_envelope(case, n):
    name, lower, upper = case
    act = get_activation(name)
    small = envelope(act, lower, upper, n_lower=n, n_upper=n)
    big = envelope(act, lower, upper, n_lower=n + 1, n_upper=n + 1)
    as_set = lambda lines: {(l.slope, l.intercept) for l in lines}  # noqa: E731
    assert as_set(small.lower_lines) <= as_set(big.lower_lines)
    assert as_set(small.upper_lines) <= as_set(big.upper_lines)
    x = samples(act, lower, upper, 500, seed=3)
    assert np.all(big.lower_bound(x) >= small.lower_bound(x))
    assert np.all(big.upper_bound(x) <= small.upper_bound(x))


@settings(max_examples=100, deadline=None)
@given(interval())
def test_the_single_line_is_the_valid_line_of_least_area(case):
    # Among valid lines, the area between line and graph is (u - l) * |f's mean - line(midpoint)|, so the
    # best single lower line is the one highest at the midpoint. Brute force over many certified slopes.
    name, lower, upper = case
    act = get_activation(name)
    env = envelope(act, lower, upper, n_lower=1, n_upper=1)
    mid = 0.5 * (lower + upper)
    lo_best, up_best = env.lower_lines[0](mid), env.upper_lines[0](mid)
    # float64 rounding of a certified intercept is ~1e-16 per operation; a few 1e-12 show on saturated sigmoids
    slack = 1e-10 * (1.0 + abs(lo_best) + abs(up_best))
    slopes = np.linspace(-0.2, 1.2, 281)
    zeros = np.zeros_like(slopes)
    c_lo = certify_intercepts(act, slopes, zeros, lower, upper, LOWER)
    c_up = certify_intercepts(act, slopes, zeros, lower, upper, UPPER)
    assert np.all(slopes * mid + c_lo <= lo_best + slack)
    assert np.all(slopes * mid + c_up >= up_best - slack)


def brute_force_endpoint_slope(act, lower, upper, from_lower, pick_min):
    x = np.linspace(lower, upper, 200001)[1:-1]
    p = lower if from_lower else upper
    q = (act.value(x) - act.value(np.float64(p))) / (x - p)
    return q.min() if pick_min else q.max()


@pytest.mark.parametrize("name,lower,upper", [
    ("gelu", 0.0, 3.0), ("gelu", -3.0, 1.0), ("gelu", -1.0, 2.5), ("gelu", -6.0, 0.5),
    ("silu", -5.0, 4.0), ("silu", 0.5, 4.0), ("sigmoid", -4.0, 3.0), ("tanh", -2.0, 1.0), ("relu", -1.0, 2.0),
])
def test_hull_end_pieces_are_the_tangent_from_endpoint_lines(name, lower, upper):
    act = get_activation(name)
    for side in (LOWER, UPPER):
        s_l, t_l, s_u, t_u = (float(v[0]) for v in hull_endpoint_slopes(act, lower, upper, side))
        assert s_l == pytest.approx(brute_force_endpoint_slope(act, lower, upper, True, side == LOWER), abs=1e-4)
        assert s_u == pytest.approx(brute_force_endpoint_slope(act, lower, upper, False, side == UPPER), abs=1e-4)
        # the certified line of that slope passes through the anchor and touches the graph at t
        for s, t, p in ((s_l, t_l, lower), (s_u, t_u, upper)):
            line = certify_line(act, s, 0.0, lower, upper, side)
            sign = 1.0 if side == LOWER else -1.0
            for point in (p, t):
                assert sign * (act.value(np.float64(point)) - line(point)) == pytest.approx(LINE_MARGIN, abs=1e-9)


@pytest.mark.parametrize("name,lower,upper", [("gelu", -1.0, 1.2), ("sigmoid", -4.0, -0.5), ("silu", -2.0, 2.0)])
def test_on_a_convex_piece_the_upper_line_is_the_secant_and_tangents_converge(name, lower, upper):
    act = get_activation(name)
    env = envelope(act, lower, upper, n_lower=1, n_upper=5)
    secant = (act.value(np.float64(upper)) - act.value(np.float64(lower))) / (upper - lower)
    assert len(env.upper_lines) == 1 and env.upper_lines[0].slope == pytest.approx(secant, abs=1e-12)
    gaps = []
    for n in (1, 2, 3, 5, 9, 17):
        e = envelope(act, lower, upper, n_lower=n, n_upper=1)
        gaps.append(hull_gap(act, lower, upper, e.lower_lines))
    assert all(b <= a for a, b in zip(gaps, gaps[1:]))
    assert gaps[-1] < 0.05 * gaps[0]
    assert gaps[-1] >= LINE_MARGIN  # it is never below the certified margin


def test_relu_envelope_is_its_exact_hull():
    env = envelope("relu", -1.0, 1.0)
    assert sorted(line.slope for line in env.lower_lines) == [0.0, 1.0]
    assert [line.slope for line in env.upper_lines] == [0.5]
    # the triangle's gap is the secant's height over the kink, 0.5, plus the margin
    assert hull_gap("relu", -1.0, 1.0, env) == pytest.approx(0.5 + LINE_MARGIN, abs=1e-12)


@pytest.mark.parametrize("lower,upper,side", [
    (0.0, 3.0, LOWER), (-3.0, 0.0, LOWER), (0.5, 2.5, LOWER), (0.5, 2.5, UPPER), (-2.5, -0.5, UPPER),
])
def test_the_midpoint_tangent_or_secant_choice_is_shifted_by_certification(lower, upper, side):
    # Known trap (design.md): across GELU's inflection +-sqrt(2), choosing between the tangent at the
    # midpoint and the secant by comparing them at the midpoint does not give a valid line.
    act = get_activation("gelu")
    mid = 0.5 * (lower + upper)
    f_l, f_m, f_u = (float(act.value(np.float64(v))) for v in (lower, mid, upper))
    t_s = float(act.slope(np.float64(mid)))
    secant_s = (f_u - f_l) / (upper - lower)
    candidates = [(t_s, f_m - t_s * mid), (secant_s, f_l - secant_s * lower)]
    at_mid = [s * mid + c for s, c in candidates]
    s, c = candidates[int(np.argmin(at_mid)) if side == LOWER else int(np.argmax(at_mid))]
    x = np.linspace(lower, upper, 5001)
    f = act.value(x)
    naive = f - (s * x + c) if side == LOWER else (s * x + c) - f
    assert naive.min() < -1e-3, "the naive choice is invalid on this interval"
    line = certify_line(act, s, c, lower, upper, side)
    assert line is not None and line.slope == s
    assert (line.intercept < c - 1e-3) if side == LOWER else (line.intercept > c + 1e-3)
    fixed = f - line(x) if side == LOWER else line(x) - f
    assert fixed.min() >= HALF


@settings(max_examples=100, deadline=None)
@given(interval())
def test_linear_bounds_hold_and_are_as_tight_as_the_one_line_envelope(case):
    name, lower, upper = case
    act = get_activation(name)
    a_lo, b_lo, a_up, b_up = linear_bounds(act, np.array([lower]), np.array([upper]))
    x = samples(act, lower, upper, 500)
    f = act.value(x)
    assert np.min(f - (a_lo * x + b_lo)) >= HALF and np.min((a_up * x + b_up) - f) >= HALF
    env = envelope(act, lower, upper, n_lower=1, n_upper=1)
    mid = 0.5 * (lower + upper)
    slack = 1e-12 * (1 + abs(mid))
    assert a_lo[0] * mid + b_lo[0] >= env.lower_lines[0](mid) - slack
    assert a_up[0] * mid + b_up[0] <= env.upper_lines[0](mid) + slack


def test_envelopes_batch_matches_single_calls():
    lower, upper = np.array([-3.0, 0.0, 1.0]), np.array([1.0, 3.0, 1.0])
    batch = envelopes("silu", lower, upper, n_lower=4, n_upper=2)
    for i in range(3):
        assert batch[i] == envelope("silu", lower[i], upper[i], n_lower=4, n_upper=2)


@pytest.mark.parametrize("lower,upper", [(1.0, 0.0), (float("nan"), 1.0), (0.0, float("inf"))])
def test_bad_intervals_are_typed_errors(lower, upper):
    with pytest.raises(InvalidInputError):
        envelope("gelu", lower, upper)
    with pytest.raises(InvalidInputError):
        envelope_arrays("gelu", np.array([lower]), np.array([upper]), 3)


def test_zero_lines_is_a_typed_error():
    with pytest.raises(InvalidInputError, match="positive integer"):
        envelope_arrays("gelu", np.array([0.0]), np.array([1.0]), 0)


def test_certify_line_refuses_what_it_cannot_certify():
    assert certify_line("gelu", float("nan"), 0.0, -1.0, 1.0, LOWER) is None
    assert certify_line("gelu", 1.0, 0.0, 1.0, -1.0, LOWER) is None


@settings(max_examples=300, deadline=None)
@given(interval(), st.integers(1, 6))
@example(("gelu", -SQRT2_, -0.5), 4)
@example(("gelu", 0.2, SQRT2_), 4)
@example(("sigmoid", -3.0, 0.0), 3)
def test_closed_form_lines_on_one_curvature_piece_hold_with_their_margin(case, n):
    name, lower, upper = case
    act = get_activation(name)
    lo_s, lo_c, up_s, up_c = curvature_lines(act, np.array([lower]), np.array([upper]), n)
    straddles = (any(lower < p < upper for p in act.inflections) or max(abs(lower), abs(upper)) > 1e3
                 or act.piecewise_linear)  # kinks: the general path
    assert np.isnan(lo_s).all() == straddles  # only intervals of one curvature sign take the closed form
    if straddles:
        return
    x = samples(act, lower, upper)
    f = act.value(x)
    assert (f - (lo_s[0][:, None] * x + lo_c[0][:, None])).min() >= HALF
    assert ((up_s[0][:, None] * x + up_c[0][:, None]) - f).min() >= HALF


def test_closed_form_lines_agree_with_the_certified_hull_on_a_convex_piece():
    act = get_activation("gelu")
    lower, upper = np.array([-1.0, 0.1]), np.array([0.5, 1.3])  # both inside GELU's convex [-sqrt 2, sqrt 2]
    _, _, up_s, up_c = curvature_lines(act, lower, upper, 3)
    _, _, ref_s, ref_c = envelope_arrays(act, lower, upper, 3)
    mid = 0.5 * (lower + upper)
    # the upper side is the secant, the hull itself: no certified line lies below it at the midpoint
    assert (up_s[:, 0] * mid + up_c[:, 0] <= (ref_s * mid[:, None] + ref_c).min(axis=1) + 1e-9).all()
