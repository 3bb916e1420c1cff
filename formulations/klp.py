"""The k-neuron LP relaxation of a network (kPoly, Singh et al., NeurIPS 2019, §5), built layer by layer.

For one input set and sound starting bounds (symbolic or LP-tightened), the model grows a layer at a time:

1. the affine rows of layer i (:func:`formulations.encoding.encode_affine`);
2. with ``tighten``, every nonlinear neuron of layer i >= 1 (ReLU: unstable; smooth: of nonzero width) gets
   ``min / max z_j`` over the model so far — which holds the k-neuron rows of the layers below: this is the
   kPoly loop, each layer's bounds from the multi-neuron relaxation of the earlier ones;
3. the groups of layer i (:func:`formulations.multi_neuron.choose_groups`) get their input polyhedron: every
   non-unit octagonal direction minimised and maximised by LP over the same model;
4. the single-neuron relaxation of layer i (ReLU triangle, smooth envelope lines) and, per group, the
   certified joint-hull facets (:func:`formulations.multi_neuron.group_facets`) as rows.

Every LP bound used (steps 2 and 3) is the safe bound re-derived from the duals by
:class:`formulations.backends.highs_persistent.PersistentLP`, moved outward by
:func:`formulations.refinement.sound_lower`, and intersected with the bound it replaces; a failed solve
keeps the old bound. The final model minimises linear functions of the logits (:meth:`KRelaxation.minimize_outputs`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from .backends.base import SolveParameters, SolveResult
from .backends.highs_persistent import PersistentLP
from .bounds import LayerBounds
from .encoding import KLP, LP, encode_affine, encode_envelope, encode_input_set, encode_relu
from .envelope_lp import image_tags, pixel_tags, region_tags
from .errors import InvalidInputError, UnsoundAnswerError
from .input_sets import InputSet
from .model import INF, ConstraintTag, Model, Sense
from .multi_neuron import choose_groups, group_facets, octagon_directions, relaxation_area
from .network import Network
from .refinement import sound_lower

Array = np.ndarray
#: Row kinds a k-LP signature reports when tight: the single-neuron lines and the k-neuron facets.
TIGHT_KINDS = ("envelope_lower", "envelope_upper", "relu_lower", "relu_upper", "k_neuron")
WIDTH_EPS = 1e-9  # a smooth neuron narrower than this is affine enough: no LP, no group


@dataclass(frozen=True, kw_only=True)
class KLPSettings:
    """Settings of the k-neuron relaxation.

    Attributes:
        k: neurons per group (2 or 3).
        cluster: the kPoly set size n_s: groups are the k-subsets of consecutive sets of this many neurons
            ranked by relaxation area.
        max_groups: groups per layer at most.
        max_facets: certified facets per group at most for smooth activations (the deepest cuts,
            :func:`formulations.multi_neuron.group_facets`); None (the default): every certified facet, as
            ReLU groups keep their whole hull. (A cap of 80 cost both bound and time on the tiny GELU nets: the
            ranking solves a second certification per group, and the facets it dropped were the binding ones.)
        n_lines: certified envelope lines per side of the single-neuron part (smooth activations).
        pieces: secant pieces per smooth neuron in a group's branches (None: 8 for k = 2, 2 for k = 3, whose
            groups have pieces^3 branches); more pieces, smaller certified residuals, tighter facets.
        objective_pieces: with > 0, cuts in the objective's own directions over the last hidden layer
            (:func:`_objective_cuts`), on this many pieces per neuron; 0 (the default): none.
        tighten: re-tighten each layer's bounds by LP over the k-neuron model below it (kPoly).
        lp_time_limit: seconds per LP (None: none).
    """

    k: int = 2
    cluster: int = 4
    max_groups: int = 30
    max_facets: int | None = None
    pieces: int | None = None
    objective_pieces: int = 0
    n_lines: int = 3
    tighten: bool = True
    lp_time_limit: float | None = 10.0

    def __post_init__(self) -> None:
        if self.k not in (2, 3):
            raise InvalidInputError(f"KLPSettings.k must be 2 or 3, got {self.k!r}")
        optional = tuple(n for n in ("pieces", "max_facets") if getattr(self, n) is not None)
        for name in ("cluster", "max_groups", "n_lines") + optional:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise InvalidInputError(f"KLPSettings.{name} must be an integer >= 1, got {v!r}")
        if isinstance(self.objective_pieces, bool) or not isinstance(self.objective_pieces, (int, np.integer)) \
                or self.objective_pieces < 0:
            raise InvalidInputError(f"KLPSettings.objective_pieces must be an integer >= 0, got {self.objective_pieces!r}")
        if self.cluster < self.k:
            raise InvalidInputError(f"KLPSettings.cluster ({self.cluster}) must be >= k ({self.k})")


@dataclass
class KRelaxation:
    """A built k-neuron LP: the model, its persistent LP, the bounds it was built with and what it holds."""

    network: Network
    model: Model
    lp: PersistentLP
    inputs: Array
    pre: list[Array]
    bounds: list[LayerBounds]
    settings: KLPSettings
    post: list[Array | None] = field(default_factory=list)  # per layer (None: no activation)
    groups: list[list[tuple[int, ...]]] = field(default_factory=list)  # per hidden layer
    facets: list[int] = field(default_factory=list)  # per hidden layer
    solves: int = 0

    def minimize_outputs(self, c: Array) -> SolveResult:
        """Minimise ``c . z_last``; ``dual_bound`` is the safe bound (not yet moved by ``sound_lower``)."""
        obj = np.zeros(self.model.num_variables)
        obj[self.pre[-1]] = np.asarray(c, dtype=np.float64)
        self.lp.set_objective(obj, sense=Sense.MINIMIZE)
        return self.lp.solve(SolveParameters(time_limit=self.settings.lp_time_limit))

    def tight_tags(self, result: SolveResult) -> tuple[ConstraintTag, ...]:
        """The signature of a k-LP optimum, as :meth:`formulations.envelope_lp.EnvelopeLP.tight_tags` gives the
        LP's: pixels at a bound of the box, the tight rows among the envelope lines (ReLU: its triangle's rows)
        and the k-neuron facets (``k_neuron``, layer, the group's first neuron, the facet's number in the
        layer), each hidden neuron's post-activation at an image bound, and each one's region."""
        if result.primal is None:
            return ()
        primal, model = result.primal, self.model
        tags = pixel_tags(primal[self.inputs], model.lb[self.inputs], model.ub[self.inputs])
        for row in result.tight_rows:
            tag = model.constraint_tags[int(row)]
            if tag is not None and tag.kind in TIGHT_KINDS:
                tags.append(tag)
        for i, post in enumerate(self.post):
            if post is None:
                continue
            act = self.network.layers[i].activation
            tags.extend(image_tags(i, primal[post], *act.image(self.bounds[i].lower, self.bounds[i].upper)))
            tags.extend(region_tags(act, i, primal[self.pre[i]]))
        return tuple(dict.fromkeys(tags))

    def summary(self) -> dict:
        """What a certificate records of the relaxation: k, groups and certified facets per layer."""
        return {"k": self.settings.k, "groups": [len(g) for g in self.groups], "facets": list(self.facets),
                "lp_solves": self.solves}


def _nonlinear(act_name: str, l: Array, u: Array) -> Array:
    if act_name == "relu":
        return np.flatnonzero((l < 0.0) & (u > 0.0))
    return np.flatnonzero(u - l > WIDTH_EPS)


class _Bounder:
    """min / max of linear functions of layer i's pre-activations over the model as it stands (safe bounds)."""

    def __init__(self, model: Model, z: Array, limit: float | None) -> None:
        self.lp, self.z, self.n = PersistentLP(model), z, model.num_variables
        self.params = SolveParameters(time_limit=limit)
        self.solves = 0

    def lower(self, coef: Array) -> float:
        c = np.zeros(self.n)
        c[self.z] = coef
        self.lp.set_objective(c, sense=Sense.MINIMIZE)
        res = self.lp.solve(self.params)
        self.solves += 1
        if res.dual_bound is None or not np.isfinite(res.dual_bound):
            return -np.inf
        return sound_lower(res.dual_bound)

    def range(self, coef: Array) -> tuple[float, float]:
        return self.lower(coef), -self.lower(-coef)


def build_klp(network: Network, input_set: InputSet, bounds: Sequence[LayerBounds],
              settings: KLPSettings | None = None, *, deadline: float | None = None,
              output_directions: Sequence[Array] | None = None) -> KRelaxation:
    """The k-neuron LP of ``network`` over ``input_set`` (module docstring).

    Args:
        bounds: sound pre-activation bounds per layer; the relaxation's own are never looser.
        output_directions: linear functions ``c`` of the logits the caller will minimise: when the last hidden
            layer has 2-3 nonlinear neurons, each ``-(W^T c)`` becomes a certified cut of their joint graph.
        deadline: ``time.monotonic()`` after which no more bounding LPs are solved (the model stays sound:
            what is not tightened keeps the bounds given; groups not yet bounded are left out).

    Raises:
        UnsoundAnswerError: a tightened bound crossed its other side (the LP contradicted itself).
    """
    settings = settings or KLPSettings()
    if len(bounds) != len(network.layers):
        raise InvalidInputError(f"{len(bounds)} layer bounds for {len(network.layers)} layers")
    model = Model(f"klp[{network.name}]")
    x = encode_input_set(model, input_set)
    rel = KRelaxation(network, model, None, x, [], list(bounds),
                      settings)
    a = x
    last = len(network.layers) - 1
    for i, layer in enumerate(network.layers):
        b = rel.bounds[i]
        z = encode_affine(model, layer.weight, layer.bias, a, b, layer=i)
        rel.pre.append(z)
        if i == last or layer.activation.name == "identity":
            a = z
            rel.post.append(None)
            continue
        act = layer.activation
        expired = lambda: deadline is not None and time.monotonic() >= deadline
        bounder = None
        if settings.tighten and i >= 1 and not expired():
            bounder = _Bounder(model, z, settings.lp_time_limit)
            lower, upper = b.lower.copy(), b.upper.copy()
            for j in _nonlinear(act.name, lower, upper):
                if expired():
                    break
                coef = np.zeros(z.size)
                coef[j] = 1.0
                lo_j, hi_j = bounder.range(coef)
                lower[j], upper[j] = max(lower[j], lo_j), min(upper[j], hi_j)
            if (lower > upper).any():
                raise UnsoundAnswerError(f"k-LP tightening emptied layer {i}'s bounds; answer rejected")
            b = rel.bounds[i] = LayerBounds(lower, upper)
            model.set_bounds(z, b.lower, b.upper)
        groups = choose_groups(relaxation_area(act, b.lower, b.upper), settings.k,
                               cluster=settings.cluster, max_groups=settings.max_groups)
        polys = []
        if groups and not expired():
            if bounder is None:
                bounder = _Bounder(model, z, settings.lp_time_limit)
            else:
                bounder.lp.set_variable_bounds(z, b.lower, b.upper)
            for g in groups:
                if expired():
                    break
                polys.append((g, *_polyhedron(bounder, b, g)))
        objective_group = None
        if output_directions is not None and settings.objective_pieces > 0 and i == last - 1 and not expired():
            # the logits are linear in this layer's outputs: with all its nonlinear neurons in one group of
            # at most 3, the objective's own direction is a certified cut of that group's joint graph
            nonlinear = tuple(int(j) for j in _nonlinear(act.name, b.lower, b.upper))
            known = {g: (lo_d, hi_d) for g, lo_d, hi_d in polys}
            if nonlinear in known:  # P of the same group is already bounded
                objective_group = (nonlinear, *known[nonlinear])
            elif 2 <= len(nonlinear) <= 3:
                if bounder is None:
                    bounder = _Bounder(model, z, settings.lp_time_limit)
                else:
                    bounder.lp.set_variable_bounds(z, b.lower, b.upper)
                objective_group = (nonlinear, *_polyhedron(bounder, b, nonlinear))
        if bounder is not None:
            rel.solves += bounder.solves
        if act.name == "relu":
            a = encode_relu(model, z, b, layer=i, mode=LP, binaries={})
        else:
            a = encode_envelope(model, act, z, b, layer=i, n_lines=settings.n_lines)
        count = 0
        residuals: dict = {}  # the pieces' residual extremes, shared by the groups of this layer
        for g, lo_d, hi_d in polys:
            nb = np.column_stack([b.lower[list(g)], b.upper[list(g)]])
            fac = group_facets(act, g, nb, lo_d, hi_d,
                               max_facets=None if act.name == "relu" else settings.max_facets,
                               pieces=settings.pieces or (8 if settings.k == 2 else 2), residuals=residuals)
            if fac.count == 0:
                continue
            _add_facets(model, z[list(g)], a[list(g)], fac, layer=i, first=count)
            count += fac.count
        if objective_group is not None:
            count += _objective_cuts(model, act, z, a, network.layers[last].weight, output_directions,
                                     objective_group, b, layer=i, first=count, pieces=settings.objective_pieces)
        rel.post.append(a)
        rel.groups.append([g for g, _, _ in polys])
        rel.facets.append(count)
    rel.lp = PersistentLP(model)
    return rel


def _polyhedron(bounder: "_Bounder", b: LayerBounds, g: tuple[int, ...]) -> tuple[Array, Array]:
    """The input polyhedron P of group g: each octagonal direction's [min, max] (unit ones: the neurons' own
    bounds; the others by LP over the model so far, never looser than the box's)."""
    dirs = octagon_directions(len(g))
    cols = list(g)
    lo_d, hi_d = np.empty(dirs.shape[0]), np.empty(dirs.shape[0])
    for q, d in enumerate(dirs):
        box_lo = float(np.sum(np.where(d > 0, d * b.lower[cols], d * b.upper[cols])))
        box_hi = float(np.sum(np.where(d > 0, d * b.upper[cols], d * b.lower[cols])))
        if np.count_nonzero(d) == 1:
            lo_d[q], hi_d[q] = box_lo, box_hi
            continue
        coef = np.zeros(bounder.z.size)
        coef[cols] = d
        lo_q, hi_q = bounder.range(coef)
        lo_d[q], hi_d[q] = max(box_lo, lo_q), min(box_hi, hi_q)
    return lo_d, hi_d


def _objective_cuts(model: Model, act, z: Array, a: Array, weight: Array, directions: Sequence[Array],
                    group, b: LayerBounds, *, layer: int, first: int, pieces: int) -> int:
    """Rows ``beta . a_G <= rhs`` with ``beta = -(W^T c)_G`` for each output direction c (the objective
    ``min c . (W a + bias)`` pushes exactly against them), certified over the group's graph on P by
    :func:`formulations.multi_neuron.certify_facets` like every facet. Returns the number of rows."""
    from .envelopes import LINE_MARGIN
    from .multi_neuron import branches, certify_facets

    g, lo_d, hi_d = group
    cols = list(g)
    beta = -np.array([(weight.T @ np.asarray(c, dtype=np.float64))[cols] for c in directions])
    alpha = np.zeros_like(beta)
    nb = np.column_stack([b.lower[cols], b.upper[cols]])
    branch_list = branches(act, octagon_directions(len(g)), lo_d, hi_d, nb, pieces)
    if not branch_list:
        return 0
    rhs = certify_facets(act, alpha, beta, branch_list) + LINE_MARGIN
    ok = np.isfinite(rhs) & (np.abs(beta).sum(axis=1) > 0)
    if not ok.any():
        return 0
    from .multi_neuron import GroupFacets

    fac = GroupFacets(tuple(g), alpha[ok], beta[ok], rhs[ok])
    _add_facets(model, z[cols], a[cols], fac, layer=layer, first=first)
    return fac.count


def _add_facets(model: Model, zg: Array, ag: Array, fac, *, layer: int, first: int) -> None:
    """Rows ``alpha . z_G + beta . a_G <= rhs``, tagged ``k_neuron`` (index: the facet's number in the layer)."""
    F, k = fac.alpha.shape
    coef = sp.csr_matrix(np.hstack([fac.alpha, fac.beta]))
    tags = [ConstraintTag("k_neuron", layer, int(fac.neurons[0]), first + f) for f in range(F)]
    model.add_constraints(coef, np.concatenate([zg, ag]), np.full(F, -INF), fac.rhs, tags=tags)


def klp_margin_bounds(network: Network, input_set: InputSet, bounds: Sequence[LayerBounds], label: int,
                      targets: Sequence[int], settings: KLPSettings | None = None,
                      deadline: float | None = None) -> tuple[dict[int, float], KRelaxation]:
    """Sound lower bounds of ``logit[label] - logit[k]`` over the k-neuron LP, for each target k."""
    directions = []
    for k in targets:
        c = np.zeros(network.output_size)
        c[int(label)], c[int(k)] = 1.0, -1.0
        directions.append(c)
    rel = build_klp(network, input_set, bounds, settings, deadline=deadline, output_directions=directions)
    out = {}
    for k in targets:
        c = np.zeros(network.output_size)
        c[int(label)], c[int(k)] = 1.0, -1.0
        res = rel.minimize_outputs(c)
        out[int(k)] = sound_lower(res.dual_bound) if res.dual_bound is not None and np.isfinite(res.dual_bound) \
            else -np.inf
    return out, rel
