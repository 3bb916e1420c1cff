"""Input sets: validation, the smallest containing box, exact projections, samples inside the set."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polycert.formulations.errors import InvalidInputError
from polycert.formulations.input_sets import InputSet, canonical_norm, distance, fast_project, l1_ball_projection

NORMS = ("linf", "l1", "l2")


@st.composite
def input_sets(draw, outside: bool = False):
    """A random set in dimension 1..6; with ``outside`` the centre may leave [0, 1] by up to eps/2."""
    d = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    norm = draw(st.sampled_from(NORMS))
    eps = draw(st.floats(0.0, 0.8))
    rng = np.random.default_rng(seed)
    center = rng.uniform(0.0, 1.0, size=d)
    if outside and eps > 0:
        i = rng.integers(d)
        center[i] = 1.0 + rng.uniform(0, 0.5) * eps
    return InputSet(center, eps, norm), rng


def test_bad_inputs_raise_invalid_input_error_naming_the_problem():
    with pytest.raises(InvalidInputError, match="NaN"):
        InputSet(np.array([0.5, np.nan]), 0.1)
    with pytest.raises(InvalidInputError, match="eps must be >= 0"):
        InputSet(np.array([0.5]), -0.1)
    with pytest.raises(InvalidInputError, match="eps must be finite"):
        InputSet(np.array([0.5]), float("nan"))
    with pytest.raises(InvalidInputError, match="unknown norm"):
        InputSet(np.array([0.5]), 0.1, norm="l3")
    with pytest.raises(InvalidInputError, match="domain is empty"):
        InputSet(np.array([0.5]), 0.1, domain=(1.0, 0.0))
    with pytest.raises(InvalidInputError, match="does not meet the domain"):
        InputSet(np.array([1.5, 0.5]), 0.1, norm="l2")
    with pytest.raises(InvalidInputError, match="vector"):
        InputSet(np.zeros((2, 2)), 0.1)
    s = InputSet(np.array([0.5, 0.5]), 0.1)
    with pytest.raises(InvalidInputError, match="dimension 2"):
        s.contains(np.zeros(3))
    with pytest.raises(InvalidInputError, match="NaN"):
        s.project(np.array([np.nan, 0.0]))


def test_norm_spellings_map_to_the_three_canonical_names():
    assert [canonical_norm(v) for v in ("Linf", np.inf, "inf", 1, "L1", 2, "l_2")] == \
        ["linf", "linf", "linf", "l1", "l1", "l2", "l2"]


def test_centre_outside_the_domain_is_allowed_and_the_set_is_the_clipped_ball():
    s = InputSet(np.array([1.05, 0.5]), 0.1, norm="l2")
    lo, hi = s.box()
    assert hi[0] == 1.0 and lo[0] == pytest.approx(0.95, abs=1e-12)
    # coordinate 1 can only use what is left after coordinate 0 moved 0.05 into the domain
    assert hi[1] == pytest.approx(0.5 + np.sqrt(0.1**2 - 0.05**2), abs=1e-12)
    assert not s.contains(s.center)
    assert s.contains(s.project(s.center), tol=0.0)


@settings(max_examples=150, deadline=None)
@given(input_sets())
def test_box_is_the_clipped_linf_box_and_is_attained_when_the_centre_is_inside(case):
    s, _ = case
    lo, hi = s.box()
    np.testing.assert_allclose(lo, np.clip(s.center - s.eps, 0, 1), atol=1e-15)
    np.testing.assert_allclose(hi, np.clip(s.center + s.eps, 0, 1), atol=1e-15)
    assert (lo <= np.clip(s.center - s.eps, 0, 1)).all() and (hi >= np.clip(s.center + s.eps, 0, 1)).all()
    for i in range(s.dim):  # each face is reached by a point of the set
        for sign, face in ((1.0, hi), (-1.0, lo)):
            far = s.center.copy()
            far[i] += sign * 10.0
            assert s.project(far)[i] == pytest.approx(face[i], abs=1e-12)


@settings(max_examples=150, deadline=None)
@given(input_sets(outside=True), st.integers(1, 20))
def test_projection_lands_in_the_set_and_is_the_nearest_point(case, n):
    s, rng = case
    x = rng.normal(0.5, 1.0, size=(n, s.dim))
    y = s.project(x)
    assert s.contains(y, tol=0.0).all()
    lo, hi = s.box()
    assert ((y >= lo) & (y <= hi)).all()
    # Variational inequality of the Euclidean projection onto a convex set: (x - y).(z - y) <= 0 for z in S.
    z = s.sample(200, rng)
    assert s.contains(z, tol=0.0).all()
    inner = np.einsum("nd,mnd->mn", x - y, z[:, None, :] - y[None, :, :])
    assert inner.max() <= 1e-7 * (1 + np.abs(x).max())
    # Points already inside do not move.
    np.testing.assert_allclose(s.project(z[:5]), z[:5], atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(input_sets(outside=True))
def test_samples_and_fast_projection_stay_inside(case):
    s, rng = case
    pts = s.sample(50, rng)
    assert pts.shape == (50, s.dim) and s.contains(pts, tol=0.0).all()
    x = rng.normal(0.5, 1.0, size=(30, s.dim))
    c = np.broadcast_to(s.center, x.shape)
    y = fast_project(x, c, np.full(30, s.eps), s.norm, *s.domain)
    assert s.contains(y, tol=1e-12).all()


def test_l1_ball_projection_matches_its_kkt_threshold():
    rng = np.random.default_rng(3)
    delta = rng.normal(size=(200, 7))
    eps = rng.uniform(0.1, 2.0, size=200)
    out = l1_ball_projection(delta, eps)
    norms = np.abs(out).sum(axis=1)
    outside = np.abs(delta).sum(axis=1) > eps
    np.testing.assert_allclose(norms[outside], eps[outside], rtol=1e-12)
    # Shrinkage by one common threshold per row: |delta| - |out| is the same on the support.
    shrink = np.where(out != 0, np.abs(delta) - np.abs(out), np.nan)
    spread = np.nanmax(shrink, axis=1) - np.nanmin(shrink, axis=1)
    assert np.nanmax(spread[outside]) < 1e-12
    np.testing.assert_array_equal(out[~outside], delta[~outside])


def test_distances_use_the_named_norm():
    x, c = np.array([[0.3, -0.4]]), np.zeros((1, 2))
    assert [float(distance(x, c, n)[0]) for n in NORMS] == [0.4, pytest.approx(0.7), pytest.approx(0.5)]
