"""Multi-neuron relaxations: the joint convex hull of k neurons of one layer (k-ReLU / kPoly, PRIMA).

Singh, Ganvir, Püschel & Vechev, "Beyond the Single Neuron Convex Barrier for Neural Network Certification"
(NeurIPS 2019), §3-4: for a group of k neurons of one layer with pre-activations ``x`` (k-vector),

1. the **input polyhedron** ``P`` bounds every octagonal direction ``a . x`` (``a`` in {-1, 0, 1}^k, one of each
   sign pair: ``(3^k - 1) / 2`` directions, the unit ones being the neurons' own bounds) by an LP over the
   relaxation of the layers below (the caller solves those LPs; here ``P`` is the given numbers);
2. the activation's graph over ``P`` is split into **branches** — for ReLU the 2^k orthants (``y_u = x_u`` or
   ``y_u = 0``), for a smooth activation the products of each neuron's segments (PRIMA-style, Müller et al.,
   POPL 2022), each segment carrying a line (its secant) whose residual is bounded exactly in step 4;
3. the joint hull of the branches is computed from their vertices (every vertex of ``P ∩ branch box`` with
   ``y`` on the branch's lines), its facets by Qhull (:class:`scipy.spatial.ConvexHull`);
4. **every facet is certified before use** (:func:`certify_facets`): a facet ``alpha . x + beta . y <= rhs`` is
   a sum of per-neuron terms; on a segment, ``beta_u f(x_u) <= beta_u (s x_u + c + r)`` with ``r`` the exact
   extreme of the residual ``f - (s x + c)`` over that segment
   (:meth:`formulations.activations.Activation.residual_extremes`, the envelopes' own machinery), so the facet's
   maximum over the graph on ``P`` is at most the maximum of a linear function over each branch polytope —
   attained at one of its vertices. The right-hand side is that maximum, moved outward by a margin for the
   vertices' rounding (:data:`VERTEX_MARGIN`). Qhull's own offsets are never used: Qhull only proposes the
   directions, so a joggled or inexact hull costs tightness, not soundness.

For ReLU the branch lines are exact (``r = 0``) and the certified facets are those of the exact hull
(up to the margin). Everything here is NumPy on k <= 3 (dimension 2k <= 6); LPs are the caller's.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .activations import Activation, get_activation
from .envelopes import LINE_MARGIN, linear_bounds

Array = np.ndarray
#: Feasibility tolerance (relative to the row's scale) of a candidate vertex: a looser test only adds points
#: just outside a branch polytope, which moves facets outward.
FEASIBILITY = 1e-9
#: Outward margin of a certified facet, relative to ``|coefficients|_1 * (1 + max |vertex|)``: it covers the
#: rounding of the vertices (solutions of k x k systems with entries in {-1, 0, 1}, errors ~1e-15).
VERTEX_MARGIN = 1e-9
#: The absolute part of the same margin.
ABS_MARGIN = 1e-9
#: Two Qhull normals closer than this (after rounding) are one facet.
NORMAL_DIGITS = 9


@lru_cache(maxsize=None)
def octagon_directions(k: int) -> Array:
    """The (3^k - 1) / 2 octagonal directions of k neurons: vectors in {-1, 0, 1}^k, first nonzero entry +1.

    The unit vectors come first (their bounds are the neurons' own), then the rest."""
    dirs = [np.array(a, dtype=np.float64) for a in itertools.product((-1, 0, 1), repeat=k)]
    dirs = [a for a in dirs if np.any(a) and a[np.flatnonzero(a)[0]] > 0]
    dirs.sort(key=lambda a: (int(np.count_nonzero(a)), tuple(-a)))
    out = np.array(dirs)
    out.setflags(write=False)
    return out


@dataclass(frozen=True)
class Piece:
    """One segment [lower, upper] of a neuron's pre-activation with a lower and an upper line on it."""

    lower: float
    upper: float
    lo_slope: float
    lo_icpt: float
    up_slope: float
    up_icpt: float


def neuron_pieces(act: Activation | str, l: float, u: float, pieces: int = 4) -> tuple[Piece, ...]:
    """A neuron's branches on [l, u]: ReLU's two phases (exact lines); a smooth activation's ``pieces``
    equal segments, each with its secant as both lines. The lines need not be valid for soundness:
    :func:`certify_facets` re-derives the residual's exact extremes on each segment, and a narrower segment
    makes that residual (the linearisation error, ~ width^2 |f''| / 8) smaller."""
    act = get_activation(act)
    l, u = float(l), float(u)
    if act.name == "relu":
        if u <= 0.0:
            return (Piece(l, u, 0.0, 0.0, 0.0, 0.0),)
        if l >= 0.0:
            return (Piece(l, u, 1.0, 0.0, 1.0, 0.0),)
        return Piece(l, 0.0, 0.0, 0.0, 0.0, 0.0), Piece(0.0, u, 1.0, 0.0, 1.0, 0.0)
    if u - l <= 0.0:
        return (Piece(l, u, *_point_lines(act, l)),)
    cuts = np.linspace(l, u, pieces + 1)
    cuts[0], cuts[-1] = l, u
    f = act.value(cuts)
    out = []
    for a, b, fa, fb in zip(cuts[:-1], cuts[1:], f[:-1], f[1:]):
        s = (fb - fa) / (b - a)
        c = fa - s * a
        out.append(Piece(float(a), float(b), float(s), float(c), float(s), float(c)))
    return tuple(out)


def _point_lines(act: Activation, x: float) -> tuple[float, float, float, float]:
    f = float(act.value(np.float64(x)))
    return 0.0, f, 0.0, f


def polytope_vertices(A: Array, b: Array) -> Array:
    """The vertices of the bounded polytope ``{x : A x <= b}`` in k <= 3 dimensions, by enumeration of the
    k-subsets of rows (every vertex of a pointed polyhedron has k linearly independent active rows).

    Returns (n, k), possibly with near-duplicates; empty (0, k) when the polytope is empty."""
    pts = polytope_vertices_many(A, np.asarray(b, dtype=np.float64)[None, :])[0]
    return np.unique(np.round(pts, 12), axis=0) if pts.shape[0] > 1 else pts


def polytope_vertices_many(A: Array, bs: Array) -> list[Array]:
    """:func:`polytope_vertices` of ``{x : A x <= b}`` for every row ``b`` of ``bs`` (B, m): one rows matrix
    (the branches of a group share it, only their segment bounds differ), so the k x k systems of its
    k-subsets of rows are inverted once and every branch's candidate vertices are one batched product.

    Returns B arrays (n_b, k), possibly with duplicates."""
    m, k = A.shape
    B = bs.shape[0]
    subsets = _row_subsets(m, k)
    if subsets.size == 0:
        return [np.zeros((0, k)) for _ in range(B)]
    mats = A[subsets]
    ok = np.abs(np.linalg.det(mats)) > 1e-12
    if not ok.any():
        return [np.zeros((0, k)) for _ in range(B)]
    subsets, inv = subsets[ok], np.linalg.inv(mats[ok])      # (S, k), (S, k, k)
    pts = np.einsum("sij,bsj->bsi", inv, bs[:, subsets])       # (B, S, k)
    row_norm = np.abs(A).sum(axis=1)                            # (m,)
    act = np.einsum("bsi,mi->bsm", pts, A)                      # (B, S, m)
    scale = 1.0 + np.abs(bs)[:, None, :] + row_norm[None, None, :] * np.abs(pts).max(axis=2, keepdims=True)
    feasible = np.all(act - bs[:, None, :] <= FEASIBILITY * scale, axis=2)  # (B, S)
    return [pts[q][feasible[q]] for q in range(B)]


@lru_cache(maxsize=None)
def _row_subsets(m: int, k: int) -> Array:
    out = np.array(list(itertools.combinations(range(m), k)), dtype=np.int64).reshape(-1, k)
    out.setflags(write=False)
    return out


def _branch_rows(dirs: Array, lower: Array, upper: Array, pieces: tuple[Piece, ...]) -> tuple[Array, Array]:
    """Rows ``A x <= b`` of ``P ∩ (product of the pieces' segments)``."""
    k = dirs.shape[1]
    eye = np.eye(k)
    seg_lo = np.array([p.lower for p in pieces])
    seg_hi = np.array([p.upper for p in pieces])
    fin_up, fin_lo = np.isfinite(upper), np.isfinite(lower)
    A = np.vstack([dirs[fin_up], -dirs[fin_lo], eye, -eye])
    b = np.concatenate([upper[fin_up], -lower[fin_lo], seg_hi, -seg_lo])
    return A, b


def branches(act: Activation | str, dirs: Array, lower: Array, upper: Array, neuron_bounds: Array,
             pieces: int = 4):
    """Per branch (a choice of one piece per neuron): its pieces and the vertices (in x) of its polytope.

    ``neuron_bounds``: (k, 2) the neurons' [l, u]; ``lower``/``upper``: the bounds of ``dirs . x`` (P)."""
    per_neuron = [neuron_pieces(act, l, u, pieces) for l, u in neuron_bounds]
    combos = list(itertools.product(*per_neuron))
    if not combos:
        return []
    rows = [_branch_rows(dirs, lower, upper, combo) for combo in combos]
    A = rows[0][0]  # the same for every branch: P's finite rows and the k segment boxes
    verts = polytope_vertices_many(A, np.array([b for _, b in rows]))
    return [(combo, v) for combo, v in zip(combos, verts) if v.shape[0]]


def _branch_points(combo: tuple[Piece, ...], verts: Array) -> Array:
    """Points (x, y) of one branch: each x vertex with every choice of y on a piece's lower or upper line."""
    k = len(combo)
    lo_s = np.array([p.lo_slope for p in combo]); lo_c = np.array([p.lo_icpt for p in combo])
    up_s = np.array([p.up_slope for p in combo]); up_c = np.array([p.up_icpt for p in combo])
    y_lo, y_up = verts * lo_s + lo_c, verts * up_s + up_c
    pts = []
    for choice in itertools.product((0, 1), repeat=k):
        pick = np.array(choice, dtype=bool)
        pts.append(np.hstack([verts, np.where(pick, y_up, y_lo)]))
    return np.unique(np.vstack(pts), axis=0)


def hull_directions(points: Array) -> Array:
    """Outward facet normals of the convex hull of ``points`` (n, 2k), unit length, from Qhull (joggled
    when the points are degenerate). Only directions: their offsets are certified separately."""
    from scipy.spatial import ConvexHull, QhullError

    if points.shape[0] <= points.shape[1]:
        return np.zeros((0, points.shape[1]))
    try:
        hull = ConvexHull(points)
    except QhullError:
        try:
            hull = ConvexHull(points, qhull_options="QJ")
        except QhullError:
            return np.zeros((0, points.shape[1]))
    normals = hull.equations[:, :-1]
    normals = normals / np.linalg.norm(normals, axis=1, keepdims=True)
    return np.unique(np.round(normals, NORMAL_DIGITS), axis=0)


def certify_facets(act: Activation | str, alpha: Array, beta: Array, branch_list,
                   residuals: dict | None = None) -> Array:
    """Sound right-hand sides of the rows ``alpha . x + beta . y <= rhs`` over the graph ``y = f(x)``, x in P.

    For every branch (pieces and vertices of ``P ∩ segments``) and neuron u, the term ``beta_u f(x_u) +
    alpha_u x_u`` is bounded on the piece by the line ``(alpha_u + beta_u s) x_u + beta_u (c + r)`` where
    ``(s, c)`` is the piece's upper line if ``beta_u >= 0`` (``r`` = exact max of ``f - s x - c`` on the
    piece) else its lower line (``r`` = exact min). The sum is linear, so its maximum over the branch
    polytope is at a vertex. The result is the maximum over branches and vertices plus :data:`VERTEX_MARGIN`.

    Args: alpha, beta: (F, k). residuals: a cache ``{(piece, upper line?): r}`` of the exact residual
        extremes, shared by calls on the same pieces (a neuron's pieces in several groups); filled here.
    Returns (F,) right-hand sides (-inf if no branch is feasible).
    """
    act = get_activation(act)
    F = alpha.shape[0]
    rhs = np.full(F, -np.inf)
    scale = np.abs(alpha).sum(axis=1) + np.abs(beta).sum(axis=1)
    residuals = {} if residuals is None else residuals
    # the exact extremes of every piece's residual f - (s x + c), the pieces not yet known in one vectorised call
    pieces = [p for p in dict.fromkeys(p for combo, _ in branch_list for p in combo) if (p, True) not in residuals]
    if pieces:
        s_all = np.array([p.up_slope for p in pieces] + [p.lo_slope for p in pieces])
        c_all = np.array([p.up_icpt for p in pieces] + [p.lo_icpt for p in pieces])
        l_all = np.array([p.lower for p in pieces] * 2)
        u_all = np.array([p.upper for p in pieces] * 2)
        r_min, r_max = act.residual_extremes(s_all, c_all, l_all, u_all)
        n = len(pieces)
        up_r = np.where(np.isfinite(r_max[:n]), r_max[:n], np.inf)   # upper line: max of the residual
        lo_r = np.where(np.isfinite(r_min[n:]), r_min[n:], -np.inf)  # lower line: min of the residual
        residuals.update({(p, True): float(up_r[q]) for q, p in enumerate(pieces)})
        residuals.update({(p, False): float(lo_r[q]) for q, p in enumerate(pieces)})

    def residual(p: Piece, up: bool) -> float:
        return residuals[(p, up)]

    for combo, verts in branch_list:
        k = len(combo)
        slope = np.empty((F, k)); const = np.empty((F, k))
        for u, p in enumerate(combo):
            up = beta[:, u] >= 0.0
            s = np.where(up, p.up_slope, p.lo_slope)
            c = np.where(up, p.up_icpt, p.lo_icpt)
            r = np.where(up, residual(p, True), residual(p, False))
            slope[:, u] = alpha[:, u] + beta[:, u] * s
            with np.errstate(invalid="ignore"):
                const[:, u] = np.where(beta[:, u] == 0.0, 0.0, beta[:, u] * (c + r))
        value = (verts @ slope.T).max(axis=0) + const.sum(axis=1)  # (F,)
        size = 1.0 + np.abs(verts).max()
        rhs = np.maximum(rhs, value + VERTEX_MARGIN * scale * size + ABS_MARGIN)
    return rhs


@dataclass(frozen=True)
class GroupFacets:
    """Certified rows ``alpha . x + beta . y <= rhs`` over a group's pre-activations x and outputs y."""

    neurons: tuple[int, ...]
    alpha: Array  # (F, k)
    beta: Array   # (F, k)
    rhs: Array    # (F,)

    @property
    def count(self) -> int:
        return int(self.rhs.shape[0])

    def violation(self, x: Array, y: Array) -> Array:
        """Max over facets of ``alpha . x + beta . y - rhs`` for points (n, k), (n, k): <= 0 when satisfied."""
        return (x @ self.alpha.T + y @ self.beta.T - self.rhs[None, :]).max(axis=1)


def group_facets(act: Activation | str, neurons: tuple[int, ...], neuron_bounds: Array, lower: Array,
                 upper: Array, *, dirs: Array | None = None, max_facets: int | None = None,
                 pieces: int = 4, residuals: dict | None = None) -> GroupFacets:
    """The certified joint-hull facets of one group (module docstring, steps 2-4).

    The candidate directions are the facets of the hull of the graph's points ``(v, f(v))`` at the branch
    polytopes' vertices ``v`` — for ReLU exactly the hull of the branches (its lines are the graph); for a
    smooth activation the hull of the graph sampled where it matters, whose facets :func:`certify_facets`
    then moves outward until they hold on the whole graph over P. With ``max_facets``, the facets that cut
    deepest into the separable (single-neuron, box) relaxation are kept: their certified right-hand side
    over P is the furthest below the same facet's over the box, :func:`separable_gain`.

    Args:
        neuron_bounds: (k, 2) each neuron's [l, u]; lower, upper: bounds of ``dirs . x`` (the polyhedron P).
        residuals: :func:`certify_facets`' cache of the pieces' residual extremes (one per layer: a neuron's
            pieces are the same in every group it is in).
    """
    act = get_activation(act)
    k = len(neurons)
    residuals = {} if residuals is None else residuals
    dirs = octagon_directions(k) if dirs is None else dirs
    nb = np.asarray(neuron_bounds, float)
    branch_list = branches(act, dirs, np.asarray(lower, float), np.asarray(upper, float), nb, pieces)
    empty = GroupFacets(tuple(neurons), np.zeros((0, k)), np.zeros((0, k)), np.zeros(0))
    if not branch_list:
        return empty
    verts = np.unique(np.vstack([v for _, v in branch_list]), axis=0)
    points = np.hstack([verts, act.value(verts)])
    normals = hull_directions(points)
    # facets on one neuron alone are the single-neuron relaxation's business; keep the joint ones
    joint = ((np.abs(normals[:, :k]) > 1e-12) | (np.abs(normals[:, k:]) > 1e-12)).sum(axis=1) >= 2
    normals = normals[joint]
    if normals.shape[0] == 0:
        return empty
    alpha, beta = normals[:, :k].copy(), normals[:, k:].copy()
    # certified on the graph; then the envelopes' own outward margin (it exceeds the solvers' feasibility
    # tolerances, design.md), so a point a solver accepts is inside the relaxation of the true graph too
    rhs = certify_facets(act, alpha, beta, branch_list, residuals) + LINE_MARGIN
    ok = np.isfinite(rhs)
    alpha, beta, rhs = alpha[ok], beta[ok], rhs[ok]
    if max_facets is not None and rhs.shape[0] > max_facets:
        gain = separable_gain(act, alpha, beta, rhs, nb, pieces, residuals)
        keep = np.argsort(-gain, kind="stable")[:max_facets]
        keep = keep[gain[keep] > 0]
        alpha, beta, rhs = alpha[keep], beta[keep], rhs[keep]
    return GroupFacets(tuple(neurons), alpha, beta, rhs)


def separable_gain(act: Activation, alpha: Array, beta: Array, rhs: Array, neuron_bounds: Array,
                   pieces: int = 4, residuals: dict | None = None) -> Array:
    """How far each facet's right-hand side lies below its certified maximum over the box (no P, no joint
    coupling): what it cuts off that the neurons' separate relaxations (roughly) do not."""
    k = alpha.shape[1]
    box = branches(act, np.eye(k), neuron_bounds[:, 0], neuron_bounds[:, 1], neuron_bounds, pieces)
    return certify_facets(act, alpha, beta, box, residuals) - rhs


def relaxation_area(act: Activation | str, l: Array, u: Array) -> Array:
    """The single-neuron relaxation's size, the paper's ranking of neurons for groups: ReLU's triangle area
    ``-l u / 2`` (0 for stable neurons); a smooth activation's band between its two linear bounds
    (integrated exactly, both lines being affine), 0 for a point interval."""
    act = get_activation(act)
    l, u = np.asarray(l, dtype=np.float64), np.asarray(u, dtype=np.float64)
    if act.name == "relu":
        return np.where((l < 0) & (u > 0), -l * u / 2.0, 0.0)
    width = np.maximum(u - l, 0.0)
    a_lo, b_lo, a_up, b_up = linear_bounds(act, l, u)
    mid = 0.5 * (l + u)
    gap = (a_up - a_lo) * mid + (b_up - b_lo)  # the band's mean height (the lines are affine)
    return np.where(width > 0, np.maximum(gap, 0.0) * width, 0.0)


def choose_groups(area: Array, k: int, *, cluster: int, max_groups: int) -> list[tuple[int, ...]]:
    """Overlapping groups as in kPoly (§5): the neurons with a nonzero relaxation, by decreasing area, cut
    into consecutive sets of ``cluster`` (n_s) neurons, every k-subset of each set a group; at most
    ``max_groups`` groups (largest areas first)."""
    order = [int(j) for j in np.argsort(-area, kind="stable") if area[j] > 0]
    if len(order) < k:
        return []
    groups: list[tuple[int, ...]] = []
    for start in range(0, len(order), max(cluster, k)):
        chunk = order[start:start + max(cluster, k)]
        if len(chunk) < k:  # a short tail: fill from the neurons before it, so every neuron is in a group
            chunk = order[-k:]
        for g in itertools.combinations(chunk, k):
            g = tuple(sorted(g))
            if g not in groups:
                groups.append(g)
            if len(groups) >= max_groups:
                return groups
    return groups
