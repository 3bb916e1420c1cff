"""Branch and bound over the input box with the k-neuron LP at the nodes (input partitioning).

A multi-neuron relaxation of one layer, even its full joint hull, is not the hull of the whole network's
graph (the "convex barrier" of layered relaxations; Mao, Zhang & Vechev 2024): some properties no
relaxation over the whole input set proves. Splitting the input box shrinks every neuron's interval, so the
relaxation at a node converges to the network on it — on low-dimensional inputs this decides the property
(ReLU: every neuron stable on a small enough box, the LP is exact there; smooth: the certified lines' gap
shrinks with the width).

Each node is a sub-box; its bound is the k-neuron LP's safe lower bound of ``c . f(x)``
(:func:`formulations.klp.build_klp` over the symbolic bounds of the sub-box). Best-first: the node with the
lowest bound is split next, along the coordinate with the largest ``|d(c.f)/dx_j| * width_j`` at its centre
(the gradient of the real network; the widest coordinate where the gradient vanishes). Upper bounds are
the real network's values at every node's centre and at each LP optimum's input.

Soundness: the global lower bound is the minimum of the open leaves' sound bounds (the leaves cover the
box); an upper bound is always a value the real network attains at a point of the box.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass

import numpy as np

from .backends.base import Termination
from .bounds import symbolic_bounds
from .input_sets import InputSet
from .klp import KLPSettings, build_klp
from .network import Network
from .refinement import sound_lower

Array = np.ndarray


@dataclass(frozen=True)
class InputBabOutcome:
    """A bracket ``lower <= min_{x in box} c . f(x) <= upper`` with the point attaining ``upper``.

    ``termination``: OPTIMAL (decided: lower > close_at, or upper <= stop_at, or the bracket closed),
    NODE_LIMIT or TIME_LIMIT (the bracket as far as it got). ``nodes``: relaxations solved; ``depth``: the
    deepest split."""

    lower: float
    upper: float
    point: Array | None
    termination: Termination
    nodes: int
    depth: int

    def summary(self) -> dict:
        return {"nodes": self.nodes, "depth": self.depth, "termination": self.termination.value}


def objective_gradient(network: Network, x: Array, c: Array) -> Array:
    """``d(c . f)/dx`` at ``x`` (the real network, float64): back-propagation through the activations' slopes."""
    zs = network.pre_activations(x)
    g = np.asarray(c, dtype=np.float64)
    for i in range(len(network.layers) - 1, -1, -1):
        layer = network.layers[i]
        g = g * layer.activation.slope(zs[i])
        g = layer.weight.T @ g
    return g


def split_coordinate(network: Network, lo: Array, hi: Array, c: Array) -> int:
    """The coordinate to split: largest ``|gradient| * width`` at the centre, else the widest."""
    width = hi - lo
    score = np.abs(objective_gradient(network, 0.5 * (lo + hi), c)) * width
    return int(np.argmax(score)) if score.max() > 0 else int(np.argmax(width))


def _value(network: Network, x: Array, c: Array) -> float:
    return float(np.asarray(c) @ network.forward(x[None, :])[0])


def _bound(network: Network, lo: Array, hi: Array, c: Array, settings: KLPSettings,
           deadline: float | None) -> tuple[float, Array | None]:
    """A node's sound lower bound and its LP optimum's input (None if the LP gave none)."""
    box = InputSet(0.5 * (lo + hi), float(np.max(hi - lo)) / 2.0, norm="linf", domain=(lo, hi))
    rel = build_klp(network, box, symbolic_bounds(network, lo, hi), settings, deadline=deadline,
                    output_directions=[c])
    res = rel.minimize_outputs(c)
    bound = sound_lower(res.dual_bound) if res.dual_bound is not None and np.isfinite(res.dual_bound) else -np.inf
    point = None if res.primal is None else np.clip(res.primal[rel.inputs], lo, hi)
    return bound, point


def minimize_input_bab(network: Network, lo: Array, hi: Array, c: Array, *, settings: KLPSettings | None = None,
                       close_at: float = 0.0, stop_at: float = 0.0, tolerance: float = 1e-4,
                       node_limit: int = 200, deadline: float | None = None) -> InputBabOutcome:
    """Bracket ``min c . f(x)`` over the box [lo, hi] by input partitioning (module docstring).

    Stops when the lower bound exceeds ``close_at`` (proved), the upper bound is <= ``stop_at`` (refuted),
    the bracket is within ``tolerance``, or at ``node_limit`` nodes / ``deadline`` (``time.monotonic()``).
    """
    settings = settings or KLPSettings()
    lo, hi, c = (np.asarray(v, dtype=np.float64) for v in (lo, hi, c))
    best_x = np.clip(0.5 * (lo + hi), lo, hi)
    upper = _value(network, best_x, c)
    nodes, depth, counter = 0, 0, 0
    heap: list = []

    def visit(nlo: Array, nhi: Array, d: int) -> None:
        nonlocal upper, best_x, nodes, counter
        bound, point = _bound(network, nlo, nhi, c, settings, deadline)
        nodes += 1
        for p in (0.5 * (nlo + nhi), point):
            if p is not None:
                v = _value(network, p, c)
                if v < upper:
                    upper, best_x = v, p.copy()
        counter += 1
        heapq.heappush(heap, (bound, counter, d, nlo, nhi))

    visit(lo, hi, 0)
    termination = Termination.OPTIMAL
    while heap:
        lower = heap[0][0]
        if lower > close_at or upper <= stop_at or upper - lower <= tolerance:
            break
        if nodes >= node_limit:
            termination = Termination.NODE_LIMIT
            break
        if deadline is not None and time.monotonic() >= deadline:
            termination = Termination.TIME_LIMIT
            break
        _, _, d, nlo, nhi = heapq.heappop(heap)
        j = split_coordinate(network, nlo, nhi, c)
        mid = 0.5 * (nlo[j] + nhi[j])
        left_hi, right_lo = nhi.copy(), nlo.copy()
        left_hi[j], right_lo[j] = mid, mid
        depth = max(depth, d + 1)
        visit(nlo, left_hi, d + 1)
        visit(right_lo, nhi, d + 1)
    lower = heap[0][0] if heap else np.inf
    return InputBabOutcome(float(min(lower, upper)), float(upper), best_x, termination, nodes, depth)
