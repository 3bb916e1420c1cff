"""Piecewise relaxations: every segment's band holds, splits and refinement, exact band width, MIP arrays."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from polycert.formulations.activations import GELU_ARGMIN, get_activation
from polycert.formulations.envelopes import LINE_MARGIN
from polycert.formulations.errors import InvalidInputError
from polycert.formulations.piecewise import (
    band_width,
    critical_points,
    curvature_segments,
    refine_at,
    relaxation,
    split_segment,
    uniform_relaxations,
    uniform_segments,
)

from .test_activations import interval, samples

HALF = LINE_MARGIN / 2


def assert_bands_hold(act, segments, lower, upper):
    """Segments tile [lower, upper] and every sampled point is inside the band of each segment holding it."""
    assert segments[0].lower == lower and segments[-1].upper == upper
    assert all(a.upper == b.lower for a, b in zip(segments[:-1], segments[1:]))
    x = np.concatenate([samples(act, lower, upper), [s.lower for s in segments]])
    f = act.value(x)
    for seg in segments:
        inside = (seg.lower <= x) & (x <= seg.upper)
        xs, fs = x[inside], f[inside]
        assert xs.size  # its own ends at least
        assert np.min(fs - seg.lower_bound(xs)) >= HALF
        assert np.min(seg.upper_bound(xs) - fs) >= HALF
        lo, hi = act.image(seg.lower, seg.upper)
        assert seg.value_range == (float(lo), float(hi))


@settings(max_examples=120, deadline=None)
@given(interval(), st.integers(1, 9), st.integers(1, 4))
@example(("gelu", -50.0, 50.0), 7, 2)
@example(("gelu", GELU_ARGMIN - 0.5, GELU_ARGMIN + 0.5), 3, 2)
def test_every_uniform_segment_band_holds(case, k, lines):
    name, lower, upper = case
    act = get_activation(name)
    segments = uniform_segments(act, lower, upper, k, lines_per_side=lines)
    assert len(segments) == (k if upper > lower else 1)
    assert_bands_hold(act, segments, lower, upper)


@settings(max_examples=120, deadline=None)
@given(interval(), st.one_of(st.none(), st.floats(0.05, 5.0)))
def test_curvature_segments_hold_and_contain_no_critical_point(case, max_width):
    name, lower, upper = case
    act = get_activation(name)
    segments = curvature_segments(act, lower, upper, max_width=max_width)
    assert_bands_hold(act, segments, lower, upper)
    crit = [p for p in (*act.inflections, *act.stationary, *act.kinks)]
    for seg in segments:
        assert not any(seg.lower < p < seg.upper for p in crit)
        if max_width is not None:
            assert seg.width <= max_width * (1 + 1e-12)
    assert set(critical_points(act, lower, upper)) <= {s.lower for s in segments}


@settings(max_examples=150, deadline=None)
@given(interval(), st.integers(1, 5))
def test_band_width_is_the_exact_maximum_of_the_band(case, lines):
    name, lower, upper = case
    act = get_activation(name)
    seg = uniform_segments(act, lower, upper, 1, lines_per_side=lines)[0]
    x = np.linspace(lower, upper, 20001)
    sampled = np.max(seg.upper_bound(x) - seg.lower_bound(x))
    exact = band_width(act, seg)
    slopes = [line.slope for line in seg.lower_lines + seg.upper_lines]
    resolution = (max(slopes) - min(slopes)) * (upper - lower) / 20000
    tol = 1e-12 * (1 + abs(exact))
    assert exact >= sampled - tol
    assert exact <= sampled + resolution + tol
    assert exact >= 2 * LINE_MARGIN - tol  # both sides keep their margin off the graph


@pytest.mark.parametrize("name", ["gelu", "silu", "sigmoid", "tanh"])
def test_band_width_shrinks_quadratically_with_the_segment_width(name):
    act = get_activation(name)
    coarse = max(band_width(act, s) for s in uniform_segments(act, -4.0, 4.0, 4))
    fine = max(band_width(act, s) for s in uniform_segments(act, -4.0, 4.0, 64))
    assert fine < coarse / 50  # 16 times narrower pieces: about 256 times thinner bands


def test_split_segment_replaces_one_segment_by_two_that_meet_at_the_point():
    act = get_activation("gelu")
    segments = uniform_segments(act, -2.0, 2.0, 4)
    out = split_segment(act, segments, 1, -0.3)
    assert len(out) == 5
    assert out[0] is segments[0] and out[3:] == segments[2:]
    assert (out[1].lower, out[1].upper, out[2].lower, out[2].upper) == (-1.0, -0.3, -0.3, 0.0)
    assert_bands_hold(act, out, -2.0, 2.0)
    mid = split_segment(act, segments, -1)
    assert (mid[-2].upper, mid[-1].lower) == (1.5, 1.5)
    for bad in (-1.0, 0.0, 5.0):
        with pytest.raises(InvalidInputError, match="not strictly inside"):
            split_segment(act, segments, 1, bad)
    with pytest.raises(InvalidInputError, match="out of range"):
        split_segment(act, segments, 4)


def test_refine_at_makes_the_point_a_breakpoint_or_halves_its_neighbours():
    act = get_activation("silu")
    segments = uniform_segments(act, -2.0, 2.0, 2)
    inner = refine_at(act, segments, 0.7)
    assert [s.lower for s in inner] == [-2.0, 0.0, 0.7]
    at_edge = refine_at(act, segments, 0.0)  # a shared breakpoint: both neighbours are halved
    assert [s.lower for s in at_edge] == [-2.0, -1.0, 0.0, 1.0]
    at_end = refine_at(act, segments, 2.0)
    assert [s.lower for s in at_end] == [-2.0, 0.0, 1.0]
    assert refine_at(act, segments, 2.0 + 1e-7) == at_end  # a solver's tolerance past the end is the end
    with pytest.raises(InvalidInputError, match="outside"):
        refine_at(act, segments, 2.5)
    point = uniform_segments(act, 1.0, 1.0, 3)
    assert refine_at(act, point, 1.0) == point


def disjunctive_slack(relax, x, fx):
    """The least slack of the multiple-choice rows (piecewise module docstring) at the point (x, f(x)) with
    d_s = 1 for the segment holding x and z_t = a_t = d_t = 0 for the others: lines, then the rest."""
    s = min(int(np.searchsorted(relax.breakpoints, x, side="right")) - 1, relax.n_segments - 1)
    d = np.zeros(relax.n_segments)
    d[s] = 1.0
    z, a = d * x, d * fx
    lower_rows = a[:, None] - (relax.lower_slopes * z[:, None] + relax.lower_intercepts * d[:, None])
    upper_rows = (relax.upper_slopes * z[:, None] + relax.upper_intercepts * d[:, None]) - a[:, None]
    lines_on_s = min(lower_rows[s].min(), upper_rows[s].min())
    all_lines = min(lower_rows.min(), upper_rows.min())
    other_rows = np.concatenate([
        z - relax.breakpoints[:-1] * d, relax.breakpoints[1:] * d - z,
        a - relax.value_lower * d, relax.value_upper * d - a,
        [d.sum() - 1.0, 1.0 - d.sum(), z.sum() - x, x - z.sum(), a.sum() - fx, fx - a.sum()],
    ])
    return lines_on_s, all_lines, other_rows.min()


@settings(max_examples=100, deadline=None)
@given(interval(), st.integers(1, 6))
def test_graph_points_satisfy_the_multiple_choice_rows(case, k):
    name, lower, upper = case
    act = get_activation(name)
    segments = curvature_segments(act, lower, upper)
    while len(segments) < k and segments[0].width > 0:
        segments = split_segment(act, segments, int(np.argmax([s.width for s in segments])))
    relax = relaxation(segments)
    assert relax.breakpoints.shape == (len(segments) + 1,)
    assert relax.lower_slopes.shape[0] == len(segments) and np.all(np.isfinite(relax.lower_intercepts))
    x = samples(act, lower, upper, 100)
    fx = act.value(x)
    for xi, fi in zip(x, fx):
        on_segment, all_lines, rest = disjunctive_slack(relax, xi, fi)
        assert on_segment >= HALF and all_lines >= 0.0 and rest >= -1e-12 * (1 + abs(xi))
    assert relax.contains(x, fx).all()


def test_points_off_the_bands_are_outside_the_relaxation():
    act = get_activation("gelu")
    segments = uniform_segments(act, -3.0, 3.0, 12)
    relax = relaxation(segments)
    width = max(band_width(act, s) for s in segments)
    x = np.linspace(-3.0, 3.0, 1001)
    f = act.value(x)
    assert not relax.contains(x, f + width + 1e-6).any()
    assert not relax.contains(x, f - width - 1e-6).any()
    assert not relax.contains(np.array([3.5]), act.value(np.array([3.5]))).any()


def test_uniform_relaxations_hold_for_many_neurons_and_match_the_segments():
    act = get_activation("gelu")
    lower, upper = np.array([-3.0, 0.25, -1.0, 2.0]), np.array([1.0, 0.25, 3.0, 2.5])
    relaxations = uniform_relaxations(act, lower, upper, 5, lines_per_side=3)
    for i, relax in enumerate(relaxations):
        assert relax.breakpoints.shape == (6,) and relax.lower_slopes.shape == (5, 3)
        x = samples(act, lower[i], upper[i], 500)
        assert relax.contains(x, act.value(x)).all()
        single = relaxation(uniform_segments(act, lower[i], upper[i], 5, lines_per_side=3))
        if upper[i] > lower[i]:
            np.testing.assert_array_equal(single.breakpoints, relax.breakpoints)
            for s in range(5):
                assert set(single.lower_slopes[s]) == set(relax.lower_slopes[s])


def test_bad_segment_requests_are_typed_errors():
    with pytest.raises(InvalidInputError, match="positive integer"):
        uniform_segments("gelu", 0.0, 1.0, 0)
    with pytest.raises(InvalidInputError, match="lower"):
        uniform_segments("gelu", 1.0, 0.0, 2)
    with pytest.raises(InvalidInputError, match="max_width"):
        curvature_segments("gelu", 0.0, 1.0, max_width=0.0)
