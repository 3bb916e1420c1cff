"""Sound piecewise-linear relaxations of smooth activations over segments (design.md, "Exact encodings").

The interval [l, u] of a neuron is cut into segments; every segment carries certified lower and upper lines
(:mod:`formulations.envelopes`) valid on *its* sub-interval, so the union of the segments' bands contains
the graph of f on [l, u]. A mixed-integer encoding choosing one segment per neuron therefore relaxes the
true network and its optimum is a sound bound; refining (splitting) the segments around the optimum makes
the bands, and so the bound, as tight as wanted.

The formulation (multiple choice, the disjunctive "convex hull" formulation of a union of polytopes: Balas,
"Disjunctive programming", 1979/1998; Jeroslow & Lowe 1984; Vielma, "Mixed integer linear programming
formulation techniques", SIAM Review 57(1), 2015, §4 eq. (9)): for a neuron with pre-activation z,
post-activation a and segments s = 1..S with interval [lo_s, hi_s], lower lines (α_sj, β_sj) and upper lines
(γ_sj, δ_sj),

    d_s in {0, 1},   sum_s d_s = 1,
    z = sum_s z_s,   a = sum_s a_s,
    lo_s d_s <= z_s <= hi_s d_s,
    a_s >= α_sj z_s + β_sj d_s     for every lower line j of segment s,
    a_s <= γ_sj z_s + δ_sj d_s     for every upper line j of segment s,
    (optional, valid and tightening)  fmin_s d_s <= a_s <= fmax_s d_s   with [fmin_s, fmax_s] = f's image.

With d_s = 1 segment s's rows are its band on [lo_s, hi_s]; every other segment t has d_t = 0, hence
z_t = 0 and 0 <= a_t <= 0 (it has at least one line per side). So the mixed-integer feasible set is exactly
the union of the bands, and its LP relaxation is the convex hull of that union (the formulation is ideal).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .activations import Activation, get_activation
from .envelopes import (
    LINE_MARGIN,
    LOWER,
    UPPER,
    CertifiedLine,
    _as_intervals,
    _side_arrays,
    envelopes,
)
from .errors import InvalidInputError

Array = np.ndarray


@dataclass(frozen=True)
class Segment:
    """A piece [lower, upper] of a neuron's interval and its band: on it,
    ``max(lower_lines) <= f <= min(upper_lines)`` (each line certified on this piece, with its margin) and
    ``value_range[0] <= f <= value_range[1]`` (the exact image of the piece, ``Activation.image``)."""

    lower: float
    upper: float
    lower_lines: tuple[CertifiedLine, ...]
    upper_lines: tuple[CertifiedLine, ...]
    value_range: tuple[float, float]

    @property
    def width(self) -> float:
        return self.upper - self.lower

    def contains(self, x: float) -> bool:
        return self.lower <= x <= self.upper

    def lower_bound(self, a: Array) -> Array:
        """The band's lower boundary max_j (s_j a + c_j)."""
        return np.max([line(a) for line in self.lower_lines], axis=0)

    def upper_bound(self, a: Array) -> Array:
        """The band's upper boundary min_j (s_j a + c_j)."""
        return np.min([line(a) for line in self.upper_lines], axis=0)


def make_segments(act: Activation | str, breakpoints: Sequence[float], *, lines_per_side: int = 2,
                  margin: float = LINE_MARGIN) -> tuple[Segment, ...]:
    """Segments between consecutive ``breakpoints`` (sorted; a single point gives one degenerate segment),
    each with up to ``lines_per_side`` certified hull lines per side (one vectorised certification)."""
    act = get_activation(act)
    b = np.asarray(breakpoints, dtype=np.float64).ravel()
    if b.size == 0:
        raise InvalidInputError("segments need at least one breakpoint")
    if b.size == 1:
        b = np.repeat(b, 2)
    lo, hi = _as_intervals(b[:-1], b[1:])  # rejects unsorted or non-finite breakpoints
    f_min, f_max = act.image(lo, hi)
    envs = envelopes(act, lo, hi, n_lower=lines_per_side, n_upper=lines_per_side, margin=margin)
    return tuple(
        Segment(float(lo[i]), float(hi[i]), e.lower_lines, e.upper_lines, (float(f_min[i]), float(f_max[i])))
        for i, e in enumerate(envs)
    )


def uniform_segments(act: Activation | str, lower: float, upper: float, k: int, *, lines_per_side: int = 2,
                     margin: float = LINE_MARGIN) -> tuple[Segment, ...]:
    """``k`` segments of equal width on [lower, upper] (one segment when lower == upper)."""
    if int(k) != k or k < 1:
        raise InvalidInputError(f"the number of segments must be a positive integer, got {k!r}")
    lower, upper = (float(v[0]) for v in _as_intervals(lower, upper))
    points = np.linspace(lower, upper, int(k) + 1) if upper > lower else np.array([lower])
    points[-1] = upper  # linspace's last point is exact, but make it explicit: segments cover [l, u]
    return make_segments(act, points, lines_per_side=lines_per_side, margin=margin)


def critical_points(act: Activation | str, lower: float, upper: float) -> list[float]:
    """Inflections, stationary points and kinks strictly inside (lower, upper), sorted."""
    act = get_activation(act)
    pts = {float(p) for p in (*act.inflections, *act.stationary, *act.kinks) if lower < p < upper}
    return sorted(pts)


def curvature_segments(act: Activation | str, lower: float, upper: float, *, lines_per_side: int = 2,
                       max_width: float | None = None, margin: float = LINE_MARGIN) -> tuple[Segment, ...]:
    """Segments split at the inflections, stationary points and kinks inside [lower, upper].

    On each such piece f is monotone with one curvature sign, so its band is the hull of a convex (or
    concave) monotone arc: tangents on one side and the secant on the other. Pieces wider than
    ``max_width`` (if given) are further cut into equal parts.
    """
    lower, upper = (float(v[0]) for v in _as_intervals(lower, upper))
    edges = [lower, *critical_points(act, lower, upper), upper]
    points = [lower]
    for a, b in zip(edges[:-1], edges[1:]):
        parts = 1
        if max_width is not None:
            if not max_width > 0:
                raise InvalidInputError(f"max_width must be positive, got {max_width!r}")
            parts = max(1, int(np.ceil((b - a) / max_width)))
        points.extend(np.linspace(a, b, parts + 1)[1:-1].tolist())
        points.append(b)
    if upper == lower:
        points = [lower]
    return make_segments(act, points, lines_per_side=lines_per_side, margin=margin)


def _check_segments(segments: Sequence[Segment]) -> tuple[Segment, ...]:
    segments = tuple(segments)
    if not segments:
        raise InvalidInputError("no segments")
    for i, (a, b) in enumerate(zip(segments[:-1], segments[1:])):
        if a.upper != b.lower:
            raise InvalidInputError(f"segments {i} and {i + 1} do not meet: [{a.lower}, {a.upper}] then [{b.lower}, {b.upper}]")
    return segments


def _lines_per_side(segment: Segment, lines_per_side: int | None) -> int:
    if lines_per_side is not None:
        return lines_per_side
    return max(len(segment.lower_lines), len(segment.upper_lines))


def split_segment(act: Activation | str, segments: Sequence[Segment], index: int, at: float | None = None, *,
                  lines_per_side: int | None = None, margin: float = LINE_MARGIN) -> tuple[Segment, ...]:
    """``segments`` with segment ``index`` split at ``at`` (default its midpoint) into two new segments with
    freshly certified lines; the other segments are returned unchanged (the same objects).

    ``lines_per_side`` defaults to the larger line count of the split segment.
    """
    segments = _check_segments(segments)
    if not -len(segments) <= index < len(segments):
        raise InvalidInputError(f"segment index {index} out of range for {len(segments)} segments")
    index %= len(segments)
    seg = segments[index]
    at = 0.5 * (seg.lower + seg.upper) if at is None else float(at)
    if not seg.lower < at < seg.upper:
        raise InvalidInputError(f"split point {at} is not strictly inside segment {index} [{seg.lower}, {seg.upper}]")
    halves = make_segments(act, [seg.lower, at, seg.upper], lines_per_side=_lines_per_side(seg, lines_per_side),
                           margin=margin)
    return segments[:index] + halves + segments[index + 1:]


def refine_at(act: Activation | str, segments: Sequence[Segment], x: float, *, edge_fraction: float = 1e-3,
              lines_per_side: int | None = None, margin: float = LINE_MARGIN) -> tuple[Segment, ...]:
    """Split the segment containing ``x`` at ``x``, so that ``x`` becomes a breakpoint.

    When ``x`` lies within ``edge_fraction`` of a segment's width from its edge (no sliver segments) the
    segment(s) touching ``x`` are split at their midpoints instead: both neighbours when ``x`` is a shared
    breakpoint, since either may hold a point there. Degenerate (zero-width) segments are left alone.
    A point outside the interval by no more than a solver's tolerance counts as the nearest end; farther
    out is an :class:`InvalidInputError`.
    """
    segments = _check_segments(segments)
    x, lo, hi = float(x), segments[0].lower, segments[-1].upper
    # A solver's point may leave [lo, hi] by its feasibility tolerance (~1e-6): such a point is at the edge.
    slack = 1e-5 * (1.0 + abs(lo) + abs(hi))
    if not lo - slack <= x <= hi + slack:
        raise InvalidInputError(f"point {x} is outside the segments' interval [{lo}, {hi}]")
    x = min(max(x, lo), hi)
    holders = [i for i, s in enumerate(segments) if s.contains(x)]
    inside = [i for i in holders
              if segments[i].lower + edge_fraction * segments[i].width < x < segments[i].upper - edge_fraction * segments[i].width]
    if inside:
        return split_segment(act, segments, inside[0], x, lines_per_side=lines_per_side, margin=margin)
    out = segments
    for i in reversed(holders):  # right to left, so earlier indices stay valid
        if out[i].width > 0:
            out = split_segment(act, out, i, lines_per_side=lines_per_side, margin=margin)
    return out


def band_width(act: Activation | str, segment: Segment) -> float:
    """Largest vertical width min_j upper_j(a) - max_i lower_i(a) of the segment's band, exactly.

    The width is concave and piecewise linear in a (a minimum of lines minus a maximum of lines), so its
    maximum over [lower, upper] is at an end or at a breakpoint of either boundary, i.e. at an
    intersection of two lines of one side; we evaluate exactly those points. ``act`` is accepted for
    symmetry with the other segment functions (the width depends on the lines only).
    """
    del act
    points = [segment.lower, segment.upper]
    for lines in (segment.lower_lines, segment.upper_lines):
        s = np.array([line.slope for line in lines])
        c = np.array([line.intercept for line in lines])
        ds = s[:, None] - s[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            x = (c[None, :] - c[:, None]) / ds
        ok = (ds != 0) & np.isfinite(x) & (x > segment.lower) & (x < segment.upper)
        points.extend(x[ok].tolist())
    a = np.array(points)
    return float(np.max(segment.upper_bound(a) - segment.lower_bound(a)))


@dataclass(frozen=True)
class PiecewiseRelaxation:
    """The arrays of one neuron's multiple-choice encoding (module docstring), S segments, K lines per side.

    breakpoints (S+1,): the segments' ends, lo_s = breakpoints[s], hi_s = breakpoints[s+1];
    lower_slopes, lower_intercepts (S, K_lo): the rows a_s >= α z_s + β d_s;
    upper_slopes, upper_intercepts (S, K_up): the rows a_s <= γ z_s + δ d_s;
    value_lower, value_upper (S,): the exact image of f on each segment (rows fmin_s d_s <= a_s <= fmax_s d_s).
    Rows of a segment with fewer distinct lines than K repeat one of its lines (never NaN).
    """

    breakpoints: Array
    lower_slopes: Array
    lower_intercepts: Array
    upper_slopes: Array
    upper_intercepts: Array
    value_lower: Array
    value_upper: Array

    @property
    def n_segments(self) -> int:
        return self.breakpoints.size - 1

    def contains(self, z: Array, a: Array, tol: float = 0.0) -> Array:
        """Whether the points (z, a) lie in the union of the bands (the projection of the MIP's feasible set)."""
        z = np.asarray(z, dtype=np.float64)[..., None]
        a = np.asarray(a, dtype=np.float64)[..., None]
        lo, hi = self.breakpoints[:-1], self.breakpoints[1:]
        ok = (lo - tol <= z) & (z <= hi + tol)
        ok &= (self.value_lower - tol <= a) & (a <= self.value_upper + tol)
        ok &= np.all(a[..., None] >= self.lower_slopes * z[..., None] + self.lower_intercepts - tol, axis=-1)
        ok &= np.all(a[..., None] <= self.upper_slopes * z[..., None] + self.upper_intercepts + tol, axis=-1)
        return ok.any(axis=-1)


def _padded(lines_per_segment: list[tuple[CertifiedLine, ...]]) -> tuple[Array, Array]:
    k = max(len(lines) for lines in lines_per_segment)
    rows = [list(lines) + [lines[0]] * (k - len(lines)) for lines in lines_per_segment]
    return (np.array([[line.slope for line in row] for row in rows]),
            np.array([[line.intercept for line in row] for row in rows]))


def relaxation(segments: Sequence[Segment]) -> PiecewiseRelaxation:
    """The multiple-choice arrays of contiguous ``segments``."""
    segments = _check_segments(segments)
    lo_s, lo_c = _padded([s.lower_lines for s in segments])
    up_s, up_c = _padded([s.upper_lines for s in segments])
    return PiecewiseRelaxation(
        breakpoints=np.array([segments[0].lower, *(s.upper for s in segments)]),
        lower_slopes=lo_s, lower_intercepts=lo_c, upper_slopes=up_s, upper_intercepts=up_c,
        value_lower=np.array([s.value_range[0] for s in segments]),
        value_upper=np.array([s.value_range[1] for s in segments]),
    )


def uniform_relaxations(act: Activation | str, lower: Array, upper: Array, k: int, *, lines_per_side: int = 2,
                        margin: float = LINE_MARGIN) -> list[PiecewiseRelaxation]:
    """:func:`relaxation` of :func:`uniform_segments` for many neurons at once (one vectorised certification
    of all n*k segments). A degenerate neuron (lower == upper) gets k copies of its one point."""
    act = get_activation(act)
    if int(k) != k or k < 1:
        raise InvalidInputError(f"the number of segments must be a positive integer, got {k!r}")
    lower, upper = _as_intervals(lower, upper)
    n, k = lower.size, int(k)
    t = np.linspace(0.0, 1.0, k + 1)
    points = lower[:, None] + t[None, :] * (upper - lower)[:, None]
    points[:, -1] = upper
    lo, hi = points[:, :-1].ravel(), points[:, 1:].ravel()
    lo_s, lo_c, _ = _side_arrays(act, lo, hi, lines_per_side, LOWER, margin)
    up_s, up_c, _ = _side_arrays(act, lo, hi, lines_per_side, UPPER, margin)
    f_min, f_max = act.image(lo, hi)
    shape = (n, k, lines_per_side)
    lo_s, lo_c, up_s, up_c = (x.reshape(shape) for x in (lo_s, lo_c, up_s, up_c))
    f_min, f_max = f_min.reshape(n, k), f_max.reshape(n, k)
    return [PiecewiseRelaxation(points[i], lo_s[i], lo_c[i], up_s[i], up_c[i], f_min[i], f_max[i]) for i in range(n)]
