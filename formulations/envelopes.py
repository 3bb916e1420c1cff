"""Certified envelope lines of an activation on an interval (design.md, "Envelopes").

For a neuron with pre-activation bounds [l, u], a *lower* line ``z >= s*a + c`` and an *upper* line
``z <= s*a + c`` are valid on all of [l, u] iff the residual ``f(a) - (s*a + c)`` is >= 0 (resp. <= 0)
there. We never trust a line because of how it was chosen (a tangent/secant pair picked at the midpoint is
not valid across GELU's inflection points +-sqrt(2)); instead every line is *certified*: its residual's
exact extremes are computed (:meth:`Activation.residual_extremes`: endpoints, kinks and the points where
``f'(a) = s``) and the intercept is moved outward so that the residual keeps a margin ``LINE_MARGIN``.
A line whose extremes are not finite is dropped, never used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .activations import Activation, get_activation

Array = np.ndarray

# Outward margin of every certified line. It must exceed the solvers' primal feasibility tolerances
# (1e-6 for SCIP, Gurobi, GLOP and HiGHS by default) so that a point a solver accepts as feasible is
# still inside the true graph's relaxation; it also absorbs float64 rounding of erf/exp (~1e-16 relative).
LINE_MARGIN = 2e-6

LOWER, UPPER = "lower", "upper"


@dataclass(frozen=True)
class CertifiedLine:
    """A line certified valid on [lower, upper]: ``f(a) - (slope*a + intercept)`` has the line's side's
    sign everywhere there, with at least ``margin`` to spare (``min_residual`` is the certified slack)."""

    slope: float
    intercept: float
    lower: float
    upper: float
    side: str  # "lower" (line below the graph) or "upper"
    kind: str = "line"  # tangent, secant, chord, hull, constant, ...
    min_residual: float = LINE_MARGIN
    margin: float = LINE_MARGIN

    def __call__(self, a: Array) -> Array:
        return self.slope * np.asarray(a, dtype=np.float64) + self.intercept


def certify_intercepts(act: Activation, slope: Array, intercept: Array, lower: Array, upper: Array,
                       side: str, margin: float = LINE_MARGIN) -> Array:
    """Intercepts moved outward so the lines (slope, intercept) are valid on [lower, upper] with ``margin``.

    Vectorised; returns NaN where the residual's extremes are not finite (the caller drops those lines).
    """
    act = get_activation(act)
    r_min, r_max = act.residual_extremes(slope, intercept, lower, upper)
    if side == LOWER:
        # f - (s a + c) >= r_min  =>  f - (s a + c + r_min - margin) >= margin
        out = np.asarray(intercept, dtype=np.float64) + r_min - margin
    elif side == UPPER:
        out = np.asarray(intercept, dtype=np.float64) + r_max + margin
    else:
        raise ValueError(f"side must be 'lower' or 'upper', got {side!r}")
    return np.where(np.isfinite(out), out, np.nan)


def certify_line(act: Activation | str, slope: float, intercept: float, lower: float, upper: float, side: str,
                 *, kind: str = "line", margin: float = LINE_MARGIN) -> CertifiedLine | None:
    """Certify one candidate line on [lower, upper]; ``None`` when it cannot be certified."""
    if not (np.isfinite(slope) and np.isfinite(intercept) and np.isfinite(lower) and np.isfinite(upper)) or lower > upper:
        return None
    c = float(certify_intercepts(get_activation(act), slope, intercept, lower, upper, side, margin))
    if not np.isfinite(c):
        return None
    return CertifiedLine(float(slope), c, float(lower), float(upper), side, kind, margin, margin)


def candidate_slopes(act: Activation, lower: Array, upper: Array) -> Array:
    """A few slopes worth trying per neuron: the secant and tangents at 0, 1/4, 1/2, 3/4, 1 of [l, u].

    Shape (n, 6). Where l == u the secant is replaced by the slope at l.
    """
    lower = np.asarray(lower, dtype=np.float64)
    upper = np.asarray(upper, dtype=np.float64)
    width = upper - lower
    safe = np.where(width > 0, width, 1.0)
    secant = np.where(width > 0, (act.value(upper) - act.value(lower)) / safe, act.slope(lower))
    points = [lower + t * width for t in (0.0, 0.25, 0.5, 0.75, 1.0)]
    return np.stack([secant, *(act.slope(p) for p in points)], axis=-1)


def linear_bounds(act: Activation | str, lower: Array, upper: Array,
                  margin: float = LINE_MARGIN) -> tuple[Array, Array, Array, Array]:
    """One certified lower and one certified upper line per neuron: ``(a_lo, b_lo, a_up, b_up)`` with
    ``a_lo*z + b_lo <= f(z) <= a_up*z + b_up`` on [lower, upper].

    These are the per-neuron relaxations of symbolic back-substitution (DeepPoly, Singh et al. 2019;
    CROWN, Zhang et al. 2018). Among the candidate slopes we pick, per side, the certified line closest to
    the graph in area: since the integral of f is fixed, that is the line with the highest (lower side) or
    lowest (upper side) value at the midpoint. For ReLU this yields the triangle's secant as upper line and
    the CROWN-adaptive slope (0 or 1) as lower line.
    """
    act = get_activation(act)
    lower = np.atleast_1d(np.asarray(lower, dtype=np.float64))
    upper = np.atleast_1d(np.asarray(upper, dtype=np.float64))
    slopes = candidate_slopes(act, lower, upper)  # (n, K)
    if act.piecewise_linear:
        slopes = np.concatenate([slopes, np.zeros_like(lower)[:, None], np.ones_like(lower)[:, None]], axis=-1)
    lo_b, up_b = lower[:, None], upper[:, None]
    zeros = np.zeros_like(slopes)
    c_lo = certify_intercepts(act, slopes, zeros, lo_b, up_b, LOWER, margin)
    c_up = certify_intercepts(act, slopes, zeros, lo_b, up_b, UPPER, margin)
    mid = 0.5 * (lo_b + up_b)
    score_lo = np.where(np.isnan(c_lo), -np.inf, slopes * mid + c_lo)
    score_up = np.where(np.isnan(c_up), np.inf, slopes * mid + c_up)
    i_lo = np.argmax(score_lo, axis=-1)
    i_up = np.argmin(score_up, axis=-1)
    rows = np.arange(slopes.shape[0])
    a_lo, b_lo = slopes[rows, i_lo], c_lo[rows, i_lo]
    a_up, b_up = slopes[rows, i_up], c_up[rows, i_up]
    # A neuron with no certifiable candidate (only non-finite bounds reach here) gets constant lines from
    # the exact image, which is always valid.
    f_min, f_max = act.image(lower, upper)
    bad_lo = ~np.isfinite(b_lo)
    bad_up = ~np.isfinite(b_up)
    a_lo = np.where(bad_lo, 0.0, a_lo)
    b_lo = np.where(bad_lo, f_min - margin, b_lo)
    a_up = np.where(bad_up, 0.0, a_up)
    b_up = np.where(bad_up, f_max + margin, b_up)
    return a_lo, b_lo, a_up, b_up
