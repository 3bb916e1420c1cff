"""The study's constraint signatures: which constraints are tight where a class logit is largest.

design.md §5 ("signature"): for a class ``c``, an input ``x0`` and a radius ``eps``, maximise ``logit[c]``
over the eps-ball polytope — the LP envelope relaxation (:mod:`formulations.encoding`, LP mode) or the exact
piecewise MIP refined to the tolerance (:mod:`formulations.refinement`) — and read off the optimum:

* which pixels sit at their lower / upper bound (the vertex of the input box the optimum chooses);
* for each hidden neuron, which envelope line (LP) or which segment (MIP) is active, and in which region of
  the activation its pre-activation lies (for GELU: the tail ``z < -sqrt 2``, the dip down to the minimum
  at -0.7518, the rise up to ``sqrt 2``, the near-linear part beyond; :func:`activation_regions`).

Aggregated over many test samples of one digit these become frequency maps (:func:`aggregate`), and each
frequency is tested against a stated baseline rate with an exact binomial test and Benjamini–Hochberg
control of the false discovery rate (:func:`binomial_pvalues`, :func:`benjamini_hochberg`).

The value of a maximisation that is *sound* is the solver's dual bound (an upper bound on the maximum),
moved outward by the slack granted to the solver's tolerances; the value the real network attains at the
optimum's input is reported beside it (``achieved``). For the MIP both are within the tolerance.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import stats

from .activations import Activation, activation_regions, region_of  # noqa: F401  (re-exported)
from .backends import default_lp_solver, default_mip_solver, solve
from .backends.base import SolveParameters, Termination
from .bounds import symbolic_bounds, symbolic_bounds_batch
from .encoding import LP, MIP, encode_network, logit_objective, tight_constraints
from .errors import InvalidInputError, SolverError, UnsoundAnswerError
from .envelope_lp import EnvelopeLP, Relaxations, point_tags
from .input_sets import InputSet, ball_boxes, validate_balls
from .model import ConstraintTag, Model, Sense
from .network import Network
from .refinement import minimize_with_refinement, sound_lower
from .segment_bab import branch_lines, minimize_bab, root_node

Array = np.ndarray

BRANCH_NODE_LIMIT = 3000  # LPs per signature before the refined MIP takes over
LINE_KINDS = ("envelope_lower", "envelope_upper", "segment_lower", "segment_upper")


def sound_upper(dual_bound: float) -> float:
    """A maximisation's dual bound moved outward (up) by the slack of :func:`refinement.sound_lower`."""
    return -sound_lower(-float(dual_bound))


# -- regions of an activation ------------------------------------------------------------------------


# -- one signature --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Signature:
    """The tight constraints at the maximum of ``logit[cls]`` over one input set.

    ``lines`` holds ``(layer, neuron, side, index)`` of every tight envelope line (LP) or line of a
    one-segment neuron (MIP), ``side`` in {"lower", "upper"}, index ``IMAGE_INDEX`` (-1) for the image bound; ``segments`` maps (layer, neuron) to the active
    segment (MIP) and ``segment_bounds`` to that segment's interval; ``regions`` (one per hidden neuron, in
    layer order) is the region of the pre-activation at the optimum.
    """

    cls: int
    eps: float
    method: str
    bound: float  # sound upper bound on max logit[cls] over the input set
    achieved: float  # logit[cls] of the real network at ``point``
    point: Array
    pixels_lower: Array
    pixels_upper: Array
    lines: tuple[tuple[int, int, str, int], ...]
    regions: Array
    segments: dict[tuple[int, int], int] = field(default_factory=dict)
    segment_bounds: dict[tuple[int, int], tuple[float, float]] = field(default_factory=dict)
    tags: tuple[ConstraintTag, ...] = ()

    def line_sides(self, n_hidden: Sequence[int]) -> Array:
        """Per hidden neuron (layer order): 0 no line tight, 1 a lower line only, 2 an upper line only, 3 both."""
        offsets = np.concatenate([[0], np.cumsum(n_hidden)])
        out = np.zeros(int(offsets[-1]), dtype=np.int64)
        for layer, neuron, side, _ in self.lines:
            out[offsets[layer] + neuron] |= 1 if side == "lower" else 2
        return out


def pixels_from_tags(tags: Sequence[ConstraintTag], input_size: int) -> tuple[Array, Array]:
    """Boolean maps of the pixels at their lower and upper bound, from a signature's tags."""
    low = np.zeros(input_size, dtype=bool)
    up = np.zeros(input_size, dtype=bool)
    for tag in tags:
        if tag.kind == "input_lower":
            low[tag.neuron] = True
        elif tag.kind == "input_upper":
            up[tag.neuron] = True
    return low, up


def lines_from_tags(tags: Sequence[ConstraintTag]) -> tuple[tuple[int, int, str, int], ...]:
    """``(layer, neuron, side, index)`` of the tight envelope / one-segment lines among the tags."""
    out = []
    for tag in tags:
        if tag.kind in LINE_KINDS:
            side = "lower" if tag.kind.endswith("lower") else "upper"
            out.append((int(tag.layer), int(tag.neuron), side, int(tag.index)))
    return tuple(sorted(set(out)))


IMAGE_INDEX = -1  # the "line" index of a post-activation sitting at its image bound (a constant line)


def image_bounds_at(enc, primal: Array, *, tolerance: float = 1e-6) -> tuple[tuple[int, int, str, int], ...]:
    """Hidden neurons whose post-activation sits at its exact image bound ``min/max f`` on [l, u].

    The image bounds are the constant envelope lines; an LP optimum may rest on them rather than on a sloped
    line (the sloped lines carry an outward margin, the image bound does not), so they belong to the signature.
    Reported as ``(layer, neuron, side, IMAGE_INDEX)``.
    """
    out = []
    lb, ub = enc.model.lb, enc.model.ub
    for layer, post in enumerate(enc.post):
        for neuron, v in enumerate(post):
            a = primal[v]
            if abs(a - lb[v]) <= tolerance * (1 + abs(lb[v])):
                out.append((layer, neuron, "lower", IMAGE_INDEX))
            if abs(a - ub[v]) <= tolerance * (1 + abs(ub[v])) and ub[v] > lb[v]:
                out.append((layer, neuron, "upper", IMAGE_INDEX))
    return tuple(out)


def _hidden_regions(network: Network, pre: Sequence[Array]) -> Array:
    parts = [region_of(layer.activation, z) for layer, z in zip(network.hidden_layers, pre)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _check_class(network: Network, cls: int) -> int:
    if isinstance(cls, bool) or not isinstance(cls, (int, np.integer)) or not 0 <= int(cls) < network.output_size:
        raise InvalidInputError(f"class {cls!r} is not an output index of a network with {network.output_size} outputs")
    return int(cls)


def maximize_logit(
    network: Network,
    x: Array,
    cls: int,
    eps: float,
    *,
    method: str = LP,
    solver: str | None = None,
    n_lines: int = 3,
    domain: tuple[float, float] = (0.0, 1.0),
    tolerance: float = 1e-4,
    time_limit: float | None = None,
) -> Signature:
    """Maximise ``logit[cls]`` over the L-inf ball of radius ``eps`` around ``x`` (clipped to ``domain``).

    ``method="lp"``: one LP over the envelope relaxation; ``bound`` is its dual bound (sound upper bound),
    the signature is read at its optimal vertex. ``method="mip"``: minimise ``-logit[cls]`` with the
    refined piecewise MIP until ``bound - achieved <= tolerance``; the signature is read at the last MIP's
    optimum (its input is the point that achieves the maximum within the tolerance).

    Raises:
        InvalidInputError: bad input, class, eps or method.
        SolverError: the solver returned no optimum.
        UnsoundAnswerError: the bound is below a value the real network attains.
    """
    x = network.check_input(x)
    if x.ndim != 1:
        raise InvalidInputError(f"maximize_logit takes one input of length {network.input_size}, got shape {x.shape}")
    cls = _check_class(network, cls)
    if not np.isfinite(eps) or eps < 0:
        raise InvalidInputError(f"eps must be a finite number >= 0, got {eps!r}")
    input_set = InputSet(x, float(eps), domain=domain)
    lo, hi = input_set.box()
    bounds = symbolic_bounds(network, lo, hi)
    if method == LP:
        model = Model("signature-lp")
        enc = encode_network(model, network, input_set, bounds, mode=LP, n_lines=n_lines)
        logit_objective(enc, cls, sense=Sense.MAXIMIZE)
        res = solve(model, solver or default_lp_solver(), SolveParameters(time_limit=time_limit))
        if res.termination != Termination.OPTIMAL or res.primal is None or res.dual_bound is None:
            raise SolverError(f"signature LP for class {cls} ended with {res.termination.value}: {res.message}")
        primal, tight_rows, bound = res.primal, res.tight_rows, sound_upper(res.dual_bound)
    elif method == MIP:
        def negated_logit(e) -> None:
            e.model.set_objective({int(e.outputs[cls]): -1.0}, sense=Sense.MINIMIZE)

        out = minimize_with_refinement(
            network, input_set, bounds, negated_logit, lambda p: -float(network.forward(p)[cls]),
            solver=solver or default_mip_solver(), tolerance=tolerance, stop_at_sign=False,
            deadline=None if time_limit is None else time.monotonic() + time_limit,
        )
        if out.primal is None or out.encoding is None or out.result is None or not np.isfinite(out.lower):
            raise SolverError(f"signature MIP for class {cls} ended with {out.termination.value}")
        enc, primal, tight_rows, bound = out.encoding, out.primal, out.result.tight_rows, -out.lower
    else:
        raise InvalidInputError(f"method must be 'lp' or 'mip', got {method!r}")
    point = input_set.project(primal[enc.inputs])
    achieved = float(network.forward(point)[cls])
    if achieved > bound + 1e-6 * (1.0 + abs(bound)):
        raise UnsoundAnswerError(f"class {cls}: bound {bound:.9g} ({method}) is below the logit {achieved:.9g} "
                                 "the real network attains at the optimum's input; answer rejected")
    tags = tight_constraints(enc, primal, tight_rows)
    # a pixel is at a bound when within 1 % of the radius of it: the MIP's optimum is exact only to the
    # tolerance, and an LP optimum may rest on a neuron's image bound a hair inside the box (degenerate face)
    px_tol = max(1e-6, 0.01 * float(eps))
    low = (np.abs(point - lo) <= px_tol) & (hi > lo)
    up = (np.abs(point - hi) <= px_tol) & (hi > lo)
    lines = lines_from_tags(tags) + image_bounds_at(enc, primal)
    pre = [primal[z] for z in enc.pre[: len(network.hidden_layers)]]
    segments: dict[tuple[int, int], int] = {}
    segment_bounds: dict[tuple[int, int], tuple[float, float]] = {}
    if method == MIP:
        for ns in enc.smooth:
            s = int(np.argmax(primal[ns.binaries])) if ns.binaries.size else 0
            segments[(ns.layer, ns.neuron)] = s
            segment_bounds[(ns.layer, ns.neuron)] = (float(ns.segments[s].lower), float(ns.segments[s].upper))
    return Signature(cls=cls, eps=float(eps), method=method, bound=float(bound), achieved=achieved, point=point,
                     pixels_lower=low, pixels_upper=up, lines=tuple(sorted(set(lines))), regions=_hidden_regions(network, pre),
                     segments=segments, segment_bounds=segment_bounds, tags=tags)


def maximize_logit_batch(
    network: Network,
    xs: Array,
    classes: Array,
    eps: Array,
    *,
    method: str,
    domain: tuple[float, float],
    tolerance: float = 1e-4,
    time_limit: float | None = None,
    solver: str | None = None,
) -> list[Signature]:
    """:func:`maximize_logit` for rows ``xs`` (n, d), each with its class ``classes[i]`` and radius ``eps[i]``.

    The one engine call of signature jobs (``workers.signatures``). Contract: one :class:`Signature` per
    row, in row order; ``time_limit`` is seconds *per row*; the whole call raises what
    :func:`maximize_logit` raises for the first row that fails (the caller answers row by row then).
    Batched: one persistent envelope LP for all rows, the MIP optimum by the segment branch and bound on it
    (exact to ``tolerance`` against the best logit attained), the refined MIP of :func:`maximize_logit` for
    a row the branch and bound leaves open within ``BRANCH_NODE_LIMIT`` LPs. The MIP's tight set is read off
    the real network at the optimum's input: pixels at a bound and each neuron's region (``segments`` stays
    empty: the leaves of the search are not a fixed segmentation).

    Raises:
        InvalidInputError: ``xs`` not (n, d), or ``classes`` / ``eps`` not of length n; and as
            :func:`maximize_logit`.
        SolverError, UnsoundAnswerError: as :func:`maximize_logit`.
    """
    xs = network.check_input(xs)
    if xs.ndim != 2:
        raise InvalidInputError(f"maximize_logit_batch takes inputs of shape (n, {network.input_size}), got {xs.shape}")
    classes = np.asarray(classes)
    eps = np.asarray(eps, dtype=np.float64)
    if classes.shape != (len(xs),) or eps.shape != (len(xs),):
        raise InvalidInputError(f"{len(xs)} inputs need {len(xs)} classes and {len(xs)} radii; got shapes "
                                f"{classes.shape} and {eps.shape}")
    if not np.issubdtype(classes.dtype, np.integer) and len(xs):
        raise InvalidInputError(f"classes must be integers, got dtype {classes.dtype}")
    if method not in (LP, MIP):
        raise InvalidInputError(f"method must be 'lp' or 'mip', got {method!r}")
    for c in classes:
        _check_class(network, c)
    if not len(xs):
        return []
    return _batched_signatures(network, xs, classes, eps, method=method, domain=domain, tolerance=tolerance,
                               time_limit=time_limit, node_limit=BRANCH_NODE_LIMIT, solver=solver)


def logit_attack(network: Network, xs: Array, classes: Array, eps: Array, *, domain: tuple[float, float],
                 steps: int = 40, restarts: int = 4, seed: int = 0) -> tuple[Array, Array]:
    """Points of each L-inf ball ∩ domain with a large ``logit[classes[i]]``: projected gradient ascent from
    the centre and ``restarts`` random points (``attack.margin_and_gradient`` with spec ``-e_c``), each
    trajectory keeping its best point. Returns (points (n, d), their logits re-evaluated with
    :meth:`Network.forward`). Known values, not bounds: what a sound maximum may not fall below."""
    from .attack import margin_and_gradient
    from .input_sets import inner_boxes, sample_points, validate_balls

    xs = network.check_input(np.atleast_2d(xs))
    centers, radii, _, dlo, dhi = validate_balls(xs, np.asarray(eps, dtype=np.float64), "linf", domain)
    classes = np.asarray(classes, dtype=np.int64)
    n, d = centers.shape
    rng = np.random.default_rng(seed)
    starts = np.concatenate([centers[:, None, :], sample_points(centers, radii, "linf", dlo, dhi, restarts, rng)],
                            axis=1).reshape(-1, d)
    per = restarts + 1
    box_lo, box_hi = (np.repeat(b, per, axis=0) for b in inner_boxes(centers, radii, dlo, dhi))
    x = np.clip(starts, box_lo, box_hi)
    spec = np.zeros((n * per, network.output_size))
    spec[np.arange(n * per), np.repeat(classes, per)] = -1.0  # minimise -logit[c]
    alpha = np.repeat(2.5 * radii / max(steps, 1), per)[:, None]
    best_x, best = x.copy(), np.full(n * per, np.inf)
    for step in range(steps + 1):
        value, g = margin_and_gradient(network, x, spec)
        better = value < best
        best = np.where(better, value, best)
        best_x[better] = x[better]
        if step < steps:
            x = np.clip(x - alpha * np.sign(g), box_lo, box_hi)
    points = best_x.reshape(n, per, d)
    logits = network.forward(points.reshape(-1, d))[np.arange(n * per), np.repeat(classes, per)].reshape(n, per)
    pick = np.argmax(logits, axis=1)
    return points[np.arange(n), pick], logits[np.arange(n), pick]


def reject_below_known(sig: Signature, known: float) -> None:
    """Raise :class:`UnsoundAnswerError` when a signature's sound bound is below ``known``, a value of
    ``logit[sig.cls]`` the real network attains in the input set (an attacked or sampled point)."""
    if sig.bound < known - 1e-6 * (1.0 + abs(known)):
        raise UnsoundAnswerError(f"class {sig.cls}: bound {sig.bound:.9g} ({sig.method}) is below the logit {known:.9g} "
                                 "the real network attains at a known point of the ball; answer rejected")


# -- aggregation ------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SignatureSummary:
    """Counts over ``n`` signatures of one digit (and one method / eps).

    ``pixel_lower[i]`` / ``pixel_upper[i]``: how many optima put pixel i at its lower / upper bound;
    ``sides[j, s]``: hidden neuron j (layer order) with side pattern s (0 none, 1 lower, 2 upper, 3 both);
    ``regions[j, r]``: hidden neuron j with its pre-activation in region r at the optimum.
    """

    n: int
    pixel_lower: Array
    pixel_upper: Array
    sides: Array
    regions: Array

    def frequency(self, counts: Array) -> Array:
        return counts / max(self.n, 1)


SIDE_NAMES = ("none", "lower", "upper", "both")


def aggregate(signatures: Sequence[Signature], n_hidden: Sequence[int], n_regions: int) -> SignatureSummary:
    """Count pixel bounds, tight-line sides and regions over signatures (pure)."""
    if not signatures:
        raise InvalidInputError("aggregate needs at least one signature")
    d = signatures[0].pixels_lower.shape[0]
    units = int(np.sum(n_hidden))
    sides = np.zeros((units, len(SIDE_NAMES)), dtype=np.int64)
    regions = np.zeros((units, n_regions), dtype=np.int64)
    low = np.zeros(d, dtype=np.int64)
    up = np.zeros(d, dtype=np.int64)
    rows = np.arange(units)
    for sig in signatures:
        low += sig.pixels_lower
        up += sig.pixels_upper
        sides[rows, sig.line_sides(n_hidden)] += 1
        regions[rows, sig.regions] += 1
    return SignatureSummary(len(signatures), low, up, sides, regions)


def binomial_pvalues(counts: Array, n: int | Array, baseline: float | Array) -> Array:
    """Two-sided exact binomial p-values of ``counts`` successes in ``n`` trials against rate ``baseline``.

    The two-sided p-value is twice the smaller tail, capped at 1 (the "central" exact test). A baseline of
    0 or 1 gives p = 1 where the count agrees with it and p = 0 where it does not.
    """
    k = np.asarray(counts, dtype=np.float64)
    n_arr = np.broadcast_to(np.asarray(n, dtype=np.float64), k.shape)
    p0 = np.clip(np.broadcast_to(np.asarray(baseline, dtype=np.float64), k.shape), 0.0, 1.0)
    if (k < 0).any() or (k > n_arr).any():
        raise InvalidInputError("counts must lie between 0 and n")
    lower_tail = stats.binom.cdf(k, n_arr, p0)
    upper_tail = stats.binom.sf(k - 1, n_arr, p0)
    return np.minimum(1.0, 2.0 * np.minimum(lower_tail, upper_tail))


def benjamini_hochberg(pvalues: Array) -> Array:
    """Benjamini–Hochberg adjusted p-values (q-values), same shape as the input (JRSS B 57, 1995)."""
    p = np.asarray(pvalues, dtype=np.float64)
    flat = p.reshape(-1)
    m = flat.size
    if m == 0:
        return p.copy()
    order = np.argsort(flat)
    ranked = flat[order] * m / np.arange(1, m + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(q, 1.0)
    return out.reshape(p.shape)


def significant(counts: Array, n: int, baseline: float | Array, *, alpha: float = 0.05) -> tuple[Array, Array]:
    """(q-values, mask): features whose frequency differs from ``baseline`` at false discovery rate ``alpha``."""
    q = benjamini_hochberg(binomial_pvalues(counts, n, baseline))
    return q, q <= alpha


# -- the batched path -------------------------------------------------------------------------------------


def _signature_at(network: Network, cls: int, eps: float, method: str, bound: float, point: Array,
                  lo: Array, hi: Array, tags: tuple[ConstraintTag, ...]) -> Signature:
    """A :class:`Signature` from an optimum's input and its tags (pixels and lines from the tags; regions
    read off the real network at the input)."""
    achieved = float(network.forward(point)[cls])
    if achieved > bound + 1e-6 * (1.0 + abs(bound)):
        raise UnsoundAnswerError(f"class {cls}: bound {bound:.9g} ({method}) is below the logit {achieved:.9g} "
                                 "the real network attains at the optimum's input; answer rejected")
    d = network.input_size
    low, up = pixels_from_tags(tags, d)
    regions = _hidden_regions(network, network.pre_activations(point)[: len(network.hidden_layers)])
    return Signature(cls=cls, eps=float(eps), method=method, bound=float(bound), achieved=achieved, point=point,
                     pixels_lower=low, pixels_upper=up, lines=lines_from_tags(tags),
                     regions=regions, tags=tags)


def _batched_signatures(network: Network, xs: Array, classes: Array, eps: Array, *, method: str, domain,
                        tolerance: float, time_limit: float | None, node_limit: int, solver: str | None,
                        n_lines: int = 3) -> list[Signature]:
    """The maxima of ``logit[classes[i]]`` over the L-inf balls of ``xs`` in one persistent envelope LP
    (:class:`~formulations.envelope_lp.EnvelopeLP`): LP, one solve per row; MIP, the segment branch and bound
    (:func:`~formulations.segment_bab.minimize_bab` of ``-logit``) until the bound is within ``tolerance`` of
    the best logit attained, and the refined MIP (:func:`maximize_logit`) for a row it leaves open."""
    centers, eps, _, dlo, dhi = validate_balls(xs, eps, "linf", domain)
    lo, hi = ball_boxes(centers, eps, "linf", dlo, dhi)
    # the LP signature is the envelope relaxation's own optimum (n_lines); the MIP's search takes more lines
    env = EnvelopeLP(network, n_lines if method == LP else branch_lines(network, n_lines), time_limit)
    rel = Relaxations(env, symbolic_bounds_batch(network, lo, hi))
    out = []
    for r, (cls, e) in enumerate(zip(classes, eps)):
        cls, e = int(cls), float(e)
        c = np.zeros(network.output_size)
        c[cls] = -1.0  # minimise -logit[cls]
        input_set = InputSet(centers[r], e, domain=(dlo, dhi))
        if method == LP:
            rel.load(r, lo[r], hi[r])
            res = env.minimize_outputs(c)
            if res.termination != Termination.OPTIMAL or res.primal is None or res.dual_bound is None:
                raise SolverError(f"signature LP for class {cls} ended with {res.termination.value}: {res.message}")
            point = input_set.project(res.primal[env.inputs])
            out.append(_signature_at(network, cls, e, LP, -sound_lower(res.dual_bound), point, lo[r], hi[r],
                                     env.tight_tags(res)))
            continue
        best = {"value": -float(network.forward(input_set.project(centers[r]))[cls]),
                "point": input_set.project(centers[r])}

        def offer(p: Array, best=best, input_set=input_set, cls=cls) -> None:
            p = input_set.project(p)
            value = -float(network.forward(p)[cls])
            if value < best["value"]:
                best["value"], best["point"] = value, p

        deadline = None if time_limit is None else time.monotonic() + time_limit
        outcome = minimize_bab(env, root_node(rel, r), lo[r], hi[r], c, offer=offer,
                               close_at=lambda best=best: best["value"] - tolerance, node_limit=node_limit,
                               deadline=deadline)
        if outcome.termination != Termination.OPTIMAL or best["value"] - outcome.lower > tolerance:
            left = None if deadline is None else max(deadline - time.monotonic(), 1e-3)
            out.append(maximize_logit(network, centers[r], cls, e, method=MIP, solver=solver, domain=domain,
                                      tolerance=tolerance, time_limit=left))
            continue
        point = best["point"]
        tags = point_tags(network, point, lo[r], hi[r], max(1e-6, 0.01 * e))
        out.append(_signature_at(network, cls, e, MIP, -outcome.lower, point, lo[r], hi[r], tags))
    return out
