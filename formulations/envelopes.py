"""Certified envelope lines of an activation on an interval (design.md, "Envelopes").

For a neuron with pre-activation bounds [l, u], a *lower* line ``z >= s*a + c`` and an *upper* line
``z <= s*a + c`` are valid on all of [l, u] iff the residual ``f(a) - (s*a + c)`` is >= 0 (resp. <= 0)
there. We never trust a line because of how it was chosen (a tangent/secant pair picked at the midpoint is
not valid across GELU's inflection points +-sqrt(2)); instead every line is *certified*: its residual's
exact extremes are computed (:meth:`Activation.residual_extremes`: endpoints, kinks and the points where
``f'(a) = s``) and the intercept is moved outward so that the residual keeps a margin ``LINE_MARGIN``.
A line whose extremes are not finite is dropped, never used.

Which lines: :func:`envelope` / :func:`envelope_arrays` take slopes from the single-neuron convex hull of
the graph (:func:`hull_slopes`: the hull's supporting line at the midpoint, its two end pieces, the
tangent-from-endpoint lines or the secant, then tangents spread over its curved part) and certify the
tightest line of each slope. The sequence is fixed per interval, so n lines are a prefix of n + 1 lines
and more lines never loosen the relaxation; as n grows the envelope tends to the hull.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from .activations import Activation, _bisect, get_activation
from .errors import InvalidInputError

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
    # The hull's supporting slopes at the midpoint (one per side) are the least-area lines of all: with them
    # among the candidates the pick below is optimal, not just the best of a few. Appended last so ties keep
    # the earlier candidates; rows with non-finite bounds get a placeholder (they fall back below).
    finite = np.isfinite(lower) & np.isfinite(upper) & (lower <= upper)
    l_ok, u_ok = np.where(finite, lower, 0.0), np.where(finite, upper, 0.0)
    hull = [hull_slopes(act, l_ok, u_ok, 1, side)[0][:, 0] for side in (LOWER, UPPER)]
    slopes = np.concatenate([slopes, np.stack(hull, axis=-1)], axis=-1)
    lo_b, up_b = lower[:, None], upper[:, None]
    # one pass of the residual's exact extremes certifies both sides (as certify_intercepts does per side)
    r_min, r_max = act.residual_extremes(slopes, np.zeros_like(slopes), lo_b, up_b)
    c_lo = np.where(np.isfinite(r_min), r_min - margin, np.nan)
    c_up = np.where(np.isfinite(r_max), r_max + margin, np.nan)
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


# -- the single-neuron convex hull ---------------------------------------------------------------------
#
# Which lines? For a slope s the tightest valid lower line is s*a + c(s) with c(s) = min_[l,u] f(a) - s*a,
# the residual's exact minimum, which is precisely what ``certify_intercepts`` computes from intercept 0.
# Every such line supports the convex envelope (lower hull) of the graph, and the hull is the supremum of
# them over s (Legendre-Fenchel: c(s) is minus the conjugate of f + indicator[l, u]). So an envelope is a
# choice of *slopes*; certification supplies the intercepts, and a line is valid because it was certified,
# never because of how its slope was chosen. The upper side is the same for -f (concave envelope).
#
# The hull's structure on [l, u] is known from its end slopes: the right derivative of the lower hull at l
# is min_{x in (l, u]} (f(x) - f(l)) / (x - l), attained where the line through (l, f(l)) touches the graph
# (the tangent-from-endpoint line of the classic construction, or the secant when it touches at u); the
# left derivative at u is max_{x in [l, u)} (f(u) - f(x)) / (u - x). Between the two touching points
# t_l <= t_u the hull follows the graph (a convex piece for every registered activation, which has at most
# one convex region: GELU, SiLU, sigmoid, tanh); outside them it is those two lines.


def _as_intervals(lower: Array, upper: Array) -> tuple[Array, Array]:
    """Finite float64 vectors with lower <= upper, or a typed error naming the first bad neuron."""
    lower = np.atleast_1d(np.asarray(lower, dtype=np.float64))
    upper = np.atleast_1d(np.asarray(upper, dtype=np.float64))
    if lower.shape != upper.shape or lower.ndim != 1:
        raise InvalidInputError(f"interval bounds must be two vectors of one shape, got {lower.shape} and {upper.shape}")
    bad = np.flatnonzero(~(np.isfinite(lower) & np.isfinite(upper)))
    if bad.size:
        i = int(bad[0])
        raise InvalidInputError(f"interval bounds must be finite: neuron {i} has [{lower[i]}, {upper[i]}]")
    bad = np.flatnonzero(lower > upper)
    if bad.size:
        i = int(bad[0])
        raise InvalidInputError(f"empty interval: neuron {i} has lower {lower[i]} > upper {upper[i]}")
    return lower, upper


def _anchor_slope(act: Activation, p: Array, lower: Array, upper: Array, pick_min: bool) -> tuple[Array, Array]:
    """Extreme slope of the chords from (p, f(p)) to the graph on [lower, upper], p an endpoint.

    The chord slope q(x) = (f(x) - f(p)) / (x - p) has q'(x) = h(x) / (x - p)^2 with
    h(x) = f'(x)(x - p) - (f(x) - f(p)), and h' = f''(x)(x - p) keeps one sign on each curvature region
    (p is an endpoint), so each region holds at most one stationary point of q: a bisection. The extreme
    of q is at the other endpoint, a kink, such a tangency point, or the limit f'(p) as x -> p.
    Returns (slope, touching point); among equal slopes the touching point farthest from p (the end of the
    hull's linear piece).
    """
    f_p = act.value(p)
    xs, qs = [], []

    def add(x: Array, valid: Array) -> None:
        d = x - p
        valid = valid & (d != 0)
        q = (act.value(x) - f_p) / np.where(valid, d, 1.0)
        xs.append(np.where(valid, x, p))
        qs.append(np.where(valid, q, np.nan))

    other = np.where(p == lower, upper, lower)
    add(other, np.ones(p.shape, dtype=bool))
    at_kink = np.zeros(p.shape, dtype=bool)
    for k in act.kinks:
        add(np.full(p.shape, k), (lower < k) & (k < upper))
        at_kink |= p == k
    edges = act.region_edges()
    for k, sign in enumerate(act.curvature):
        if sign == 0:
            continue  # affine region: q is monotone there, its extremes are the region's ends
        lo, hi = np.maximum(lower, edges[k]), np.minimum(upper, edges[k + 1])
        ok = lo < hi
        lo_, hi_ = np.where(ok, lo, p), np.where(ok, hi, p)

        def h(x: Array, p: Array = p, f_p: Array = f_p) -> Array:
            return act.slope(x) * (x - p) - (act.value(x) - f_p)

        ok &= h(lo_) * h(hi_) < 0.0
        root = p.copy()
        if ok.any():
            root[ok] = _bisect(lambda x, p=p[ok], f_p=f_p[ok]: h(x, p, f_p), lo_[ok], hi_[ok])
        add(root, ok)
    # the limit x -> p is f'(p), except at a kink where only one-sided derivatives exist
    xs.append(p.copy())
    qs.append(np.where(at_kink, np.nan, act.slope(p)))
    X, Q = np.stack(xs, axis=-1), np.stack(qs, axis=-1)
    fill = np.inf if pick_min else -np.inf
    Qf = np.where(np.isnan(Q), fill, Q)
    best = Qf.min(axis=-1) if pick_min else Qf.max(axis=-1)
    none = ~np.isfinite(best)  # a degenerate interval at a kink: any subgradient will do
    best = np.where(none, act.slope(p), best)
    tie = np.abs(Qf - best[:, None]) <= 1e-12 * (1.0 + np.abs(best[:, None]))
    dist = np.where(tie, np.abs(X - p[:, None]), -1.0)
    touch = X[np.arange(p.size), np.argmax(dist, axis=-1)]
    return best, np.where(none, p, touch)


def hull_endpoint_slopes(act: Activation | str, lower: Array, upper: Array,
                         side: str) -> tuple[Array, Array, Array, Array]:
    """The hull's end pieces on each [lower, upper]: ``(s_l, t_l, s_u, t_u)``.

    ``s_l`` is the slope of the lower (``side="lower"``: convex envelope) or upper (concave envelope) hull
    just right of ``lower``, and ``t_l`` the farthest point where the line through (lower, f(lower)) with that
    slope touches the graph: the tangent-from-endpoint line, or the secant when ``t_l == upper``, or the
    tangent at ``lower`` when ``t_l == lower``. Likewise ``s_u``, ``t_u`` from ``upper``. Vectorised.
    """
    act = get_activation(act)
    lower, upper = _as_intervals(lower, upper)
    if side not in (LOWER, UPPER):
        raise ValueError(f"side must be 'lower' or 'upper', got {side!r}")
    s_l, t_l = _anchor_slope(act, lower, lower, upper, pick_min=side == LOWER)
    s_u, t_u = _anchor_slope(act, upper, lower, upper, pick_min=side == UPPER)
    return s_l, t_l, s_u, t_u


def _van_der_corput(count: int) -> list[float]:
    """1/2, 1/4, 3/4, 1/8, 5/8, 3/8, 7/8, ...: every prefix is well spread, so point sets are nested."""
    out = []
    i = 1
    while len(out) < count:
        x, denom, n = 0.0, 1.0, i
        while n:
            denom *= 2.0
            x += (n & 1) / denom
            n >>= 1
        out.append(x)
        i += 1
    return out


def hull_slopes(act: Activation | str, lower: Array, upper: Array, n_lines: int, side: str) -> tuple[Array, Array]:
    """The first ``n_lines`` slopes of the hull sequence on each [lower, upper]: shape (n, n_lines), and kinds.

    The sequence is fixed per interval, so the lines for n are a prefix of the lines for n + 1 (nested sets:
    more lines never loosen the relaxation). It is:

    1. the hull's supporting slope at the midpoint m: the valid line with the highest (lower side) / lowest
       (upper side) value at m, which is the single line of least area between line and graph;
    2. the hull's piece at ``lower`` (tangent-from-endpoint line, or secant);
    3. the hull's piece at ``upper``;
    4. tangents at van der Corput points of the curved part [t_l, t_u] of the hull (duplicates of 1 when the
       hull is one secant, which is then exact).

    With 3 lines the hull is exact except on its curved part, where the gap shrinks as lines are added.
    """
    act = get_activation(act)
    if int(n_lines) != n_lines or n_lines < 1:
        raise InvalidInputError(f"the number of envelope lines must be a positive integer, got {n_lines!r}")
    lower, upper = _as_intervals(lower, upper)
    s_l, t_l, s_u, t_u = hull_endpoint_slopes(act, lower, upper, side)
    mid = 0.5 * (lower + upper)

    def piece_kind(touch: Array, anchor: Array, far: Array) -> Array:
        return np.where(touch == anchor, "tangent", np.where(touch == far, "secant", "hull"))

    k_l, k_u = piece_kind(t_l, lower, upper), piece_kind(t_u, upper, lower)
    on_left, on_right = mid <= t_l, mid >= t_u
    s_mid = np.where(on_left, s_l, np.where(on_right, s_u, act.slope(mid)))
    k_mid = np.where(on_left, k_l, np.where(on_right, k_u, "tangent"))
    cols, kinds = [s_mid, s_l, s_u], [k_mid, k_l, k_u]
    curved = t_l < t_u
    for theta in _van_der_corput(max(0, n_lines - 3)):
        x = t_l + theta * (t_u - t_l)
        cols.append(np.where(curved, act.slope(x), s_mid))
        kinds.append(np.where(curved, "tangent", k_mid))
    return np.stack(cols[:n_lines], axis=-1), np.stack(kinds[:n_lines], axis=-1)


def _side_arrays(act: Activation, lower: Array, upper: Array, n_lines: int, side: str,
                 margin: float) -> tuple[Array, Array, Array]:
    """Certified (slopes, intercepts, kinds) of shape (n, n_lines) for one side; uncertifiable lines become
    the constant line of the exact image (always valid), so there are never NaNs."""
    slopes, kinds = hull_slopes(act, lower, upper, n_lines, side)
    c = certify_intercepts(act, slopes, np.zeros_like(slopes), lower[:, None], upper[:, None], side, margin)
    f_min, f_max = act.image(lower, upper)
    const = (f_min - margin) if side == LOWER else (f_max + margin)
    bad = ~(np.isfinite(c) & np.isfinite(slopes))
    slopes = np.where(bad, 0.0, slopes)
    c = np.where(bad, const[:, None], c)
    kinds = np.where(bad, "constant", kinds)
    return slopes, c, kinds


def envelope_arrays(act: Activation | str, lower: Array, upper: Array, n_lines: int,
                    margin: float = LINE_MARGIN) -> tuple[Array, Array, Array, Array]:
    """Certified envelope lines of many neurons at once: ``(lo_slopes, lo_intercepts, up_slopes, up_intercepts)``,
    each of shape (n, n_lines), with ``lo_s*a + lo_c <= f(a) <= up_s*a + up_c`` on [lower, upper] for every
    column, each with ``margin`` to spare.

    The columns are the hull sequence of :func:`hull_slopes`; where it repeats a line (a secant hull, a
    degenerate interval ``lower == upper``) the row holds duplicates, never NaN, so the width is fixed.
    """
    act = get_activation(act)
    lower, upper = _as_intervals(lower, upper)
    lo_s, lo_c, _ = _side_arrays(act, lower, upper, n_lines, LOWER, margin)
    up_s, up_c, _ = _side_arrays(act, lower, upper, n_lines, UPPER, margin)
    return lo_s, lo_c, up_s, up_c


@dataclass(frozen=True)
class Envelope:
    """Certified lines of one neuron on [lower, upper]: ``max(lower_lines) <= f <= min(upper_lines)`` there."""

    lower_lines: tuple[CertifiedLine, ...]
    upper_lines: tuple[CertifiedLine, ...]

    def lower_bound(self, a: Array) -> Array:
        """The envelope's lower boundary max_j (s_j a + c_j)."""
        return np.max([line(a) for line in self.lower_lines], axis=0)

    def upper_bound(self, a: Array) -> Array:
        """The envelope's upper boundary min_j (s_j a + c_j)."""
        return np.min([line(a) for line in self.upper_lines], axis=0)


def _lines(slopes: Array, intercepts: Array, kinds: Array, lower: float, upper: float, side: str,
           margin: float) -> tuple[CertifiedLine, ...]:
    """One row of certified arrays as CertifiedLines, exact duplicates (same slope) merged, order kept."""
    best: dict[float, CertifiedLine] = {}
    tighter = max if side == LOWER else min
    for s, c, kind in zip(slopes.tolist(), intercepts.tolist(), kinds.tolist()):
        line = CertifiedLine(s, c, lower, upper, side, str(kind), margin, margin)
        old = best.get(s)
        best[s] = line if old is None or tighter(old.intercept, c) == c else old
    return tuple(best.values())


def envelopes(act: Activation | str, lower: Array, upper: Array, *, n_lower: int = 3, n_upper: int = 3,
              margin: float = LINE_MARGIN) -> list[Envelope]:
    """:func:`envelope` for many intervals at once (one vectorised certification)."""
    act = get_activation(act)
    lower, upper = _as_intervals(lower, upper)
    lo = _side_arrays(act, lower, upper, n_lower, LOWER, margin)
    up = _side_arrays(act, lower, upper, n_upper, UPPER, margin)
    return [
        Envelope(_lines(*(x[i] for x in lo), float(lower[i]), float(upper[i]), LOWER, margin),
                 _lines(*(x[i] for x in up), float(lower[i]), float(upper[i]), UPPER, margin))
        for i in range(lower.size)
    ]


def envelope(act: Activation | str, lower: float, upper: float, *, n_lower: int = 3, n_upper: int = 3,
             margin: float = LINE_MARGIN) -> Envelope:
    """Certified lines of the single-neuron convex hull of ``f`` on [lower, upper] (design.md, "Envelopes").

    At most ``n_lower`` / ``n_upper`` lines per side (exact duplicates merged, so a secant hull is one line),
    at least one. Lines are the prefix of :func:`hull_slopes`' sequence, hence nested: the lines for n are
    among those for n + 1 and the relaxation never loosens as n grows. Each line is the tightest valid one
    of its slope, certified with ``margin``; on a convex piece the lower lines are tangents and the upper
    line the secant; across inflection points the end pieces are tangent-from-endpoint lines.
    """
    if np.ndim(lower) or np.ndim(upper):
        raise InvalidInputError("envelope() takes one interval; use envelopes() or envelope_arrays() for many")
    return envelopes(act, lower, upper, n_lower=n_lower, n_upper=n_upper, margin=margin)[0]


def hull_gap(act: Activation | str, lower: float, upper: float,
             lines: Envelope | Iterable[CertifiedLine], *, samples: int = 4097) -> float:
    """Largest vertical distance between the envelope and the graph on [lower, upper] (a measure for
    reports, sampled on a grid plus the activation's critical points; not a certificate)."""
    act = get_activation(act)
    lines = list(lines.lower_lines + lines.upper_lines) if isinstance(lines, Envelope) else list(lines)
    lower, upper = float(lower), float(upper)
    crit = [p for p in (*act.inflections, *act.stationary, *act.kinks) if lower <= p <= upper]
    x = np.concatenate([np.linspace(lower, upper, samples), crit])
    f = act.value(x)
    gap = 0.0
    lo = [line(x) for line in lines if line.side == LOWER]
    up = [line(x) for line in lines if line.side == UPPER]
    if lo:
        gap = max(gap, float(np.max(f - np.max(lo, axis=0))))
    if up:
        gap = max(gap, float(np.max(np.min(up, axis=0) - f)))
    return gap


# Intervals farther out than this take the general certification: the closed form's rounding (~1e-16 of the
# values) must stay far below LINE_MARGIN.
_CLOSED_FORM_RANGE = 1e3


def one_curvature(act: Activation, lower: Array, upper: Array) -> Array:
    """Per interval, the sign of the activation's curvature where [lower, upper] holds no inflection point
    inside (+1 convex, -1 concave, 0 linear), or NaN where it straddles one or is not a small finite interval."""
    act = get_activation(act)
    lower, upper = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    points = np.asarray(act.inflections, dtype=np.float64)
    left = np.searchsorted(points, lower, side="right")  # the region just right of lower
    right = np.searchsorted(points, upper, side="left")  # the region just left of upper
    signs = np.asarray(act.curvature, dtype=np.float64)[np.minimum(left, len(act.curvature) - 1)]
    ok = (((left == right) | (lower == upper)) & np.isfinite(lower) & np.isfinite(upper) & (lower <= upper)
          & (np.abs(lower) <= _CLOSED_FORM_RANGE) & (np.abs(upper) <= _CLOSED_FORM_RANGE) & ~act.piecewise_linear)
    return np.where(ok, signs, np.nan)


def curvature_lines(act: Activation | str, lower: Array, upper: Array, n_lines: int,
                    margin: float = LINE_MARGIN) -> tuple[Array, Array, Array, Array]:
    """Envelope lines in closed form on intervals of one curvature sign (:func:`one_curvature`): on a convex
    piece every tangent lies below the graph and the secant above it (the secant *is* the upper hull), on a
    concave piece the reverse, so the lines are valid by convexity and need no search for the residual's
    extremes. Tangents at ``n_lines`` points spread over [lower, upper], endpoints included; each line moved
    outward by ``margin`` (which also absorbs the rounding of f and f'). Shapes (n, n_lines); intervals that
    are not of one curvature sign get NaN (the caller certifies those with :func:`envelope_arrays`)."""
    act = get_activation(act)
    lower = np.atleast_1d(np.asarray(lower, dtype=np.float64))
    upper = np.atleast_1d(np.asarray(upper, dtype=np.float64))
    sign = one_curvature(act, lower, upper)
    lo, up = np.where(np.isnan(sign), 0.0, lower), np.where(np.isnan(sign), 0.0, upper)
    t = lo[:, None] + np.linspace(0.0, 1.0, n_lines)[None, :] * (up - lo)[:, None]
    t_s = act.slope(t)
    t_c = act.value(t) - t_s * t
    width = up - lo
    f_lo, f_up = act.value(lo), act.value(up)
    sec_s = np.where(width > 1e-12, (f_up - f_lo) / np.where(width > 1e-12, width, 1.0), act.slope(0.5 * (lo + up)))
    sec_c = np.where(width > 1e-12, f_lo - sec_s * lo, act.value(0.5 * (lo + up)) - sec_s * 0.5 * (lo + up))
    sec_s, sec_c = np.repeat(sec_s[:, None], n_lines, axis=1), np.repeat(sec_c[:, None], n_lines, axis=1)
    convex = (sign >= 0)[:, None]  # linear pieces: both families are the line itself
    concave = (sign <= 0)[:, None]
    lo_s, lo_c = np.where(convex, t_s, sec_s), np.where(convex, t_c, sec_c) - margin
    up_s, up_c = np.where(concave, t_s, sec_s), np.where(concave, t_c, sec_c) + margin
    bad = np.isnan(sign)[:, None]
    nan = np.full_like(lo_s, np.nan)
    return (np.where(bad, nan, lo_s), np.where(bad, nan, lo_c), np.where(bad, nan, up_s), np.where(bad, nan, up_c))
