"""Certified invertibility: injectivity, preimages, dependence between networks, certified radii, invariance.

Cui, Bertalan, Pappas, Morari, Kevrekidis & Fazlyab, "Certified Invertibility in Neural Networks via
Mixed-Integer Programming" (L4DC 2023, PMLR 211). For a network f and a ball B(c, r):

* **Problem 1, injectivity** — ``p* = max ||x - y||  s.t.  x, y in B(c, r),  f(x) = f(y)``; f is injective on
  the ball iff p* = 0. :func:`injectivity`.
* **Problem 2, another preimage of f(c)** — the same with y fixed to c. :func:`preimage`.
* **Problem 3, dependence** — ``p12 = max ||f2(x1) - f2(x2)||  s.t.  x1, x2 in B(c, r),  f1(x1) = f1(x2)``;
  p12 = 0 means f2 is a function of f1 on the ball (and p12 = p21 = 0 an invertible relation).
  :func:`dependence`.
* **Certified radius** — the largest r with p*(r) <= tolerance; p*(r) is non-decreasing in r (the balls nest),
  so growth then bisection is valid (the paper's code: start at 0.1, multiply by 5 while certified, bisect to a
  gap of 1e-3). :func:`certified_radius`, :func:`injectivity_radius`, :func:`dependence_radius`.
* **Decision invariance** ("excessive invariance", Jacobsen et al., ICLR 2019): how far can x move from c
  within the domain while the predicted class (or every logit within delta) stays put — Problem 2 with the
  output equality replaced by the decision region. :func:`decision_invariance`.

The mixed-integer program is the paper's eq. (6): two copies of the network (copy 0 on x, copy 1 on y), each
with its own exact big-M ReLU binaries (Tjeng et al., ICLR 2019) and sharing nothing but the output rows
``-delta <= z_L(x) - z_L(y) <= delta`` (the *last pre-activations*; delta = 0 for the exact query); Problem 3
adds copies 2 and 3 of f2 on the same inputs. The norm objective is encoded with binaries
(:func:`encode_norm_objective`): L-inf picks one coordinate and one sign (eq. (6)), L1 picks the sign of every
coordinate. L2 (the paper's p = 2) is a non-convex quadratic row ``s^2 <= sum_i t_i^2`` with ``s`` maximised;
the L2 input balls are quadratic rows too, so L2 queries need a back-end with ``Capabilities.quadratic``
(SCIP, Gurobi with NonConvex=2), which solves them globally (its dual bound is proven).

Smooth activations (GELU, sigmoid, tanh, SiLU) use the sound piecewise multiple-choice encoding of
:mod:`formulations.encoding` with refinement: the MIP over-approximates every graph, so its feasible set
contains every true pair and its **dual bound** is a sound upper bound on p*(delta). The MIP's pair is
re-evaluated on the real networks; where its output difference exceeds delta, the segments holding the MIP's
points are split (per copy) and the MIP is solved again.

Soundness (design.md):

* ``upper`` is the solver's dual bound plus the slack granted to its tolerances (never its incumbent), capped
  by the geometric bound of the objective over the boxes.
* ``lower`` is the objective of a **witness pair** re-evaluated in float64 on the real networks: inside its
  input set and with ``||f(x) - f(y)||_inf <= delta + witness_tolerance`` (the MIP satisfies ``f(x) = f(y)``
  only up to the solver's feasibility tolerance; a Gauss-Newton step on the real network polishes the pair
  first, and the residual that remains is reported). x = y (or x = c) always gives 0.
* A valid witness whose objective exceeds ``upper`` contradicts the solver: :class:`UnsoundAnswerError`.

Verdicts (the :class:`Certificate` vocabulary): ``VERIFIED`` = invertible, ``upper <= tolerance``;
``FALSIFIED`` = not invertible, a witness pair with objective > tolerance; ``UNKNOWN`` otherwise (with the
reason). The witness pair lives in ``Certificate.extra["witness"]`` as ``{"x", "y", "objective", "distance",
"output_difference", "margin" (decision invariance only), "valid"}``; ``counterexample`` holds its ``x``
when falsified.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import scipy.sparse as sp

from .backends.registry import require
from .backends import capabilities, default_mip_solver, solve
from .backends.base import SolveParameters, Termination
from .bounds import LayerBounds, symbolic_bounds
from .certificate import TERMINATION_REASONS, Certificate, UnknownReason, Verdict, reason_for
from .encoding import MIP, NetworkEncoding, encode_input_set, encode_network
from .errors import InvalidInputError, SolverNotAvailableError, UnsoundAnswerError
from .input_sets import InputSet, canonical_norm, distance
from .model import INF, ConstraintTag, Model, Sense, VariableTag
from .network import Network
from .tightening import tighten_bounds
from .refinement import DUAL_SLACK_ABS, DUAL_SLACK_REL, SegmentMap, initial_segments, refine_segments

Array = np.ndarray

KINDS = ("injectivity", "preimage", "dependence", "invariance")
# A witness pair satisfies f(x) = f(y) up to this (absolute, L-inf on the outputs) beyond delta: the MIP's pair
# is exact only up to the solver's feasibility tolerance (~1e-6 per row), and polishing leaves rounding.
WITNESS_TOLERANCE = 1e-6
_POLISH_STEPS = 5
_POLISH_AIM = 1.0 - 1e-4


def sound_upper(dual_bound: float) -> float:
    """A maximisation's dual bound moved outward by the slack granted to the solver's tolerances."""
    d = float(dual_bound)
    return d + DUAL_SLACK_ABS + DUAL_SLACK_REL * abs(d)


# -- the norm objective (paper eq. (6)) ------------------------------------------------------------------


def difference_bounds(lo_a: Array, hi_a: Array, lo_b: Array, hi_b: Array) -> tuple[Array, Array]:
    """Bounds on ``t = a - b`` from boxes on ``a`` and ``b``."""
    return np.asarray(lo_a) - np.asarray(hi_b), np.asarray(hi_a) - np.asarray(lo_b)


def encode_norm_objective(model: Model, a: Array, b: Array, t_lo: Array, t_hi: Array, norm: str, *,
                          symmetric: bool = False) -> Array:
    """Maximise ``||a - b||`` (L-inf, L1 or L2) over the model; returns the objective's variables.

    ``t = a - b`` gets rows ``t - a + b = 0`` and bounds ``[t_lo, t_hi]``. With ``T_i = max(|t_lo_i|, |t_hi_i|)``:

    * L-inf (Cui et al. eq. (6)): ``s <= t_i + M+_i (1 - p_i)``, ``s <= -t_i + M-_i (1 - n_i)``,
      ``sum_i (p_i + n_i) = 1``, ``s in [0, max T]``, with ``M+_i = max T - t_lo_i``, ``M-_i = max T + t_hi_i``
      (each row is slack when its binary is 0). The binaries choose the coordinate and sign of the maximum;
      a sign that ``t_i`` cannot take (``t_hi_i <= 0`` for p_i) gets no binary.
    * L1: ``u_i <= t_i + M_i (1 - q_i)``, ``u_i <= -t_i + M'_i q_i`` with ``u_i in [0, T_i]``,
      ``M_i = T_i - t_lo_i``, ``M'_i = T_i + t_hi_i``; objective ``sum u_i``; coordinates of fixed sign get
      ``u_i <= t_i`` (or ``-t_i``) without a binary.

    * L2: ``s in [0, ||T||_2]`` with the non-convex quadratic row ``s^2 - sum_i t_i^2 <= 0``; objective ``s``
      (so the objective is the distance itself, in the units of the other norms).

    At an optimum the objective equals ``||t||`` and every point (a, b) has a feasible completion, so the
    relaxation is exact. ``symmetric=True`` (the caller guarantees that t and -t are equally feasible) keeps
    one of each mirror pair: L-inf without the "-" binaries, L1 with ``sum_i t_i >= 0``.
    """
    t_lo, t_hi = np.asarray(t_lo, dtype=np.float64), np.asarray(t_hi, dtype=np.float64)
    d = t_lo.shape[0]
    t = model.add_variables(d, t_lo, t_hi, tags=[VariableTag("aux", neuron=i, index=0) for i in range(d)])
    eye = sp.identity(d, format="csr")
    model.add_constraints(sp.hstack([eye, -eye, eye]), np.concatenate([t, a, b]), 0.0, 0.0,
                          tags=[ConstraintTag("objective", neuron=i, index=0) for i in range(d)])
    reach = np.maximum(np.abs(t_lo), np.abs(t_hi))
    if norm == "linf":
        top = float(reach.max(initial=0.0))
        s = model.add_variable(0.0, top, tag=VariableTag("aux", index=1))
        choices = []
        for i in range(d):
            for sign, big_m, can in ((1.0, top - t_lo[i], t_hi[i] > 0), (-1.0, top + t_hi[i], t_lo[i] < 0 and not symmetric)):
                if not can:
                    continue
                p = model.add_variable(0.0, 1.0, integer=True, tag=VariableTag("binary", neuron=i, index=int(sign < 0)))
                # s - sign t_i + M p <= M
                model.add_constraint({s: 1.0, int(t[i]): -sign, p: big_m}, -INF, big_m,
                                     tag=ConstraintTag("objective", neuron=i, index=1 + int(sign < 0)))
                choices.append(p)
        if choices:
            model.add_constraint((choices, np.ones(len(choices))), 1.0, 1.0, tag=ConstraintTag("objective", index=3))
        else:  # t is identically 0
            model.add_constraint({s: 1.0}, -INF, 0.0, tag=ConstraintTag("objective", index=3))
        return np.array([s])
    if symmetric and norm in ("l1", "l2"):
        model.add_constraint((t, np.ones(d)), 0.0, INF, tag=ConstraintTag("objective", index=4))
    u = _l1_terms(model, t, t_lo, t_hi, reach)
    if norm == "l2":
        s = model.add_variable(0.0, float(np.sqrt(np.sum(reach * reach))), tag=VariableTag("aux", index=3))
        model.add_quadratic_constraint(None, (np.concatenate([[s], t]), np.concatenate([[s], t]),
                                              np.concatenate([[1.0], -np.ones(d)])), -INF, 0.0,
                                       tag=ConstraintTag("objective", index=5))
        # s <= sum u (= ||t||_1 at best, >= ||t||_2): a redundant linear cut that keeps the bound exact where the
        # quadratic row alone is ill-conditioned (near t = 0, a feasibility tolerance of 1e-6 on s^2 allows
        # s = 1e-3; the L1 rows are linear and bound s to the solver's linear tolerance)
        model.add_constraint((np.concatenate([[s], u]), np.concatenate([[1.0], -np.ones(d)])), -INF, 0.0,
                             tag=ConstraintTag("objective", index=6))
        return np.array([s])
    return u


def _l1_terms(model: Model, t: Array, t_lo: Array, t_hi: Array, reach: Array) -> Array:
    """``u_i <= |t_i|`` with binaries for coordinates of either sign (encode_norm_objective's L1 rows)."""
    d = t.shape[0]
    u = model.add_variables(d, 0.0, reach, tags=[VariableTag("aux", neuron=i, index=2) for i in range(d)])
    for i in range(d):
        ui, ti = int(u[i]), int(t[i])
        if t_lo[i] >= 0:
            model.add_constraint({ui: 1.0, ti: -1.0}, -INF, 0.0, tag=ConstraintTag("objective", neuron=i, index=1))
        elif t_hi[i] <= 0:
            model.add_constraint({ui: 1.0, ti: 1.0}, -INF, 0.0, tag=ConstraintTag("objective", neuron=i, index=2))
        else:
            q = model.add_variable(0.0, 1.0, integer=True, tag=VariableTag("binary", neuron=i, index=2))
            m_pos, m_neg = reach[i] - t_lo[i], reach[i] + t_hi[i]
            model.add_constraint({ui: 1.0, ti: -1.0, q: m_pos}, -INF, m_pos, tag=ConstraintTag("objective", neuron=i, index=1))
            model.add_constraint({ui: 1.0, ti: 1.0, q: -m_neg}, -INF, 0.0, tag=ConstraintTag("objective", neuron=i, index=2))
    return u


# -- the query, solver-neutral ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairQuery:
    """``max ||g(x) - g(y)||  s.t.  x in x_set, y in y_set`` and a matching condition on f.

    ``g`` is None for Problems 1 and 2 (the objective is ``||x - y||``). ``match`` is ``"outputs"``
    (``||f(x) - f(y)||_inf <= delta``) or ``"decision"`` (``f(x)`` ranks ``label`` first; y is not used by f).
    """

    kind: str
    f: Network
    x_set: InputSet
    y_set: InputSet
    norm: str
    g: Network | None = None
    match: str = "outputs"
    delta: float = 0.0
    label: int | None = None

    @property
    def y_fixed(self) -> bool:
        return self.y_set.eps == 0.0

    def objective(self, x: Array, y: Array) -> float:
        """The objective on the real networks, float64."""
        if self.g is None:
            return float(distance(x, y, self.norm))
        return float(distance(self.g.forward(x), self.g.forward(y), self.norm))

    def output_difference(self, x: Array, y: Array) -> float:
        return float(np.abs(self.f.forward(x) - self.f.forward(y)).max(initial=0.0))

    def margin(self, x: Array) -> float:
        """Decision invariance: ``logit[label] - max_other logit`` at x (> 0: the decision is kept)."""
        out = self.f.forward(x)
        return float(out[self.label] - np.delete(out, self.label).max(initial=-np.inf))

    def valid(self, x: Array, y: Array, witness_tolerance: float) -> bool:
        inside = bool(self.x_set.contains(x, tol=0.0)) and bool(self.y_set.contains(y, tol=0.0))
        if self.match == "decision":
            return inside and self.margin(x) > 0.0
        return inside and self.output_difference(x, y) <= self.delta + witness_tolerance


@dataclass
class _Encoded:
    model: Model
    copies: dict[int, NetworkEncoding]
    x: Array
    y: Array
    geometric_bound: float


def _box_objective_bound(t_lo: Array, t_hi: Array, norm: str) -> float:
    reach = np.maximum(np.abs(t_lo), np.abs(t_hi))
    if norm == "l2":
        return float(np.sqrt(np.sum(reach * reach)))
    return float(reach.max(initial=0.0) if norm == "linf" else reach.sum())


def shared_prefix(f: Network, g: Network) -> int:
    """How many leading layers f and g have in common (same weights, biases and activation).

    Problem 3 encodes g on the same inputs as f; the common layers are encoded once (copies 2/3 continue from
    copies 0/1), which is exact and lets the LP see that, e.g., g = f gives ``g(x) - g(y) = f(x) - f(y)``.
    """
    k = 0
    for lf, lg in zip(f.layers, g.layers):
        if lf.activation.name != lg.activation.name or lf.weight.shape != lg.weight.shape \
                or not (np.array_equal(lf.weight, lg.weight) and np.array_equal(lf.bias, lg.bias)):
            break
        k += 1
    return k


def suffix(network: Network, k: int) -> Network:
    """The layers of ``network`` from ``k`` on (a network of its own, layers re-indexed from 0)."""
    return Network(network.layers[k:], name=f"{network.name}[{k}:]")


def is_symmetric(query: PairQuery) -> bool:
    """Swapping x and y maps the feasible set onto itself (Problems 1 and 3) and negates ``g(x) - g(y)``."""
    return query.match == "outputs" and query.x_set is query.y_set


def build_model(query: PairQuery, bounds: dict[int, list[LayerBounds]], segments: dict[int, SegmentMap]) -> _Encoded:
    """The MIP of a :class:`PairQuery` (module docstring): copies 0/1 of f on x/y, copies 2/3 of g on x/y.

    When f and g share their first k layers (:func:`shared_prefix`), copies 2/3 encode only g's layers from k
    on (as :func:`suffix`, whose ``bounds`` and ``segments`` the caller keys from layer 0), starting from
    copies 0/1's post-activations of layer k-1; if g = f the objective reads copies 0/1's outputs directly.
    For symmetric queries (:func:`is_symmetric`) one of each pair of mirror solutions is cut off: L-inf keeps
    only the "+" sign binaries (``x_i - y_i`` is the maximum), L1 adds ``sum_i t_i >= 0``.
    """
    model = Model(f"{query.kind}-mip")
    quadratic = query.norm == "l2"  # L2 queries go to quadratic back-ends only (_run): the balls exactly
    x = encode_input_set(model, query.x_set, copy=0, quadratic=quadratic)
    y = encode_input_set(model, query.y_set, copy=1, quadratic=quadratic)
    copies: dict[int, NetworkEncoding] = {}

    def encode(copy: int, net: Network, inputs: Array, input_set: InputSet) -> NetworkEncoding:
        copies[copy] = encode_network(model, net, input_set, bounds[copy], mode=MIP, segments=segments.get(copy),
                                      inputs=inputs, copy=copy)
        return copies[copy]

    fx = encode(0, query.f, x, query.x_set)
    last = len(query.f.layers) - 1
    if query.match == "outputs":
        fy = encode(1, query.f, y, query.y_set)
        n = query.f.output_size
        eye = sp.identity(n, format="csr")
        model.add_constraints(sp.hstack([eye, -eye]), np.concatenate([fx.outputs, fy.outputs]), -query.delta, query.delta,
                              tags=[ConstraintTag("output_match", last, k) for k in range(n)])
    else:
        others = [k for k in range(query.f.output_size) if k != query.label]
        for k in others:
            model.add_constraint({int(fx.outputs[query.label]): 1.0, int(fx.outputs[k]): -1.0}, 0.0, INF,
                                 tag=ConstraintTag("decision", last, k))
    if query.g is None:
        (xl, xh), (yl, yh) = query.x_set.box(), query.y_set.box()
        a, b = x, y
    else:
        k = shared_prefix(query.f, query.g) if query.match == "outputs" else 0
        if k == len(query.g.layers):
            a, b = fx.outputs, copies[1].outputs
            xl, xh, yl, yh = bounds[0][-1].lower, bounds[0][-1].upper, bounds[1][-1].lower, bounds[1][-1].upper
        else:
            start_x = x if k == 0 else fx.post[k - 1]
            start_y = y if k == 0 else copies[1].post[k - 1]
            tail = suffix(query.g, k)
            a = encode(2, tail, start_x, query.x_set).outputs
            b = encode(3, tail, start_y, query.y_set).outputs
            xl, xh = bounds[2][-1].lower, bounds[2][-1].upper
            yl, yh = bounds[3][-1].lower, bounds[3][-1].upper
    t_lo, t_hi = difference_bounds(xl, xh, yl, yh)
    objective = encode_norm_objective(model, a, b, t_lo, t_hi, query.norm, symmetric=is_symmetric(query))
    model.set_objective((objective, np.ones(objective.size)), sense=Sense.MAXIMIZE)
    return _Encoded(model, copies, x, y, _box_objective_bound(t_lo, t_hi, query.norm))


# -- witnesses ----------------------------------------------------------------------------------------------


def jacobian(network: Network, x: Array) -> tuple[Array, Array]:
    """``(f(x), J_f(x))`` in float64 by the chain rule (for ReLU, the affine piece holding x)."""
    a = np.asarray(x, dtype=np.float64)
    jac = np.eye(a.shape[0])
    for layer in network.layers:
        z = layer.pre_activation(a)
        jac = layer.weight @ jac
        a = layer.activation.value(z)
        jac = np.asarray(layer.activation.slope(z), dtype=np.float64)[:, None] * jac
    return a, jac


def polish_pair(query: PairQuery, x: Array, y: Array) -> tuple[Array, Array]:
    """Gauss-Newton steps towards ``||f(x) - f(y)||_inf <= delta``: the least-norm ``(dx, dy)`` with
    ``J_f(x) dx - J_f(y) dy = D - (f(x) - f(y))``, ``D = clip(f(x) - f(y), -delta, delta)`` the nearest
    allowed difference (dy = 0 when y is fixed), projected back into the input sets; a step is kept only if
    it shrinks the excess over delta. For ReLU networks one step is exact when it stays on the same affine
    pieces; moving to the nearest allowed difference (not to 0) keeps the pair as far apart as the MIP put it.
    """
    def excess(p: Array, q: Array) -> float:
        return max(query.output_difference(p, q) - query.delta, 0.0)

    best = (x, y, excess(x, y))
    for _ in range(_POLISH_STEPS):
        x0, y0, over = best
        if over == 0.0:
            break
        fx, jx = jacobian(query.f, x0)
        fy, jy = jacobian(query.f, y0)
        diff = fx - fy
        system = jx if query.y_fixed else np.hstack([jx, -jy])
        # aim a hair inside the delta box so that the step's second-order error does not leave it
        target = np.clip(diff, -_POLISH_AIM * query.delta, _POLISH_AIM * query.delta)
        step = np.linalg.lstsq(system, target - diff, rcond=None)[0]
        x1 = query.x_set.project(x0 + step[: x0.shape[0]])
        y1 = y0 if query.y_fixed else query.y_set.project(y0 + step[x0.shape[0]:])
        over1 = excess(x1, y1)
        if not over1 < over:
            break
        best = (x1, y1, over1)
    return best[0], best[1]


def _shrink_towards_center(query: PairQuery, x: Array) -> Array | None:
    """Decision invariance: a MIP point on the decision boundary (margin ~ 0) pulled towards c, first slightly,
    then (when the relaxation's point is farther off, before refinement has closed in) by larger steps."""
    c = query.y_set.center
    for theta in (0.0, 1e-9, 1e-7, 1e-5, 1e-3, 1e-2, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9):
        p = query.x_set.project(c + (1.0 - theta) * (x - c))
        if query.margin(p) > 0.0:
            return p
    return None


@dataclass
class Witness:
    x: Array
    y: Array
    objective: float
    output_difference: float
    valid: bool
    margin: float | None = None

    def as_dict(self, norm: str) -> dict:
        out = {"x": self.x, "y": self.y, "objective": self.objective, "distance": float(distance(self.x, self.y, norm)),
               "output_difference": self.output_difference, "valid": self.valid}
        if self.margin is not None:
            out["margin"] = self.margin
        return out


def make_witness(query: PairQuery, x: Array, y: Array, witness_tolerance: float) -> Witness:
    """Re-evaluate a candidate pair on the real networks (after projecting it into the input sets)."""
    x = query.x_set.project(x)
    y = query.y_set.center.copy() if query.y_fixed else query.y_set.project(y)
    if query.match == "decision":
        if query.margin(x) <= 0.0:
            pulled = _shrink_towards_center(query, x)
            x = query.y_set.center.copy() if pulled is None else pulled
    elif query.output_difference(x, y) > query.delta + witness_tolerance:
        x, y = polish_pair(query, x, y)
    margin = query.margin(x) if query.match == "decision" else None
    return Witness(x, y, query.objective(x, y), query.output_difference(x, y), query.valid(x, y, witness_tolerance), margin)


# -- solving with refinement --------------------------------------------------------------------------------


@dataclass
class _Outcome:
    lower: float
    upper: float
    witness: Witness
    rounds: int
    termination: Termination | None
    solver: str
    solve_time: float
    size: dict
    incumbent: float | None = None
    refinement_exhausted: bool = False
    history: list = field(default_factory=list)


def _all_relu(net: Network) -> bool:
    return all(layer.activation.name == "relu" for layer in net.hidden_layers)


def _bounds_for(query: PairQuery, tighten: bool = True) -> dict[int, list[LayerBounds]]:
    """Sound pre-activation bounds per copy: symbolic, then (ReLU networks, ``tighten``) LP-tightened
    (:func:`formulations.tightening.tighten_bounds`: safe dual bounds only), which shrinks the big-M
    constants and the number of unstable neurons, the MILP's size."""
    def sym(net: Network, s: InputSet) -> list[LayerBounds]:
        lo, hi = s.box()
        b = symbolic_bounds(net, lo, hi, ball=s if s.eps > 0 else None)
        if tighten and s.eps > 0 and _all_relu(net) and len(net.layers) > 2:
            b = tighten_bounds(net, s, b, method="lp")
        return b

    out = {0: sym(query.f, query.x_set)}
    if query.match == "outputs":
        out[1] = out[0] if query.y_set is query.x_set else sym(query.f, query.y_set)
    if query.g is not None:
        k = shared_prefix(query.f, query.g) if query.match == "outputs" else 0
        if k < len(query.g.layers):
            # g's bounds over the ball, from layer k on (what copies 2/3 encode)
            out[2] = sym(query.g, query.x_set)[k:]
            out[3] = out[2] if query.y_set is query.x_set else sym(query.g, query.y_set)[k:]
    return out


def _copy_networks(query: PairQuery) -> dict[int, Network]:
    nets = {0: query.f, 1: query.f}
    if query.g is not None:
        k = shared_prefix(query.f, query.g) if query.match == "outputs" else 0
        if k < len(query.g.layers):
            nets[2] = nets[3] = suffix(query.g, k)
    return nets


def maximize_with_refinement(query: PairQuery, *, solver: str, tolerance: float, gap: float,
                             deadline: float | None, max_rounds: int, stop_at_decision: bool,
                             witness_tolerance: float) -> _Outcome:
    """Bracket ``lower <= p* <= upper`` (module docstring), refining smooth segments per copy.

    A generalisation of :func:`formulations.refinement.minimize_with_refinement` to a maximisation over
    several copies of (possibly) two networks; stops when ``upper - lower <= gap``, or (``stop_at_decision``)
    as soon as the verdict is known, or when nothing is left to refine, or at the deadline.
    """
    bounds = _bounds_for(query)
    nets = _copy_networks(query)
    segments = {k: initial_segments(nets[k], b) for k, b in bounds.items()}
    c = query.y_set.center
    start_y = c if query.y_fixed else query.x_set.project(c)
    trivial = make_witness(query, query.x_set.project(c), start_y, witness_tolerance)
    if not trivial.valid:  # x = y (or x = c) is always feasible; only a misclassified centre breaks it
        if query.match == "decision":
            raise InvalidInputError(f"class {query.label} is not strictly first at the centre "
                                    f"(margin {trivial.margin:.3g}): there is no decision to keep")
        raise InvalidInputError(f"the centre does not satisfy the {query.kind} query's own condition "
                                f"(a centre outside the domain moves when projected into it)")
    best, lower, upper = trivial, trivial.objective, np.inf
    outcome = _Outcome(lower, upper, best, 0, None, solver, 0.0, {})
    for rounds in range(1, max_rounds + 1):
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            outcome.termination = Termination.TIME_LIMIT
            break
        enc = build_model(query, bounds, segments)
        outcome.size = enc.model.summary()
        result = solve(enc.model, solver, SolveParameters(time_limit=remaining))
        outcome.rounds, outcome.termination = rounds, result.termination
        outcome.solve_time += result.solve_time + result.build_time
        upper = min(upper, enc.geometric_bound)
        if result.termination == Termination.INFEASIBLE:
            raise UnsoundAnswerError(f"{solver} called the {query.kind} MIP infeasible, but the pair "
                                     f"({'x = c' if query.y_fixed else 'x = y'}) is feasible; answer rejected")
        if result.dual_bound is not None and np.isfinite(result.dual_bound):
            upper = min(upper, sound_upper(result.dual_bound))
        if result.primal is None:
            break
        outcome.incumbent = result.objective_value
        w = make_witness(query, result.primal[enc.x], result.primal[enc.y], witness_tolerance)
        outcome.history.append({"round": rounds, "upper": upper, "candidate": w.objective,
                                "output_difference": w.output_difference, "valid": w.valid})
        if w.valid and w.objective > best.objective:
            best, lower = w, w.objective
        if lower > upper + 1e-5 * (1.0 + abs(upper)):
            raise UnsoundAnswerError(f"{query.kind}: the real networks attain {lower:.9g} at a checked witness pair, "
                                     f"above the dual bound {upper:.9g} of {solver}; answer rejected")
        if result.termination != Termination.OPTIMAL:
            break
        if upper - lower <= gap or (stop_at_decision and (upper <= tolerance or lower > tolerance)):
            break
        refined = 0
        for k, encoding in enc.copies.items():
            if segments[k]:
                segments[k], n = refine_segments(nets[k], segments[k], encoding, result.primal)
                refined += n
        if refined == 0:
            outcome.refinement_exhausted = True
            break
    outcome.lower, outcome.upper, outcome.witness = lower, upper, best
    return outcome


# -- public queries -----------------------------------------------------------------------------------------


def _check_solver(name: str) -> None:
    """Fail early, with a message naming the solver and what is usable, before any work is done."""
    require(name)


def _check_norm(norm) -> str:
    return canonical_norm(norm)


def _check_number(name: str, value, *, positive: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v) or v < 0 or (positive and v == 0):
        raise InvalidInputError(f"{name} must be a finite number {'>' if positive else '>='} 0, got {value!r}")
    return v


def _domain(domain) -> tuple:
    return (-np.inf, np.inf) if domain is None else domain


def _default_delta(networks: Sequence[Network], delta) -> float:
    if delta is not None:
        return _check_number("delta", delta)
    if all(layer.activation.piecewise_linear or layer.activation.name == "identity"
           for net in networks for layer in net.layers):
        return 0.0
    raise InvalidInputError("networks with smooth activations need an output tolerance delta > 0 "
                            "(||f(x) - f(y)||_inf <= delta): exact equality is not decidable by refinement")


def _run(query: PairQuery, *, solver, tolerance, gap, time_limit, max_rounds, stop_at_decision,
         witness_tolerance) -> Certificate:
    started = time.monotonic()
    solver = solver or default_mip_solver()
    _check_solver(solver)
    if query.norm == "l2" and not capabilities(solver).quadratic:
        raise InvalidInputError(f"L2 invertibility queries maximise a quadratic distance, which solver {solver!r} cannot "
                                f"state (it is not linearised); use 'scip' or 'gurobi'")
    tolerance = _check_number("tolerance", tolerance)
    gap = tolerance if gap is None else _check_number("gap", gap)
    deadline = None if time_limit is None else started + _check_number("time_limit", time_limit)
    out = maximize_with_refinement(query, solver=solver, tolerance=tolerance, gap=gap, deadline=deadline,
                                   max_rounds=max_rounds, stop_at_decision=stop_at_decision,
                                   witness_tolerance=witness_tolerance)
    if out.upper <= tolerance:
        verdict, reason = Verdict.VERIFIED, None
    elif out.lower > tolerance:
        verdict, reason = Verdict.FALSIFIED, None
    else:
        verdict = Verdict.UNKNOWN
        if out.termination in TERMINATION_REASONS:
            reason = reason_for(out.termination)
        elif out.refinement_exhausted or out.rounds >= max_rounds:
            reason = UnknownReason.REFINEMENT_LIMIT
        else:
            reason = UnknownReason.SOLVER_ERROR
    w = out.witness
    extra = {
        "witness": w.as_dict(query.norm),
        "center": query.x_set.center,
        "delta": query.delta,
        "witness_tolerance": witness_tolerance,
        "tolerance": tolerance,
        "match": query.match,
        "network": query.f.digest(),
        "refinement_rounds": out.rounds,
        "solver_incumbent": out.incumbent,
        "termination": None if out.termination is None else out.termination.value,
        "history": out.history,
    }
    if query.g is not None:
        extra["network2"] = query.g.digest()
    if query.label is not None:
        extra["label"] = query.label
    return Certificate(
        kind=query.kind, verdict=verdict, lower=float(out.lower), upper=float(out.upper), method=MIP, stage=MIP,
        reason=reason, label=query.label, eps=float(query.x_set.eps), norm=query.norm,
        counterexample=w.x if verdict == Verdict.FALSIFIED else None,
        counterexample_value=w.objective if verdict == Verdict.FALSIFIED else None,
        solver=solver, times={"mip": out.solve_time, "total": time.monotonic() - started}, size=out.size, extra=extra,
    )


_COMMON_DOC = """
    Args (common):
        norm: ``"linf"``, ``"l1"`` or ``"l2"`` (ball and objective); L2 needs a quadratic back-end (module docstring).
        domain: a box ``(lo, hi)`` intersected with the ball; None (default) for all of R^d.
        delta: output tolerance ``||f(x) - f(y)||_inf <= delta``; default 0 for piecewise-linear networks, and
            required (> 0) for smooth ones.
        tolerance: p* <= tolerance counts as invertible (VERIFIED); a witness above it as FALSIFIED.
        gap: refinement stops once ``upper - lower <= gap`` (default: ``tolerance``).
        stop_at_decision: stop as soon as the verdict is known (radius searches).
        witness_tolerance: how far beyond delta a re-evaluated witness's output difference may be.

    Returns:
        A :class:`Certificate`; the witness pair is in ``extra["witness"]`` (module docstring).

    Raises:
        InvalidInputError, SolverNotAvailableError, UnsoundAnswerError.
"""


def injectivity(network: Network, center: Array, radius: float, *, norm: str = "linf", domain=None,
                delta: float | None = None, solver: str | None = None, tolerance: float = 1e-4,
                gap: float | None = None, time_limit: float | None = None, max_rounds: int = 20,
                stop_at_decision: bool = False, witness_tolerance: float = WITNESS_TOLERANCE) -> Certificate:
    """Problem 1: ``p* = max ||x - y||  s.t.  x, y in B(center, radius),  ||f(x) - f(y)|| <= delta``."""
    c = network.check_input(center)
    ball = InputSet(c, _check_number("radius", radius), norm=_check_norm(norm), domain=_domain(domain))
    q = PairQuery("injectivity", network, ball, ball, ball.norm, delta=_default_delta([network], delta))
    return _run(q, solver=solver, tolerance=tolerance, gap=gap, time_limit=time_limit, max_rounds=max_rounds,
                stop_at_decision=stop_at_decision, witness_tolerance=witness_tolerance)


def preimage(network: Network, center: Array, radius: float, *, norm: str = "linf", domain=None,
             delta: float | None = None, solver: str | None = None, tolerance: float = 1e-4,
             gap: float | None = None, time_limit: float | None = None, max_rounds: int = 20,
             stop_at_decision: bool = False, witness_tolerance: float = WITNESS_TOLERANCE) -> Certificate:
    """Problem 2: ``max ||x - c||  s.t.  x in B(c, radius),  ||f(x) - f(c)|| <= delta`` (another preimage of
    f(c)); y is fixed to c (a ball of radius 0), so the answer is at most Problem 1's."""
    c = network.check_input(center)
    norm = _check_norm(norm)
    ball = InputSet(c, _check_number("radius", radius), norm=norm, domain=_domain(domain))
    point = InputSet(c, 0.0, norm=norm, domain=(-np.inf, np.inf))
    q = PairQuery("preimage", network, ball, point, norm, delta=_default_delta([network], delta))
    return _run(q, solver=solver, tolerance=tolerance, gap=gap, time_limit=time_limit, max_rounds=max_rounds,
                stop_at_decision=stop_at_decision, witness_tolerance=witness_tolerance)


def dependence(f1: Network, f2: Network, center: Array, radius: float, *, norm: str = "linf", domain=None,
               delta: float | None = None, solver: str | None = None, tolerance: float = 1e-4,
               gap: float | None = None, time_limit: float | None = None, max_rounds: int = 20,
               stop_at_decision: bool = False, witness_tolerance: float = WITNESS_TOLERANCE) -> Certificate:
    """Problem 3: ``p12 = max ||f2(x1) - f2(x2)||  s.t.  x1, x2 in B(c, r),  ||f1(x1) - f1(x2)|| <= delta``.

    p12 <= tolerance (VERIFIED): f2 is a function of f1 on the ball. The witness's ``objective`` is
    ``||f2(x) - f2(y)||`` and its ``output_difference`` is ``||f1(x) - f1(y)||_inf``.
    """
    if f1.input_size != f2.input_size:
        raise InvalidInputError(f"f1 takes {f1.input_size} inputs but f2 takes {f2.input_size}")
    c = f1.check_input(center)
    ball = InputSet(c, _check_number("radius", radius), norm=_check_norm(norm), domain=_domain(domain))
    q = PairQuery("dependence", f1, ball, ball, ball.norm, g=f2, delta=_default_delta([f1, f2], delta))
    return _run(q, solver=solver, tolerance=tolerance, gap=gap, time_limit=time_limit, max_rounds=max_rounds,
                stop_at_decision=stop_at_decision, witness_tolerance=witness_tolerance)


def decision_invariance(network: Network, center: Array, *, radius: float | None = None, norm: str = "linf",
                        domain=(0.0, 1.0), label: int | None = None, delta: float | None = None,
                        solver: str | None = None, tolerance: float = 1e-4, gap: float | None = None,
                        time_limit: float | None = None, max_rounds: int = 20,
                        witness_tolerance: float = WITNESS_TOLERANCE) -> Certificate:
    """How far can x move from c (within ``domain`` and ``radius``) while the decision stays put?

    ``delta=None``: the predicted class ``label`` (default: the class of c) stays ranked first
    (``logit[label] >= logit[k]`` in the MIP; the witness must have a strictly positive margin).
    ``delta`` a number: every logit stays within delta of ``f(c)`` (Problem 2 with a tolerance).
    ``radius`` defaults to the domain's diameter in ``norm`` (the whole domain). The farthest input is
    ``extra["witness"]["x"]``; ``lower``/``upper`` bracket its distance from c.
    """
    c = network.check_input(center)
    norm = _check_norm(norm)
    dlo, dhi = (np.broadcast_to(np.asarray(v, dtype=np.float64), c.shape) for v in _domain(domain))
    if radius is None:
        spans = dhi - dlo
        if not np.isfinite(spans).all():
            raise InvalidInputError("decision invariance over an unbounded domain needs a radius")
        radius = float(spans.max() if norm == "linf" else np.sqrt(np.sum(spans * spans)) if norm == "l2"
                       else spans.sum())
    ball = InputSet(c, _check_number("radius", radius), norm=norm, domain=_domain(domain))
    point = InputSet(c, 0.0, norm=norm, domain=(-np.inf, np.inf))
    if delta is not None:
        q = PairQuery("invariance", network, ball, point, norm, delta=_check_number("delta", delta))
    else:
        predicted = int(network.predict(c))
        label = predicted if label is None else int(label)
        if not 0 <= label < network.output_size:
            raise InvalidInputError(f"label {label} is out of range for {network.output_size} outputs")
        q = PairQuery("invariance", network, ball, point, norm, match="decision", label=label)
    return _run(q, solver=solver, tolerance=tolerance, gap=gap, time_limit=time_limit, max_rounds=max_rounds,
                stop_at_decision=False, witness_tolerance=witness_tolerance)


for _fn in (injectivity, preimage, dependence):
    _fn.__doc__ += _COMMON_DOC


# -- certified radius ---------------------------------------------------------------------------------------


def certified_radius(query: Callable[[float], Certificate], *, start: float = 0.1, growth: float = 5.0,
                     gap: float = 1e-3, max_radius: float = 100.0, time_limit: float | None = None) -> Certificate:
    """The largest radius at which ``query(r)`` is VERIFIED, by growth and bisection (Cui et al., §4).

    Valid because p*(r) is non-decreasing in r (the balls B(c, r) nest). Start at ``start``; while certified,
    multiply by ``growth`` (up to ``max_radius``); then bisect between the last certified and the first
    uncertified radius until they are within ``gap``. (A first failure at ``start`` bisects down from it.)

    Returns:
        A Certificate of kind ``"<query kind>-radius"``: ``lower`` = the largest certified radius (every
        evaluation that gave it was VERIFIED), ``upper`` = the smallest radius not certified (``inf`` when
        ``max_radius`` itself was certified); VERIFIED when ``lower > 0``, FALSIFIED when nothing was certified
        and the failure was a checked witness, UNKNOWN otherwise. ``extra["evaluations"]`` lists every
        (radius, verdict, lower, upper, seconds); ``extra["upper_falsified"]`` says whether the radius above was
        refuted by a witness (True) or only not certified (unknown).
    """
    start, growth, gap = (_check_number(n, v, positive=True) for n, v in (("start", start), ("growth", growth), ("gap", gap)))
    if growth <= 1.0:
        raise InvalidInputError(f"growth must be > 1, got {growth}")
    began = time.monotonic()
    evaluations: list[dict] = []
    certs: dict[float, Certificate] = {}

    def ok(r: float) -> bool:
        t0 = time.monotonic()
        cert = query(r)
        certs[r] = cert
        evaluations.append({"radius": r, "verdict": cert.verdict.value, "lower": cert.lower, "upper": cert.upper,
                            "seconds": time.monotonic() - t0})
        return cert.verdict == Verdict.VERIFIED

    def out_of_time() -> bool:
        return time_limit is not None and time.monotonic() - began >= time_limit

    lo, hi = 0.0, np.inf
    r = min(start, max_radius)
    while True:
        if ok(r):
            lo = r
            if r >= max_radius or out_of_time():
                break
            r = min(r * growth, max_radius)
        else:
            hi = r
            break
    while np.isfinite(hi) and hi - lo > gap and not out_of_time():
        mid = 0.5 * (lo + hi)
        if ok(mid):
            lo = mid
        else:
            hi = mid
    kind = next(iter(certs.values())).kind
    falsified = np.isfinite(hi) and certs[hi].verdict == Verdict.FALSIFIED
    if lo > 0:
        verdict, reason = Verdict.VERIFIED, None
    elif falsified:
        verdict, reason = Verdict.FALSIFIED, None
    else:
        verdict, reason = Verdict.UNKNOWN, certs[hi].reason if np.isfinite(hi) else None
    ref = certs[hi] if np.isfinite(hi) else certs[lo]
    return Certificate(
        kind=f"{kind}-radius", verdict=verdict, lower=float(lo), upper=float(hi), method=MIP, stage=MIP, reason=reason,
        eps=float(lo), norm=ref.norm, solver=ref.solver,
        times={"total": time.monotonic() - began, "mip": float(sum(c.times.get("mip", 0.0) for c in certs.values()))},
        size=ref.size,
        extra={"evaluations": evaluations, "upper_falsified": bool(falsified),
               "witness_above": ref.extra.get("witness") if np.isfinite(hi) else None,
               "start": start, "growth": growth, "gap": gap, "max_radius": max_radius},
    )


def injectivity_radius(network: Network, center: Array, *, norm: str = "linf", domain=None, delta: float | None = None,
                       solver: str | None = None, tolerance: float = 1e-4, start: float = 0.1, growth: float = 5.0,
                       gap: float = 1e-3, max_radius: float = 100.0, time_limit: float | None = None,
                       query_time_limit: float | None = None) -> Certificate:
    """The certified radius of injectivity (Problem 1) around ``center`` (see :func:`certified_radius`)."""
    return certified_radius(
        lambda r: injectivity(network, center, r, norm=norm, domain=domain, delta=delta, solver=solver,
                              tolerance=tolerance, time_limit=query_time_limit, stop_at_decision=True),
        start=start, growth=growth, gap=gap, max_radius=max_radius, time_limit=time_limit)


def dependence_radius(f1: Network, f2: Network, center: Array, *, norm: str = "linf", domain=None,
                      delta: float | None = None, solver: str | None = None, tolerance: float = 1e-4,
                      start: float = 0.1, growth: float = 5.0, gap: float = 1e-3, max_radius: float = 100.0,
                      time_limit: float | None = None, query_time_limit: float | None = None) -> Certificate:
    """The largest radius on which f2 is certified a function of f1 (Problem 3; the paper's r_12)."""
    return certified_radius(
        lambda r: dependence(f1, f2, center, r, norm=norm, domain=domain, delta=delta, solver=solver,
                             tolerance=tolerance, time_limit=query_time_limit, stop_at_decision=True),
        start=start, growth=growth, gap=gap, max_radius=max_radius, time_limit=time_limit)


def as_image(x: Array, shape: tuple[int, ...] | None = None) -> Array:
    """A witness input reshaped as an image (square by default: 49 -> 7x7), for display."""
    x = np.asarray(x, dtype=np.float64)
    if shape is None:
        side = int(round(np.sqrt(x.size)))
        if side * side != x.size:
            raise InvalidInputError(f"an input of length {x.size} is not a square image; give the shape")
        shape = (side, side)
    return x.reshape(shape)
