"""LP (and MIP) bound tightening of pre-activations, layer by layer (progressive, as in MIPVerify).

Tjeng, Xiao & Tedrake, "Evaluating robustness of neural networks with mixed integer programming" (ICLR 2019,
§4.1 and Table 2): the big-M constants of an unstable ReLU are its pre-activation bounds ``[l, u]``, and the
tighter they are the smaller the MIP. *Progressive* tightening computes them layer by layer: layer ``k``'s
bounds come from an optimisation over the relaxation of layers ``0..k-1`` whose bounds were just tightened.

For layer ``k`` and every **unstable** neuron ``j`` (``l_j < 0 < u_j``; a stable neuron's bounds do not
enter the encoding), solve ``min z_j`` and ``max z_j`` over

* ``method="lp"``: the triangle relaxation of layers ``0..k-1`` (Ehlers 2017) plus the affine map of layer
  ``k``. One model per layer is held by a persistent HiGHS LP
  (:class:`formulations.backends.highs_persistent.PersistentLP`) and only the objective changes between the
  up to ``2 n_k`` solves, so each re-solve starts from the previous basis;
* ``method="mip"``: the exact big-M encoding of layers ``0..k-1`` with their stable neurons eliminated
  (:mod:`formulations.elimination`), kept by the solver between solves where it can
  (:func:`formulations.backends.persistent.persistent_mip`: Gurobi) and solved with a short time limit per
  neuron side, nearest-to-stable neurons first (:func:`mip_order`); a stopped solve still gives its dual bound.
  This is the "bab-refine" of alpha-beta-CROWN's VNN-COMP 2022 mnist_fc entry, on one core.

Soundness (design.md, Soundness rules): only a **dual bound** tightens a bound — for the LP it is the
Neumaier-Shcherbina safe bound recomputed from the row duals, for the MIP the solver's proven bound — moved
outward by :func:`formulations.refinement.sound_lower`'s slack, and always intersected with the bounds given
(so a failed or stopped solve leaves a bound as it was). A primal value never moves a bound. After each
layer the symbolic bounds of the later layers are recomputed from the tightened ones (back-substitution
with ``initial=``), so every layer starts from the best bounds known.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from .bounds import LayerBounds, symbolic_bounds, unstable
from .encoding import LP, MIP, encode_network
from .errors import InvalidInputError
from .input_sets import InputSet
from .model import Model, Sense
from .network import Layer, Network
from .refinement import sound_lower

Array = np.ndarray
METHODS = (LP, MIP)
#: With ``probe``, the share of a neuron's width its LP bounds must cut for the layer's LPs to go on: after
#: alpha-CROWN (:func:`formulations.relu_bab.optimised_bounds`), whose optimum is this very LP's (the triangle
#: relaxation with the same earlier bounds), they cut nothing, and a layer of 256x4 costs 10-30 s of LPs.
PROBE_GAIN = 0.01
#: A MIP's bound moves outward by this share of the neuron's width besides :func:`sound_lower`'s slack: the
#: MIP's rows are dense over the inputs, and its tolerances act on every one of them.
MIP_SLACK = 1e-5


def _prefix(network: Network, k: int) -> Network:
    """Layers ``0..k`` with layer ``k``'s activation dropped: its outputs are the pre-activations ``z_k``."""
    last = network.layers[k]
    layers = (*network.layers[:k], Layer(last.weight, last.bias, "identity"))
    return Network(layers, name=f"{network.name}[:{k + 1}]")


def _sound_upper(dual_bound: float) -> float:
    """A maximisation's dual bound moved outward (up) by the same slack as :func:`sound_lower`."""
    return -sound_lower(-float(dual_bound))


def _check(network: Network, input_set: InputSet, bounds: Sequence[LayerBounds], method: str) -> None:
    if method not in METHODS:
        raise InvalidInputError(f"tightening method must be one of {METHODS}, got {method!r}")
    if input_set.dim != network.input_size:
        raise InvalidInputError(f"input set of dimension {input_set.dim}; the network takes {network.input_size} inputs")
    if len(bounds) != len(network.layers):
        raise InvalidInputError(f"{len(bounds)} layer bounds for a network of {len(network.layers)} layers")
    for i, layer in enumerate(network.hidden_layers):
        if layer.activation.name not in ("relu", "identity"):
            raise InvalidInputError(f"tightening encodes ReLU networks; layer {i} has {layer.activation.name!r}")


def _tighten_layer_lp(prefix: Network, input_set: InputSet, bounds: list[LayerBounds], neurons: Array,
                      deadline: float | None, probe: int | None = None) -> tuple[Array, Array, int]:
    """LP bounds of ``z_k`` for ``neurons`` over the triangle relaxation (one persistent model); with ``probe``,
    the layer stops after its first ``probe`` neurons if none of them narrowed by ``PROBE_GAIN`` of its width."""
    from .backends.base import SolveParameters
    from .backends.highs_persistent import PersistentLP

    k = len(prefix.layers) - 1
    lower, upper = bounds[k].lower.copy(), bounds[k].upper.copy()
    model = Model(f"tighten-lp-{k}")
    enc = encode_network(model, prefix, input_set, bounds, mode=LP)
    z = enc.pre[k]
    lp = PersistentLP(model)
    c = np.zeros(model.num_variables)
    solves, width = 0, upper - lower
    for n, j in enumerate(neurons):
        if probe is not None and n == probe and not np.any(width[neurons[:n]] - (upper - lower)[neurons[:n]]
                                                           > PROBE_GAIN * width[neurons[:n]]):
            return lower, upper, solves  # the bounds given are as tight as this LP makes them: it does not pay
        for sense in (Sense.MINIMIZE, Sense.MAXIMIZE):
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return lower, upper, solves
            c[z[j]] = 1.0
            lp.set_objective(c, sense=sense)
            c[z[j]] = 0.0
            res = lp.solve(SolveParameters(time_limit=remaining))
            solves += 1
            if _tighten_one(lower, upper, j, sense, res.dual_bound):
                break  # stable now: the other side no longer enters the encoding
    return lower, upper, solves


def _tighten_one(lower: Array, upper: Array, j: int, sense: Sense, dual_bound: float | None,
                 slack: float = 0.0) -> bool:
    """Move neuron j's bound on the solved side to the solver's dual bound (outward by the slack, and by
    ``slack`` more), never looser than it was; returns whether the neuron is now stable (its other side no
    longer matters)."""
    if dual_bound is not None and np.isfinite(dual_bound):
        if sense == Sense.MINIMIZE:
            lower[j] = max(lower[j], sound_lower(dual_bound) - slack)
        else:
            upper[j] = min(upper[j], _sound_upper(dual_bound) + slack)
    return bool(lower[j] >= 0.0 or upper[j] <= 0.0)


def mip_order(bounds: LayerBounds, neurons: Array) -> Array:
    """The unstable ``neurons`` nearest to stable first (smallest ``min(-l, u) / (u - l)``): a neuron the MIP
    proves stable leaves the relaxation of every later bound, so with a time limit these go first."""
    l, u = bounds.lower[neurons], bounds.upper[neurons]
    return neurons[np.argsort(np.minimum(-l, u) / (u - l), kind="stable")]


def _tighten_layer_mip(network: Network, input_set: InputSet, bounds: list[LayerBounds], neurons: Array,
                       deadline: float | None, solver: str, per_neuron: float) -> tuple[Array, Array, int]:
    """MIP bounds of ``z_k`` for ``neurons``, in :func:`mip_order`: the layers before encoded exactly with their
    stable neurons eliminated (:func:`formulations.elimination.encode_prefix`), one model kept by the solver
    (:func:`formulations.backends.persistent.persistent_mip`) and re-solved per neuron side with a time limit;
    a stopped solve still gives its dual bound."""
    from .backends.base import SolveParameters
    from .backends.persistent import persistent_mip
    from .elimination import encode_prefix

    k = len(bounds) - 1
    lower, upper = bounds[k].lower.copy(), bounds[k].upper.copy()
    model = Model(f"tighten-mip-{k}")
    enc = encode_prefix(model, network, input_set, bounds, k, mode=MIP)
    mip = persistent_mip(model, solver)
    solves = 0
    try:
        for j in mip_order(bounds[k], neurons):
            c, constant = enc.pre_activation(k, int(j))
            # the side nearer zero first: if it proves the neuron stable the other is not needed
            senses = (Sense.MINIMIZE, Sense.MAXIMIZE) if -lower[j] < upper[j] else (Sense.MAXIMIZE, Sense.MINIMIZE)
            for sense in senses:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return lower, upper, solves
                limit = per_neuron if remaining is None else min(per_neuron, remaining)
                mip.set_objective(c, sense=sense, constant=constant)
                # small models, many solves: the root's cuts and heuristics cost more than the nodes they save
                res = mip.solve(SolveParameters(time_limit=limit, presolve="off", cuts="off", heuristics="off"))
                solves += 1
                if _tighten_one(lower, upper, j, sense, res.dual_bound, MIP_SLACK * (upper[j] - lower[j])):
                    break
    finally:
        mip.close()
    return lower, upper, solves


def tighten_bounds(
    network: Network,
    input_set: InputSet,
    bounds: Sequence[LayerBounds],
    *,
    method: str = LP,
    solver: str | None = None,
    time_limit: float | None = None,
    layers: Sequence[int] | None = None,
    per_neuron_limit: float = 1.0,
    probe: int | None = None,
    stats: dict | None = None,
) -> list[LayerBounds]:
    """Tighten the unstable neurons' pre-activation bounds of the hidden layers, in order (module docstring).

    Args:
        bounds: sound bounds per layer (e.g. :func:`formulations.bounds.symbolic_bounds`); never loosened.
        method: ``"lp"`` (persistent HiGHS, safe dual bounds) or ``"mip"`` (``solver``, default SCIP).
        time_limit: seconds for the whole call; on expiry the bounds computed so far are returned (sound).
        layers: the hidden layers to tighten (default all but the first, whose box bounds are exact already).
        per_neuron_limit: MIP seconds per solve (``method="mip"``).
        probe: (``method="lp"``) tighten a layer only while it pays: after its first ``probe`` unstable
            neurons, go on only if one of them narrowed by at least ``PROBE_GAIN`` of its width (for bounds
            that are already LP-tight, such as alpha-CROWN's).
        stats: filled with per-layer counts (unstable before/after, solves, seconds) when given.

    Returns:
        One :class:`LayerBounds` per layer, each inside the given one; the later layers re-derived
        symbolically from the tightened ones.

    Raises:
        InvalidInputError: an unknown method, mismatched sizes, or a non-ReLU hidden layer.
    """
    _check(network, input_set, bounds, method)
    deadline = None if time_limit is None else time.monotonic() + float(time_limit)
    hidden = range(len(network.hidden_layers))
    chosen = sorted(set(hidden[1:] if layers is None else layers))
    if any(k not in hidden for k in chosen):
        raise InvalidInputError(f"layers {chosen} must be hidden layers 0..{len(network.hidden_layers) - 1}")
    lo_box, hi_box = input_set.box()
    current = [LayerBounds(b.lower, b.upper) for b in bounds]
    for k in chosen:
        if deadline is not None and time.monotonic() >= deadline:
            break
        started = time.monotonic()
        neurons = unstable(current[k])
        if method == LP:
            lower, upper, solves = _tighten_layer_lp(_prefix(network, k), input_set, current[: k + 1], neurons,
                                                     deadline, probe)
        else:
            lower, upper, solves = _tighten_layer_mip(network, input_set, current[: k + 1], neurons, deadline,
                                                      solver or "scip", per_neuron_limit)
        current[k] = LayerBounds(np.maximum(current[k].lower, lower), np.minimum(current[k].upper, upper))
        # the later layers profit at once: back-substitution through the tightened layer
        current = symbolic_bounds(network, lo_box, hi_box, initial=current)
        if stats is not None:
            stats.setdefault("layers", []).append({
                "layer": k, "unstable_before": int(neurons.size), "unstable_after": int(unstable(current[k]).size),
                "solves": solves, "seconds": time.monotonic() - started})
    return current
