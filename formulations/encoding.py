"""Encoding a network over an input set into the solver-neutral :class:`~formulations.model.Model`.

One function per concept, as in MIPVerify: the input set, the affine layer, and the activation — the
latter in three forms:

* **LP envelope** (design.md §3): for every neuron with pre-activation bounds [l, u], the rows
  ``a >= s z + c`` / ``a <= s z + c`` of its certified envelope lines, plus the exact image bounds on ``a``.
* **ReLU, exact** (design.md §4; Tjeng, Xiao & Tedrake, "Evaluating robustness of neural networks with mixed
  integer programming", ICLR 2019, eq. (5)): stable neurons are fixed, an unstable one gets a binary ``d``
  and ``a >= 0, a >= z, a <= z - l (1 - d), a <= u d``. In LP mode the binary is relaxed, which is the
  triangle relaxation (Ehlers 2017).
* **Smooth activations, piecewise** (design.md §4): the multiple-choice (disjunctive) formulation over
  segments of [l, u] (Balas 1979; Vielma, SIAM Review 2015, §4.1): ``sum_s d_s = 1``, ``z = sum_s z_s``,
  ``a = sum_s a_s``, ``l_s d_s <= z_s <= u_s d_s``, ``fmin_s d_s <= a_s <= fmax_s d_s`` and, for every
  certified line of segment s, ``a_s >= slope z_s + c d_s`` (lower) / ``a_s <= slope z_s + c d_s`` (upper).
  Each segment's band contains the graph on its piece, so the MIP relaxes the true graph and its optimum is
  a sound bound; refinement (:mod:`formulations.refinement`) makes it exact.

Pre-activation bounds are supplied by the caller (symbolic or tightened): they must be sound, since every
line and big-M constant is derived from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from .activations import Activation
from .bounds import LayerBounds
from .envelopes import envelope_arrays, linear_bounds
from .input_sets import InputSet
from .model import INF, ConstraintTag, Model, Sense, VariableTag
from .network import Network
from .piecewise import Segment

Array = np.ndarray

LP, MIP = "lp", "mip"
#: the k-neuron LP (:mod:`formulations.klp`): a robustness method, not an encoding mode
KLP = "klp"
#: the robustness methods of :func:`formulations.cascade.certify_batch`, cheapest first
ROBUSTNESS_METHODS = (LP, KLP, MIP)


@dataclass
class NeuronSegments:
    """The binaries of one smooth neuron's multiple-choice encoding, for reading the active segment back."""

    layer: int
    neuron: int
    segments: tuple[Segment, ...]
    binaries: Array


@dataclass
class NetworkEncoding:
    """Variables of an encoded network: inputs, per-layer pre-activations and post-activations."""

    model: Model
    network: Network
    bounds: list[LayerBounds]
    mode: str
    inputs: Array
    pre: list[Array] = field(default_factory=list)
    post: list[Array] = field(default_factory=list)
    relu_binaries: dict[tuple[int, int], int] = field(default_factory=dict)
    smooth: list[NeuronSegments] = field(default_factory=list)
    copy: int | None = None

    @property
    def outputs(self) -> Array:
        return self.pre[-1]


# -- input set -----------------------------------------------------------------------------------


def encode_input_set(model: Model, input_set: InputSet, *, copy: int | None = None,
                     quadratic: bool = False) -> Array:
    """Input variables ranging over the input set.

    L-inf: the clipped box, as variable bounds. L1: the box plus ``x - c = p - n``, ``sum(p + n) <= eps``
    (exact). L2: the box plus the L1 ball of radius ``sqrt(d) * eps`` — a sound *outer* polyhedron, which is
    all an LP (and the bounds) can use; with ``quadratic`` (exact MIPs for a back-end with
    ``Capabilities.quadratic``) also the ball itself: shifted variables ``s = x - c`` (bounded by the box)
    and the convex row ``sum s_i^2 <= eps^2``, so the encoding is exact (box ∩ ball) and the polyhedral
    rows stay as valid cuts.
    """
    lo, hi = input_set.box()
    d = lo.shape[0]
    x = model.add_variables(d, lo, hi, tags=[VariableTag("input", neuron=i, copy=copy) for i in range(d)])
    if input_set.norm in ("l1", "l2") and input_set.eps > 0:
        radius = input_set.eps if input_set.norm == "l1" else input_set.eps * np.sqrt(d)
        if radius < float(np.sum(hi - lo)):  # otherwise the box already implies it
            pos = model.add_variables(d, 0.0, INF, tags=VariableTag("aux", copy=copy))
            neg = model.add_variables(d, 0.0, INF, tags=VariableTag("aux", copy=copy))
            eye = sp.identity(d, format="csr")
            model.add_constraints(sp.hstack([eye, -eye, eye]), np.concatenate([x, pos, neg]),
                                  input_set.center, input_set.center, tags=ConstraintTag("input", copy=copy))
            model.add_constraint((np.concatenate([pos, neg]), np.ones(2 * d)), -INF, radius,
                                 tag=ConstraintTag("input", index=1, copy=copy))
        if input_set.norm == "l2" and quadratic and eps_l2_binds(input_set, lo, hi):
            c = np.asarray(input_set.center, dtype=np.float64)
            shift = model.add_variables(d, lo - c, hi - c, tags=VariableTag("aux", copy=copy))
            eye = sp.identity(d, format="csr")
            model.add_constraints(sp.hstack([eye, -eye]), np.concatenate([x, shift]), c, c,
                                  tags=ConstraintTag("input", index=2, copy=copy))
            model.add_sum_of_squares(shift, float(input_set.eps), tag=ConstraintTag("input", index=3, copy=copy))
    return x


def eps_l2_binds(input_set: InputSet, lo: Array, hi: Array) -> bool:
    """Whether the L2 ball cuts the box [lo, hi] (its farthest corner lies outside the ball)."""
    c = np.asarray(input_set.center, dtype=np.float64)
    far = np.maximum(np.abs(lo - c), np.abs(hi - c))
    return float(np.sqrt(np.sum(far * far))) > float(input_set.eps)


# -- layers ----------------------------------------------------------------------------------------


def encode_affine(model: Model, weight: Array, bias: Array, a: Array, bounds: LayerBounds, *, layer: int,
                  copy: int | None = None) -> Array:
    """Pre-activation variables ``z`` with rows ``W a - z = -b`` and bounds [l, u]."""
    n_out = weight.shape[0]
    z = model.add_variables(n_out, bounds.lower, bounds.upper,
                            tags=[VariableTag("pre", layer, j, copy=copy) for j in range(n_out)])
    coef = sp.hstack([sp.csr_matrix(weight), -sp.identity(n_out, format="csr")])
    model.add_constraints(coef, np.concatenate([a, z]), -bias, -bias,
                          tags=[ConstraintTag("affine", layer, j, copy=copy) for j in range(n_out)])
    return z


def _line_rows(model: Model, a: Array, z: Array, slopes: Array, intercepts: Array, side: str, *, layer: int,
               neurons: Array, copy: int | None) -> None:
    """Rows ``a_j - s z_j >= c`` (side lower) or ``<= c`` (upper) for every neuron j and line k."""
    n, k = slopes.shape
    if n == 0 or k == 0:
        return
    rows = np.repeat(np.arange(n * k), 2)
    cols = np.stack([np.repeat(np.arange(n), k), n + np.repeat(np.arange(n), k)], axis=1).reshape(-1)
    vals = np.stack([np.ones(n * k), -slopes.reshape(-1)], axis=1).reshape(-1)
    coef = sp.coo_matrix((vals, (rows, cols)), shape=(n * k, 2 * n))
    c = intercepts.reshape(-1)
    lo, hi = (c, np.full_like(c, INF)) if side == "lower" else (np.full_like(c, -INF), c)
    kind = "envelope_lower" if side == "lower" else "envelope_upper"
    tags = [ConstraintTag(kind, layer, int(neurons[j]), line, copy=copy) for j in range(n) for line in range(k)]
    model.add_constraints(coef, np.concatenate([a, z]), lo, hi, tags=tags)


def encode_envelope(model: Model, act: Activation, z: Array, bounds: LayerBounds, *, layer: int, n_lines: int = 3,
                    copy: int | None = None) -> Array:
    """LP relaxation of a smooth activation: image bounds on ``a`` and certified envelope lines."""
    l, u = bounds.lower, bounds.upper
    f_min, f_max = act.image(l, u)
    n = z.shape[0]
    a = model.add_variables(n, f_min, f_max, tags=[VariableTag("post", layer, j, copy=copy) for j in range(n)])
    lo_s, lo_c, up_s, up_c = envelope_arrays(act, l, u, n_lines)
    # the symbolic bounds' own lines, so the LP is never looser than back-substitution
    a_lo, b_lo, a_up, b_up = linear_bounds(act, l, u)
    lo_s, lo_c = np.column_stack([lo_s, a_lo]), np.column_stack([lo_c, b_lo])
    up_s, up_c = np.column_stack([up_s, a_up]), np.column_stack([up_c, b_up])
    neurons = np.arange(n)
    _line_rows(model, a, z, lo_s, lo_c, "lower", layer=layer, neurons=neurons, copy=copy)
    _line_rows(model, a, z, up_s, up_c, "upper", layer=layer, neurons=neurons, copy=copy)
    return a


def pair_rows(model: Model, cols: Array, coefs: Array, lo: Array, hi: Array, tags: list[ConstraintTag]) -> None:
    """Rows over a few variables each: ``cols`` and ``coefs`` of shape (m, k), one row per line."""
    m, k = cols.shape
    if m == 0:
        return
    variables, inverse = np.unique(cols.reshape(-1), return_inverse=True)
    coef = sp.coo_matrix((coefs.reshape(-1), (np.repeat(np.arange(m), k), inverse)), shape=(m, variables.size))
    model.add_constraints(coef, variables, lo, hi, tags=tags)


def encode_relu(model: Model, z: Array, bounds: LayerBounds, *, layer: int, mode: str,
                binaries: dict[tuple[int, int], int], copy: int | None = None) -> Array:
    """ReLU: stable neurons fixed; unstable ones big-M (MIP) or triangle (LP), Tjeng et al. 2019 eq. (5)."""
    l, u = bounds.lower, bounds.upper
    n = z.shape[0]
    a = model.add_variables(n, np.maximum(l, 0.0), np.maximum(u, 0.0),
                            tags=[VariableTag("post", layer, j, copy=copy) for j in range(n)])
    act = np.flatnonzero(l >= 0.0)
    # a = z on active neurons; inactive ones (u <= 0) already have a in [0, 0] from the variable bounds
    pair_rows(model, np.column_stack([a[act], z[act]]), np.tile([1.0, -1.0], (act.size, 1)), 0.0, 0.0,
               [ConstraintTag("relu_active", layer, int(j), copy=copy) for j in act])
    unst = np.flatnonzero((l < 0.0) & (u > 0.0))
    lu, uu = l[unst], u[unst]
    # a >= z
    pair_rows(model, np.column_stack([a[unst], z[unst]]), np.tile([1.0, -1.0], (unst.size, 1)), 0.0, INF,
               [ConstraintTag("relu_lower", layer, int(j), copy=copy) for j in unst])
    if mode == MIP:
        d = model.add_variables(unst.size, 0.0, 1.0, integer=True,
                                tags=[VariableTag("binary", layer, int(j), copy=copy) for j in unst])
        binaries.update({(layer, int(j)): int(dj) for j, dj in zip(unst, d)})
        # a <= z - l (1 - d)  <=>  a - z - l d <= -l
        pair_rows(model, np.column_stack([a[unst], z[unst], d]),
                   np.column_stack([np.ones(unst.size), -np.ones(unst.size), -lu]), -INF, -lu,
                   [ConstraintTag("relu_upper", layer, int(j), 0, copy=copy) for j in unst])
        # a <= u d
        pair_rows(model, np.column_stack([a[unst], d]), np.column_stack([np.ones(unst.size), -uu]), -INF, 0.0,
                   [ConstraintTag("relu_upper", layer, int(j), 1, copy=copy) for j in unst])
    else:
        # triangle (Ehlers 2017): a <= u (z - l) / (u - l)
        s = uu / (uu - lu)
        pair_rows(model, np.column_stack([a[unst], z[unst]]), np.column_stack([np.ones(unst.size), -s]), -INF, -s * lu,
                   [ConstraintTag("relu_upper", layer, int(j), 0, copy=copy) for j in unst])
    return a


def encode_segments(model: Model, act: Activation, z: Array, bounds: LayerBounds, segments: Sequence[Sequence[Segment]],
                    *, layer: int, smooth: list[NeuronSegments], copy: int | None = None) -> Array:
    """Multiple-choice piecewise encoding of a smooth activation (see module docstring)."""
    l, u = bounds.lower, bounds.upper
    f_min, f_max = act.image(l, u)
    n = z.shape[0]
    a = model.add_variables(n, f_min, f_max, tags=[VariableTag("post", layer, j, copy=copy) for j in range(n)])
    for j in range(n):
        segs = tuple(segments[j])
        zj, aj = int(z[j]), int(a[j])
        if len(segs) == 1:
            # one segment: its lines apply to (z, a) directly, no binary needed
            seg = segs[0]
            for k, line in enumerate(seg.lower_lines):
                model.add_constraint({aj: 1.0, zj: -line.slope}, line.intercept, INF,
                                     tag=ConstraintTag("segment_lower", layer, j, k, copy=copy))
            for k, line in enumerate(seg.upper_lines):
                model.add_constraint({aj: 1.0, zj: -line.slope}, -INF, line.intercept,
                                     tag=ConstraintTag("segment_upper", layer, j, k, copy=copy))
            smooth.append(NeuronSegments(layer, j, segs, np.zeros(0, dtype=np.int64)))
            continue
        S = len(segs)
        d = model.add_variables(S, 0.0, 1.0, integer=True, tags=[VariableTag("binary", layer, j, s, copy=copy) for s in range(S)])
        # z_s and a_s are 0 unless segment s is chosen, and then lie in its box: bounding them by that box (with 0)
        # is implied by the rows below, but solvers propagate bounds far better than rows
        seg_lo = np.array([seg.lower for seg in segs])
        seg_hi = np.array([seg.upper for seg in segs])
        val_lo = np.array([float(seg.value_range[0]) for seg in segs])
        val_hi = np.array([float(seg.value_range[1]) for seg in segs])
        zs = model.add_variables(S, np.minimum(seg_lo, 0.0), np.maximum(seg_hi, 0.0),
                                 tags=[VariableTag("aux", layer, j, s, copy=copy) for s in range(S)])
        as_ = model.add_variables(S, np.minimum(val_lo, 0.0), np.maximum(val_hi, 0.0),
                                  tags=[VariableTag("aux", layer, j, s, copy=copy) for s in range(S)])
        model.add_constraint((d, np.ones(S)), 1.0, 1.0, tag=ConstraintTag("segment_choice", layer, j, copy=copy))
        model.add_constraint((np.append(zs, zj), np.append(np.ones(S), -1.0)), 0.0, 0.0, tag=ConstraintTag("segment_sum", layer, j, copy=copy))
        model.add_constraint((np.append(as_, aj), np.append(np.ones(S), -1.0)), 0.0, 0.0, tag=ConstraintTag("segment_sum", layer, j, 1, copy=copy))
        for s, seg in enumerate(segs):
            ds, zss, ass = int(d[s]), int(zs[s]), int(as_[s])
            lo_f, hi_f = seg.value_range
            tag = ConstraintTag("segment", layer, j, s, copy=copy)
            model.add_constraint({zss: 1.0, ds: -seg.lower}, 0.0, INF, tag=tag)
            model.add_constraint({zss: 1.0, ds: -seg.upper}, -INF, 0.0, tag=tag)
            model.add_constraint({ass: 1.0, ds: -float(lo_f)}, 0.0, INF, tag=tag)
            model.add_constraint({ass: 1.0, ds: -float(hi_f)}, -INF, 0.0, tag=tag)
            for line in seg.lower_lines:
                model.add_constraint({ass: 1.0, zss: -line.slope, ds: -line.intercept}, 0.0, INF, tag=tag)
            for line in seg.upper_lines:
                model.add_constraint({ass: 1.0, zss: -line.slope, ds: -line.intercept}, -INF, 0.0, tag=tag)
        smooth.append(NeuronSegments(layer, j, segs, d))
    return a


def encode_network(
    model: Model,
    network: Network,
    input_set: InputSet,
    bounds: list[LayerBounds],
    *,
    mode: str = LP,
    n_lines: int = 3,
    segments: dict[tuple[int, int], Sequence[Segment]] | None = None,
    inputs: Array | None = None,
    copy: int | None = None,
    quadratic: bool = False,
) -> NetworkEncoding:
    """Encode ``network`` over ``input_set`` into ``model``.

    Args:
        bounds: sound pre-activation bounds, one :class:`LayerBounds` per layer.
        mode: ``"lp"`` (envelopes and ReLU triangles) or ``"mip"`` (ReLU big-M, smooth piecewise).
        n_lines: envelope lines per side in LP mode.
        segments: in MIP mode, the segments of each smooth neuron keyed by (layer, neuron); neurons not listed
            get one segment with the LP envelope lines (a valid, if loose, encoding).
        inputs: existing input variables to reuse (invertibility queries share or pair inputs).
        quadratic: state an L2 ball exactly (a quadratic row; MIP mode only, for back-ends that can):
            see :func:`encode_input_set`.
    """
    if mode not in (LP, MIP):
        raise ValueError(f"mode must be 'lp' or 'mip', got {mode!r}")
    if len(bounds) != len(network.layers):
        raise ValueError(f"{len(bounds)} layer bounds for {len(network.layers)} layers")
    x = (encode_input_set(model, input_set, copy=copy, quadratic=quadratic and mode == MIP) if inputs is None
         else np.asarray(inputs))
    enc = NetworkEncoding(model, network, list(bounds), mode, x, copy=copy)
    a = x
    last = len(network.layers) - 1
    for i, layer in enumerate(network.layers):
        z = encode_affine(model, layer.weight, layer.bias, a, bounds[i], layer=i, copy=copy)
        enc.pre.append(z)
        if i == last and layer.activation.name == "identity":
            break
        act = layer.activation
        if act.name == "identity":
            a = z
        elif act.name == "relu":
            a = encode_relu(model, z, bounds[i], layer=i, mode=mode, binaries=enc.relu_binaries, copy=copy)
        elif mode == MIP:
            segs = [
                (segments or {}).get((i, j)) or (_single_segment(act, bounds[i].lower[j], bounds[i].upper[j], n_lines),)
                for j in range(layer.n_out)
            ]
            a = encode_segments(model, act, z, bounds[i], segs, layer=i, smooth=enc.smooth, copy=copy)
        else:
            a = encode_envelope(model, act, z, bounds[i], layer=i, n_lines=n_lines, copy=copy)
        enc.post.append(a)
    return enc


def _single_segment(act: Activation, lower: float, upper: float, n_lines: int) -> Segment:
    from .piecewise import uniform_segments

    return uniform_segments(act, lower, upper, 1, lines_per_side=n_lines)[0]


# -- objectives and reading answers back -----------------------------------------------------------


def margin_objective(enc: NetworkEncoding, label: int, target: int, *, sense: Sense = Sense.MINIMIZE) -> None:
    """Objective ``logit[label] - logit[target]`` (the robustness margin)."""
    y = enc.outputs
    enc.model.set_objective({int(y[label]): 1.0, int(y[target]): -1.0}, sense=sense)


def logit_objective(enc: NetworkEncoding, cls: int, *, sense: Sense = Sense.MAXIMIZE) -> None:
    """Objective ``logit[cls]`` (the study's signature problem)."""
    enc.model.set_objective({int(enc.outputs[cls]): 1.0}, sense=sense)


def active_segments(enc: NetworkEncoding, primal: Array) -> dict[tuple[int, int], int]:
    """Index of the active segment of every smooth neuron at a MIP solution."""
    out = {}
    for ns in enc.smooth:
        out[(ns.layer, ns.neuron)] = int(np.argmax(primal[ns.binaries])) if ns.binaries.size else 0
    return out


def tight_constraints(enc: NetworkEncoding, primal: Array, tight_rows: Array, *, tolerance: float = 1e-6) -> tuple[ConstraintTag, ...]:
    """The signature of a solution: pixels at a bound, active envelope lines / segments / ReLU phases.

    Pixels come from the input variables' bounds; envelope lines from the back-end's tight rows; in MIP mode,
    each smooth neuron's chosen segment and each unstable ReLU's phase come from the binaries.
    """
    model = enc.model
    tags: list[ConstraintTag] = []
    x = primal[enc.inputs]
    lb, ub = model.lb[enc.inputs], model.ub[enc.inputs]
    for i in np.flatnonzero(np.abs(x - lb) <= tolerance * (1 + np.abs(lb))):
        tags.append(ConstraintTag("input_lower", neuron=int(i), copy=enc.copy))
    for i in np.flatnonzero((np.abs(x - ub) <= tolerance * (1 + np.abs(ub))) & (ub > lb)):
        tags.append(ConstraintTag("input_upper", neuron=int(i), copy=enc.copy))
    for row in tight_rows:
        tag = model.constraint_tags[int(row)]
        if tag is not None and tag.kind in ("envelope_lower", "envelope_upper", "segment_lower", "segment_upper") and tag.copy == enc.copy:
            tags.append(tag)
    if enc.mode == MIP:
        for (layer, neuron), s in active_segments(enc, primal).items():
            tags.append(ConstraintTag("segment", layer, neuron, s, copy=enc.copy))
        for (layer, neuron), d in enc.relu_binaries.items():
            tags.append(ConstraintTag("relu_active" if primal[d] > 0.5 else "relu_inactive", layer, neuron, copy=enc.copy))
    return tuple(dict.fromkeys(tags))
