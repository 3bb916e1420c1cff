"""Adaptive refinement of piecewise encodings until the sound bound meets the achieved value.

design.md §4: the piecewise MIP over-approximates the graph of every smooth neuron, so its dual bound is a
sound bound on the true optimum. Its optimal *input* is a real point: evaluating the real network there gives
a value the true optimum attains (an upper bound for a minimisation). Where the two differ, the MIP's optimum
sits in segments whose bands are loose; splitting exactly those segments at the MIP's pre-activation values
removes that optimum from the relaxation. Repeating closes the bracket
``dual bound <= true optimum <= achieved value`` to the tolerance, or until the sign is decided.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .backends import capabilities, solve
from .backends.base import SolveParameters, SolveResult, Termination
from .bounds import LayerBounds
from .encoding import MIP, NetworkEncoding, encode_network
from .input_sets import InputSet
from .model import Model
from .network import Network
from .piecewise import Segment, curvature_segments, refine_at, split_segment

Array = np.ndarray
SegmentMap = dict[tuple[int, int], tuple[Segment, ...]]

# The solver's dual bound is trusted only up to its tolerances: subtract this (relative + absolute) slack.
DUAL_SLACK_ABS = 1e-6
DUAL_SLACK_REL = 1e-6


def sound_lower(dual_bound: float) -> float:
    """A solver's dual bound of a minimisation, moved outward by the slack we grant its tolerances."""
    return float(dual_bound) - DUAL_SLACK_ABS - DUAL_SLACK_REL * abs(float(dual_bound))


def smooth_neurons(network: Network) -> list[tuple[int, int]]:
    """(layer, neuron) of every hidden neuron with a smooth (not piecewise-linear) activation."""
    return [
        (i, j)
        for i, layer in enumerate(network.hidden_layers)
        if not layer.activation.piecewise_linear
        for j in range(layer.n_out)
    ]


def initial_segments(network: Network, bounds: Sequence[LayerBounds], *, pieces: int = 4,
                     lines_per_side: int = 2) -> SegmentMap:
    """Curvature-aligned segments for every smooth neuron, halved until each has ``pieces`` segments."""
    out: SegmentMap = {}
    for i, j in smooth_neurons(network):
        act = network.layers[i].activation
        lo, hi = float(bounds[i].lower[j]), float(bounds[i].upper[j])
        segs = tuple(curvature_segments(act, lo, hi, lines_per_side=lines_per_side))
        while len(segs) < pieces and hi > lo:
            widest = int(np.argmax([s.upper - s.lower for s in segs]))
            if segs[widest].upper - segs[widest].lower <= 1e-9:
                break
            segs = tuple(split_segment(act, segs, widest))
        out[(i, j)] = segs
    return out


def refine_segments(network: Network, segments: SegmentMap, enc: NetworkEncoding, primal: Array, *,
                    min_width: float = 1e-7, tolerance: float = 1e-9) -> tuple[SegmentMap, int]:
    """Split, for every smooth neuron whose MIP point lies off the graph, the segment holding it.

    Returns the new segment map and the number of neurons refined (0: nothing left to refine).
    """
    new = dict(segments)
    refined = 0
    for (i, j), segs in segments.items():
        act = network.layers[i].activation
        z = float(primal[enc.pre[i][j]])
        a = float(primal[enc.post[i][j]])
        if abs(a - float(act.value(np.float64(z)))) <= tolerance:
            continue
        holder = next((s for s in segs if s.lower - 1e-12 <= z <= s.upper + 1e-12), None)
        if holder is None or holder.upper - holder.lower <= min_width:
            continue
        new[(i, j)] = tuple(refine_at(act, segs, z))
        refined += 1
    return new, refined


@dataclass
class RefinementOutcome:
    """The bracket ``lower <= optimum <= upper`` of a minimisation, and how it was reached."""

    lower: float
    upper: float
    point: Array | None  # the input achieving ``upper`` (re-evaluated on the real network)
    primal: Array | None
    encoding: NetworkEncoding | None
    result: SolveResult | None
    rounds: int
    termination: Termination
    segments: SegmentMap
    solve_time: float
    solver: str


def minimize_with_refinement(
    network: Network,
    input_set: InputSet,
    bounds: Sequence[LayerBounds],
    set_objective: Callable[[NetworkEncoding], None],
    true_value: Callable[[Array], float],
    *,
    solver: str,
    tolerance: float = 1e-4,
    deadline: float | None = None,
    max_rounds: int = 30,
    stop_at_sign: bool = True,
    upper: float = np.inf,
    point: Array | None = None,
    segments: SegmentMap | None = None,
    node_limit: int | None = None,
) -> RefinementOutcome:
    """Minimise an objective of the network's outputs over the input set, exactly to ``tolerance``.

    Args:
        set_objective: sets the (minimisation) objective on a fresh encoding.
        true_value: the objective evaluated on the *real* network at an input (float64).
        stop_at_sign: stop as soon as the bracket excludes 0 (a robustness verdict needs only the sign).
        upper, point: a value already achieved (e.g. by an attack) and its input.
    """
    segments = dict(segments) if segments is not None else initial_segments(network, bounds)
    exact_ball = input_set.norm == "l2" and capabilities(solver).quadratic
    lower = -np.inf
    best_point = point
    enc = None
    result = None
    total = 0.0
    termination = Termination.ERROR
    rounds = 0
    for rounds in range(1, max_rounds + 1):
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            termination = Termination.TIME_LIMIT
            break
        model = Model("robustness-mip")
        # an L2 ball is exact (a quadratic row) where the back-end can state it, else its polyhedral hull
        enc = encode_network(model, network, input_set, bounds, mode=MIP, segments=segments, quadratic=exact_ball)
        set_objective(enc)
        # the relaxation need not be solved tighter than the tolerance asked of the whole bracket: a gap of
        # tolerance/4 keeps the (sound) dual bound useful and saves the solver closing it to 1e-9
        params = SolveParameters(time_limit=remaining, node_limit=node_limit, absolute_gap=tolerance / 4,
                                 relative_gap=1e-9, cutoff=upper if np.isfinite(upper) else None,
                                 presolve="low", cuts="low", heuristics="low")
        result = solve(model, solver, params)
        total += result.solve_time + result.build_time
        termination = result.termination
        if result.dual_bound is not None and np.isfinite(result.dual_bound):
            lower = max(lower, sound_lower(result.dual_bound))
        if termination == Termination.INFEASIBLE:
            # with a cutoff at a value already achieved, "infeasible" means nothing beats it: the
            # achieved value is optimal (up to the slack)
            if np.isfinite(upper):
                lower = max(lower, sound_lower(upper))
            break
        if result.primal is None:
            break
        x = input_set.project(result.primal[enc.inputs])
        value = true_value(x)
        if value < upper:
            upper, best_point = value, x
        if termination not in (Termination.OPTIMAL,):
            break
        if upper - lower <= tolerance or (stop_at_sign and (lower > 0 or upper <= 0)):
            break
        segments, refined = refine_segments(network, segments, enc, result.primal)
        if refined == 0:
            break
    return RefinementOutcome(
        lower=lower, upper=upper, point=best_point, primal=None if result is None else result.primal,
        encoding=enc, result=result, rounds=rounds, termination=termination, segments=segments,
        solve_time=total, solver=solver if result is None else result.solver,  # "highs+scip": who answered
    )
