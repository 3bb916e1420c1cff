"""Activations: exact images, slope solutions, residual extremes and the derived constants."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from polycert.formulations.activations import GELU_ARGMIN, GELU_MIN, SILU_ARGMIN, get_activation, names
from polycert.formulations.errors import UnsupportedOperatorError

NONTRIVIAL = [n for n in names() if n != "identity"]
# Largest |f'| of every registered activation is below 1.2 (GELU's maximum slope is 1.1289...).
LIPSCHITZ = 1.2
SQRT2 = math.sqrt(2.0)
SPECIAL = [0.0, GELU_ARGMIN, -SQRT2, SQRT2, SILU_ARGMIN, -2.3994, 2.3994, -1.0, 1.0]


@st.composite
def interval(draw):
    """An activation name and an interval: around the critical points, random, wide, tiny or degenerate."""
    name = draw(st.sampled_from(NONTRIVIAL))
    center = draw(st.one_of(
        st.sampled_from(SPECIAL).map(float),
        st.tuples(st.sampled_from(SPECIAL), st.floats(-0.3, 0.3)).map(sum),
        st.floats(-60.0, 60.0),
    ))
    radius = st.one_of(st.just(0.0), st.floats(1e-12, 1e-4), st.floats(1e-4, 3.0), st.floats(3.0, 50.0))
    return name, center - draw(radius), center + draw(radius)


def samples(act, lower: float, upper: float, n: int = 2000, seed: int = 0) -> np.ndarray:
    """n random points of [lower, upper], its ends, and every critical point inside."""
    rng = np.random.default_rng(seed)
    crit = [p for p in (*act.inflections, *act.stationary, *act.kinks) if lower <= p <= upper]
    return np.concatenate([rng.uniform(lower, upper, n), [lower, upper], crit])


def second_derivative(act, x: np.ndarray, h: float = 1e-4) -> np.ndarray:
    return (act.slope(x + h) - act.slope(x - h)) / (2 * h)


@settings(max_examples=200, deadline=None)
@given(interval())
@example(("gelu", -1.0, 0.0))
@example(("gelu", -50.0, 50.0))
@example(("silu", SILU_ARGMIN - 1e-9, SILU_ARGMIN + 1e-9))
def test_image_is_the_exact_minimum_and_maximum(case):
    name, lower, upper = case
    act = get_activation(name)
    grid = np.concatenate([np.linspace(lower, upper, 4001), samples(act, lower, upper, 500)])
    f = act.value(grid)
    lo, hi = act.image(lower, upper)
    # sound: no sampled value escapes the image (up to the rounding of f itself, a few ulps)
    ulps = 4e-16 * (1.0 + np.abs(f).max())
    assert lo <= f.min() + ulps and hi >= f.max() - ulps
    # exact: within what a Lipschitz function can hide between grid points
    slack = LIPSCHITZ * (upper - lower) / 4000 / 2 + ulps
    assert lo >= f.min() - slack and hi <= f.max() + slack


def test_gelu_image_on_minus_one_zero_has_the_design_minimum():
    lo, hi = get_activation("gelu").image(-1.0, 0.0)
    assert lo == pytest.approx(-0.16997, abs=1e-5)  # design.md: GELU's minimum -0.16997 at -0.75179
    assert hi == 0.0


def test_endpoint_sampling_would_miss_the_gelu_minimum():
    gelu = get_activation("gelu")
    ends = gelu.value(np.array([-1.0, -0.5, 0.0]))
    lo, _ = gelu.image(-1.0, 0.0)
    assert lo < ends.min() - 0.01


def test_gelu_and_silu_constants_solve_their_defining_equations():
    gelu, silu = get_activation("gelu"), get_activation("silu")
    assert abs(gelu.slope(np.float64(GELU_ARGMIN))) < 1e-12
    assert GELU_ARGMIN == pytest.approx(-0.75179, abs=1e-5)
    assert GELU_MIN == pytest.approx(0.5 * GELU_ARGMIN * (1 + math.erf(GELU_ARGMIN / SQRT2)), abs=1e-15)
    assert GELU_MIN == pytest.approx(-0.16997, abs=1e-5)
    assert abs(silu.slope(np.float64(SILU_ARGMIN))) < 1e-12
    assert silu.value(np.float64(SILU_ARGMIN)) < silu.value(np.float64(SILU_ARGMIN) + np.array([-1e-3, 1e-3])).min()
    for p in silu.inflections:  # SiLU'' = s(1-s)(2 - x tanh(x/2))
        assert abs(abs(p) * math.tanh(abs(p) / 2) - 2.0) < 1e-12
    assert get_activation("gelu").inflections == pytest.approx((-SQRT2, SQRT2), abs=0)


@pytest.mark.parametrize("name", NONTRIVIAL)
def test_curvature_signs_match_the_second_derivative(name):
    act = get_activation(name)
    edges = act.region_edges()
    for k, sign in enumerate(act.curvature):
        lo, hi = max(edges[k], -8.0), min(edges[k + 1], 8.0)
        x = np.linspace(lo, hi, 203)[1:-1]
        x = x[np.abs(x - np.array(act.kinks or [np.inf])[:, None]).min(axis=0) > 1e-3]
        d2 = second_derivative(act, x)
        if sign == 0:
            assert np.all(np.abs(d2) < 1e-6)
        else:
            assert np.all(sign * d2 > -1e-9), (name, k)
    for p in act.inflections:  # the sign really changes there
        assert second_derivative(act, np.float64(p - 1e-2)) * second_derivative(act, np.float64(p + 1e-2)) < 0


@settings(max_examples=200, deadline=None)
@given(interval(), st.floats(-0.2, 1.3))
def test_slope_solutions_solve_slope_equals_s_and_miss_none(case, s):
    name, lower, upper = case
    act = get_activation(name)
    sols = act.slope_solutions(s, lower, upper)
    for x in sols[~np.isnan(sols)]:
        assert lower <= x <= upper
        assert abs(act.slope(x) - s) <= 1e-9
    # completeness: every sign change of slope - s inside a curved region has its column filled
    edges = act.region_edges()
    for k, sign in enumerate(act.curvature):
        lo, hi = max(lower, edges[k]), min(upper, edges[k + 1])
        if sign == 0 or not lo < hi:
            continue
        g = act.slope(np.linspace(lo, hi, 257)) - s
        if g.min() < -1e-12 and g.max() > 1e-12:
            assert not np.isnan(sols[k])


@settings(max_examples=150, deadline=None)
@given(interval(), st.floats(-0.2, 1.3), st.floats(-3.0, 3.0))
def test_residual_extremes_bound_the_sampled_residual_tightly(case, s, c):
    name, lower, upper = case
    act = get_activation(name)
    x = np.concatenate([np.linspace(lower, upper, 4001), samples(act, lower, upper, 500)])
    r = act.value(x) - (s * x + c)
    r_min, r_max = act.residual_extremes(s, c, lower, upper)
    tol = 1e-12 * (1 + np.abs(r).max())
    assert r_min <= r.min() + tol and r_max >= r.max() - tol
    slack = (LIPSCHITZ + abs(s)) * (upper - lower) / 4000 / 2 + tol
    assert r_min >= r.min() - slack and r_max <= r.max() + slack


def test_unknown_activation_is_a_typed_error_and_aliases_resolve():
    with pytest.raises(UnsupportedOperatorError, match="softplus"):
        get_activation("softplus")
    assert get_activation("swish") is get_activation("silu")
