"""Branch and bound over the segments of smooth neurons, with LP nodes (design.md §4, branched instead of re-solved).

Each node is the LP envelope relaxation (:class:`formulations.envelope_lp.EnvelopeLP`) on sub-intervals of
some neurons' [l, u] — the segments of the piecewise MIP — with lines certified on each sub-interval. The
union of a node's children covers the node, so the smallest bound over the leaves is a sound bound on the
minimum of a linear function ``c . f(x)`` of the outputs over the box. At every node the real network is
evaluated at the LP's input (the caller's ``offer``: upper bounds, counterexamples); an open node is split
at its LP point in the neuron farthest off its activation's graph, which is where
:func:`formulations.refinement.refine_segments` would add a breakpoint.

Bounds are the LP's safe dual bounds less the slack of :func:`formulations.refinement.sound_lower`; an
"infeasible" node is dropped only with HiGHS's Farkas certificate (``PersistentLP``).
"""

from __future__ import annotations

import heapq
import itertools
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .backends.base import SolveResult, Termination
from .envelope_lp import EnvelopeLP, Relaxations
from .refinement import sound_lower

Array = np.ndarray
BATCH = 8  # open nodes expanded together (their children's lines in one call per layer)
# Lines per side and smooth neuron in the search's LP. More tangents put a node's relaxation nearer the graph,
# so fewer splits close an exact bracket: on the 49-3-3-10 GELU nets 12 lines take half the nodes of 3
# (signatures at eps 0.05: 57 against 99 nodes on polycert-tiny, 51 against 113 on verianet) for ~40 % more per node.
BRANCH_LINES = 12


@dataclass
class Node:
    """A branch of the segment tree: per layer, the neurons' intervals and the lines certified on them."""

    lower: list[Array]
    upper: list[Array]
    lines: list  # per layer (lo_s, lo_c, up_s, up_c), each (m, K), or None
    bound: float  # a sound lower bound inherited from the parent (the priority)


def branch_lines(network, lp_lines: int, lines: int = BRANCH_LINES) -> int:
    """Lines per side for a search's LP: ``lines`` where a hidden activation is smooth; a piecewise-linear
    neuron's envelope is its triangle, which more tangents only repeat."""
    smooth = any(not layer.activation.piecewise_linear for layer in network.hidden_layers)
    return max(lp_lines, lines) if smooth else lp_lines


def root_node(rel: Relaxations, r: int) -> Node:
    """Input r's relaxation as the root of a search."""
    return Node([b[r].copy() for b in rel.lower], [b[r].copy() for b in rel.upper],
                [None if v is None else tuple(a[r].copy() for a in v) for v in rel.lines], -np.inf)


def load_node(env: EnvelopeLP, node: Node, lo: Array, hi: Array) -> None:
    """Put a node into the LP. A child shares its parent's arrays for the layers it did not split, so only the
    layers whose arrays differ from what the LP holds are written again.

    What the LP holds is remembered by the arrays themselves (:attr:`EnvelopeLP.loaded`, kept alive there), never
    by ``id()``: a freed node's ids are reused by new arrays, and a layer taken for loaded when it was not left
    another region's bounds in the LP (an unsound node bound). Any other write of a layer clears its entry."""
    env.set_box(lo, hi)
    for i in range(len(node.lower)):
        held = env.loaded[i]
        arrays = (node.lower[i], node.upper[i], node.lines[i])
        if held is None:
            env.set_layer(i, *arrays)
        elif any(a is not b for a, b in zip(held, arrays)):
            # only the neurons whose numbers differ from the held node's are written again (a child differs
            # from its parent in one); compared by value, so whatever the LP holds is what the node says
            changed = (held[0] != arrays[0]) | (held[1] != arrays[1])
            if arrays[2] is not None:
                for a, b in zip(held[2], arrays[2]):
                    changed |= (a != b).any(axis=1)
            idx = np.flatnonzero(changed)
            if idx.size:
                lines = None if arrays[2] is None else tuple(v[idx] for v in arrays[2])
                env.set_neurons(i, idx, arrays[0][idx], arrays[1][idx], lines)
        env.loaded[i] = arrays


def branch_neuron(env: EnvelopeLP, node: Node, primal: Array) -> tuple[int, int, float] | None:
    """The neuron whose LP point lies farthest off the graph, and where to split it (the LP's z, kept a
    tenth of the width away from the ends, or an inflection inside: both halves then have one curvature and
    take the closed-form lines). Weighting the distance by the LP's multipliers on the neuron's rows (BaBSR's
    score) was tried: the median search stayed, a tenth of the signatures ran into the node limit."""
    best, pick = -1.0, None
    for i, post in enumerate(env.post):
        if post is None:
            continue
        act = env.network.layers[i].activation
        z, a = primal[env.pre[i]], primal[post]
        gap = np.abs(a - act.value(z))
        width = node.upper[i] - node.lower[i]
        gap = np.where(width > 1e-9, gap, -1.0)
        j = int(np.argmax(gap))
        if gap[j] > best:
            best = float(gap[j])
            l, u = node.lower[i][j], node.upper[i][j]
            t = float(np.clip(z[j], l + 0.1 * (u - l), u - 0.1 * (u - l)))
            inside = [p for p in act.inflections if l < p < u]
            if inside:
                t = float(min(inside, key=lambda p: abs(p - t)))
            pick = (i, j, t)
    return pick if best > 0.0 else None


def split_nodes(env: EnvelopeLP, picks: list[tuple[Node, tuple[int, int, float], float]]) -> list[Node]:
    """The two children of every (node, (layer, neuron, at), bound) in ``picks``: the split neuron's lines
    certified on both halves, for all picks of a layer in one vectorised call (one call per split costs
    more in overhead than in arithmetic). Children share the parent's arrays of the layers not split."""
    by_layer: dict[int, list[int]] = {}
    for q, (_, (i, _, _), _) in enumerate(picks):
        by_layer.setdefault(i, []).append(q)
    fresh: dict[int, tuple] = {}
    for i, qs in by_layer.items():
        l = np.array([picks[q][0].lower[i][picks[q][1][1]] for q in qs])
        u = np.array([picks[q][0].upper[i][picks[q][1][1]] for q in qs])
        t = np.array([picks[q][1][2] for q in qs])
        lines = env.lines(env.network.layers[i].activation, np.concatenate([l, t]), np.concatenate([t, u]))
        for n, q in enumerate(qs):
            fresh[q] = tuple(np.stack([v[n], v[len(qs) + n]]) for v in lines)
    out = []
    for q, (node, (i, j, t), bound) in enumerate(picks):
        l, u = node.lower[i][j], node.upper[i][j]
        for side, (cl, cu) in enumerate(((l, t), (t, u))):
            lower, upper, lines = list(node.lower), list(node.upper), list(node.lines)
            lower[i], upper[i] = node.lower[i].copy(), node.upper[i].copy()
            lower[i][j], upper[i][j] = cl, cu
            layer_lines = tuple(v.copy() for v in node.lines[i])
            for store, v in zip(layer_lines, fresh[q]):
                store[j] = v[side]
            lines[i] = layer_lines
            out.append(Node(lower, upper, lines, bound))
    return out


def node_bound(res: SolveResult, inherited: float) -> float:
    """A node's sound bound: its LP's safe dual bound less the slack, never below what its parent proved."""
    own = sound_lower(res.dual_bound) if res.dual_bound is not None and not np.isnan(res.dual_bound) else -np.inf
    return max(own, inherited)


@dataclass(frozen=True)
class BabOutcome:
    """``lower`` is a sound lower bound on ``min c . f(x)`` over the box; ``termination`` is OPTIMAL when the
    search ended because every node cleared ``close_at`` (or ``stop`` said so), else the limit that ended it."""

    lower: float
    nodes: int
    termination: Termination


def minimize_bab(env: EnvelopeLP, root: Node, lo: Array, hi: Array, c: Array, *,
                 offer: Callable[[Array], None], close_at: Callable[[], float],
                 stop: Callable[[], bool] = lambda: False, node_limit: int,
                 deadline: float | None = None) -> BabOutcome:
    """Best-first branch and bound of ``min c . f(x)`` over the box [lo, hi] from ``root``.

    A node is closed once its bound exceeds ``close_at()`` (0 for a verdict; the best value attained less the
    tolerance for an exact minimum — the caller's ``offer`` lowers it as points are found). Best-first order
    means the search is over when the best open node clears it. ``stop()`` ends the search early (a
    counterexample settled the question). Returns the bound over the closed and the open nodes.
    """
    order = itertools.count()  # tie-breaker: nodes themselves are not comparable
    heap = [(root.bound, next(order), root)]
    closed, count, termination = np.inf, 0, Termination.OPTIMAL
    while heap and termination == Termination.OPTIMAL:
        if stop() or heap[0][0] > close_at():
            break
        if count >= node_limit:
            termination = Termination.NODE_LIMIT
            break
        if deadline is not None and time.monotonic() >= deadline:
            termination = Termination.TIME_LIMIT
            break
        # the best few open nodes at once, so that their children's lines are certified together
        batch = [heapq.heappop(heap)[2] for _ in range(min(BATCH, node_limit - count, len(heap)))]
        picks = []
        for q, node in enumerate(batch):
            if stop() or node.bound > close_at():  # settled meanwhile: the rest go back as they were
                for rest in batch[q:]:
                    heapq.heappush(heap, (rest.bound, next(order), rest))
                break
            load_node(env, node, lo, hi)
            res = env.minimize_outputs(c)
            count += 1
            if res.termination == Termination.INFEASIBLE:
                continue  # an empty region (the persistent LP accepts "infeasible" only with a Farkas proof)
            bound = node_bound(res, node.bound)
            if res.primal is not None and res.termination == Termination.OPTIMAL:
                offer(res.primal[env.inputs])
            if bound > close_at():
                closed = min(closed, bound)
                continue
            pick = None if res.primal is None else branch_neuron(env, node, res.primal)
            if pick is None:  # nothing left to split (or no LP point): it stays open, a MIP has to decide
                heapq.heappush(heap, (bound, next(order), node))
                termination = Termination.NODE_LIMIT
                continue
            picks.append((node, pick, bound))
        for child in split_nodes(env, picks):
            heapq.heappush(heap, (child.bound, next(order), child))
    lower = min([closed] + [b for b, _, _ in heap])
    return BabOutcome(float(lower), count, termination)
