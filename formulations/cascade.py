"""The batched cascade: exact robustness verdicts for a batch of inputs, cheapest methods first (issue 7).

A batch query asks, for each input ``c_i`` with label ``y_i``, whether ``m_ik = min_{x in S_i} f(x)[y_i] - f(x)[k]``
is positive for every other class k (``S_i`` = the eps-ball around ``c_i`` clipped to the domain). Most
queries are decided by cheap batched methods; only the few that remain pay for an LP, and fewer still for the
exact MIP. Each (input, target) pair carries a bracket ``lower <= m_ik <= upper``; the stages narrow it:

0. **center** — the margins at the centre itself: a misclassified input is falsified there.
1. **symbolic** — CROWN/DeepPoly back-substitution of the margins over the whole chunk at once, in float64
   matrix operations (:func:`formulations.bounds.margin_bounds_batch`; Zhang et al., NeurIPS 2018; Singh
   et al., POPL 2019) with certified envelope lines and GELU's exact interval image: lower bounds.
2. **attack** — batched PGD over every undecided input and every target (:func:`formulations.attack.pgd_attack`;
   Madry et al., ICLR 2018): points re-evaluated on the real network in float64, upper bounds and
   counterexamples. A cheap pass (few steps, the centre as start) then a stronger one for what is left.
3. **lp** — the envelope LP relaxation (design.md §3) of the remaining targets, in *one* HiGHS model per
   call, re-solved with each input's bounds, envelope lines and objective changed in place
   (:class:`formulations.backends.highs_persistent.PersistentLP`). The envelope lines depend on each
   neuron's [l, u], so they are recomputed (and certified) for every input and written into the rows'
   coefficients and bounds; the verdict uses the safe bound from the LP's duals, never its primal.
   Optionally the second hidden layer's bounds are first tightened by LP (min/max of each neuron).
4. **mip** — the exact piecewise MIP with refinement (:func:`formulations.refinement.minimize_with_refinement`,
   design.md §4) for the targets the LP could not decide, cheapest-looking first, stopping at the first
   counterexample.

Soundness: *verified* only from a symbolic bound or a solver's dual bound (less the slack of
:func:`~formulations.refinement.sound_lower`); *falsified* only with a point inside ``S_i`` whose margin,
re-evaluated with :meth:`Network.forward`, is <= 0 (re-checked once more before the certificate is made).
A lower bound above a margin the real network attains is a contradiction: :class:`UnsoundAnswerError`.
Each certificate's ``stage`` names the stage that decided it.
"""

from __future__ import annotations

import heapq
import itertools
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .activations import Activation
from .attack import pgd_attack
from .backends import default_mip_solver
from .backends.base import SolveParameters, Termination
from .backends.highs_persistent import NAME, PersistentLP
from .bounds import LayerBounds, check_labels, margin_bounds_batch, symbolic_bounds_batch
from .certificate import Certificate, TargetBound, UnknownReason, Verdict
from .encoding import LP, MIP, encode_affine, encode_envelope, margin_objective
from .envelopes import envelope_arrays, linear_bounds
from .errors import InvalidInputError, UnsoundAnswerError
from .input_sets import InputSet, ball_boxes, contains_points, validate_balls
from .model import Model, Sense, VariableTag
from .network import Network
from .refinement import minimize_with_refinement, sound_lower

Array = np.ndarray
STAGES = ("center", "symbolic", "attack", "lp", "mip")
_LOWER_STAGES = ("symbolic", "lp", "mip")  # stages that prove lower bounds, in cascade order
# A lower bound may exceed an attained margin by this much (relative + absolute) before it is a contradiction:
# the slack granted to solvers' tolerances (refinement.sound_lower) is far smaller.
_CONTRADICTION_TOL = 1e-6


@dataclass(frozen=True, kw_only=True)
class CascadeSettings:
    """Thresholds and limits of the cascade's stages (all keyword-only; defaults tuned on the 49-3-3-10 nets).

    Attributes:
        symbolic: run stage 1 (CROWN/DeepPoly margins).
        attack_steps, attack_restarts: the cheap PGD pass over every undecided input (restarts = random
            starts besides the centre).
        strong_attack_steps, strong_attack_restarts: the second pass over inputs still undecided (0 steps:
            skipped).
        lp: run stage 3. ``lp_lines``: certified envelope lines per side and neuron (plus the symbolic bound's
            own line). ``lp_tighten``: tighten hidden layers' bounds by LP (2 LPs per neuron) when a margin LP
            fails. ``lp_time_limit``: seconds per LP.
        branching: decide stage 4 first by branch and bound over segments with LP nodes (below);
            ``branch_node_limit`` LPs per target before the MIP solver takes over.
        mip_solver: the MIP back-end (None: :func:`formulations.backends.default_mip_solver`).
        mip_tolerance, mip_max_rounds, mip_time_limit: refinement tolerance, rounds and seconds per target.
        seed: seed of the attacks' random starts.
    """

    symbolic: bool = True
    attack_steps: int = 20
    attack_restarts: int = 0
    strong_attack_steps: int = 50
    strong_attack_restarts: int = 5
    lp: bool = True
    lp_lines: int = 3
    lp_tighten: bool = True
    lp_time_limit: float | None = 10.0
    branching: bool = True
    branch_node_limit: int = 400
    mip_solver: str | None = None
    mip_tolerance: float = 1e-4
    mip_max_rounds: int = 30
    mip_time_limit: float | None = 60.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("attack_steps", "attack_restarts", "strong_attack_steps", "strong_attack_restarts",
                     "lp_lines", "branch_node_limit", "mip_max_rounds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise InvalidInputError(f"CascadeSettings.{name} must be an integer >= 0, got {value!r}")
        if self.lp_lines < 1:
            raise InvalidInputError(f"CascadeSettings.lp_lines must be >= 1, got {self.lp_lines}")
        for name in ("lp_time_limit", "mip_time_limit"):
            value = getattr(self, name)
            if value is not None and not (np.isfinite(value) and value > 0):
                raise InvalidInputError(f"CascadeSettings.{name} must be a positive number or None, got {value!r}")
        if not (np.isfinite(self.mip_tolerance) and self.mip_tolerance > 0):
            raise InvalidInputError(f"CascadeSettings.mip_tolerance must be > 0, got {self.mip_tolerance!r}")


OnDecided = Callable[[list[int], list[Certificate]], None]  # (indices, their certificates)


@dataclass
class CascadeResult:
    """The certificates of a batch (in input order) and the wall time of each stage."""

    certificates: list[Certificate]
    stage_times: dict[str, float]

    def decided_by(self) -> dict[str, int]:
        """How many queries each stage decided (unknown ones are not counted)."""
        counts = dict.fromkeys(STAGES, 0)
        for c in self.certificates:
            if c.verdict != Verdict.UNKNOWN:
                counts[c.stage] += 1
        return counts


# -- the running brackets ------------------------------------------------------------------------------


@dataclass
class _Brackets:
    """``lower[i, k] <= m_ik <= upper[i, k]`` for every input i and target k, with where each came from.

    Entries with ``k == label_i`` are not targets: lower = +inf, upper = +inf. ``points[i, k]`` attains
    ``upper[i, k]`` on the real network (NaN where upper is +inf).
    """

    labels: Array
    lower: Array
    upper: Array
    lower_stage: Array
    upper_stage: Array
    points: Array
    termination: dict = field(default_factory=dict)  # (i, k) -> Termination of the last solver run
    solver: dict = field(default_factory=dict)

    @classmethod
    def start(cls, labels: Array, n_out: int, d: int) -> "_Brackets":
        n = labels.shape[0]
        target = np.arange(n_out)[None, :] != labels[:, None]
        lower = np.where(target, -np.inf, np.inf)
        return cls(labels, lower, np.full((n, n_out), np.inf), np.full((n, n_out), "", dtype=object),
                   np.full((n, n_out), "", dtype=object), np.full((n, n_out, d), np.nan))

    @property
    def falsified(self) -> Array:
        return (self.upper <= 0.0).any(axis=1)

    @property
    def verified(self) -> Array:
        return (self.lower > 0.0).all(axis=1)

    @property
    def undecided(self) -> Array:
        return ~(self.falsified | self.verified)

    def open_targets(self, i: int) -> Array:
        """Targets of input i whose sign is not yet decided (none once the input is falsified)."""
        if self.upper[i].min() <= 0.0:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(self.lower[i] <= 0.0)

    def offer_lower(self, rows: Array, values: Array, stage: str) -> None:
        """Raise lower bounds (rows: input indices, values: (len(rows), n_out), -inf where no news)."""
        current = self.lower[rows]
        better = values > current
        self.lower[rows] = np.where(better, values, current)
        self.lower_stage[rows] = np.where(better, stage, self.lower_stage[rows])
        self._check(rows)

    def offer_points(self, rows: Array, points: Array, margins: Array, stage: str) -> None:
        """Lower upper bounds with points (len(rows), d) and their re-evaluated margins (len(rows), n_out)."""
        target = np.arange(self.upper.shape[1])[None, :] != self.labels[rows][:, None]
        current = self.upper[rows]
        better = target & (margins < current)
        self.upper[rows] = np.where(better, margins, current)
        self.upper_stage[rows] = np.where(better, stage, self.upper_stage[rows])
        pts = self.points[rows]
        pts[better] = np.broadcast_to(points[:, None, :], pts.shape)[better]
        self.points[rows] = pts
        self._check(rows)

    def _check(self, rows: Array) -> None:
        lo, up = self.lower[rows], self.upper[rows]
        bad = np.isfinite(up) & (lo > up + _CONTRADICTION_TOL * (1.0 + np.abs(up)))
        if bad.any():
            r, k = np.argwhere(bad)[0]
            i = int(np.asarray(rows).reshape(-1)[r]) if np.ndim(rows) else int(rows)
            raise UnsoundAnswerError(
                f"input {i}, target {k}: lower bound {lo[r, k]:.9g} (from {self.lower_stage[i, k]}) exceeds the "
                f"margin {up[r, k]:.9g} the real network attains (found by {self.upper_stage[i, k]}); answer rejected")


def _margins(network: Network, x: Array, labels: Array) -> Array:
    """``f(x_i)[y_i] - f(x_i)[k]`` for rows x (n, d), shape (n, n_out), in float64."""
    y = network.forward(x)
    return y[np.arange(y.shape[0]), labels][:, None] - y


# -- validation --------------------------------------------------------------------------------------


def _validate(network: Network, xs, labels, eps, method: str, norm: str, domain):
    xs = network.check_input(xs)
    if xs.ndim != 2:
        raise InvalidInputError(f"certify_batch takes inputs of shape (n, {network.input_size}), got {xs.shape}")
    if method not in (LP, MIP):
        raise InvalidInputError(f"method must be 'lp' or 'mip', got {method!r}")
    centers, eps, norm, dlo, dhi = validate_balls(xs, eps, norm, domain)
    labels = check_labels(labels, centers.shape[0], network.output_size)
    return centers, labels, eps, norm, dlo, dhi


# -- stage 3: one persistent LP per network --------------------------------------------------------------


class _EnvelopeLP:
    """The LP envelope relaxation of ``network`` over a box, built once and re-targeted per input.

    Structure (fixed): input variables, per layer the affine rows ``W a - z = -b``, per hidden neuron
    ``lp_lines + 1`` lower and upper envelope rows ``a - s z >= c`` / ``<= c`` (the rows of
    :func:`formulations.encoding.encode_envelope`, for every non-identity activation). Per input: the box
    and the pre-/post-activation bounds become variable bounds, and every envelope row gets the slope
    ``-s`` and right-hand side ``c`` of the lines certified on *that* input's [l, u].
    """

    def __init__(self, network: Network, n_lines: int, time_limit: float | None) -> None:
        self.network, self.n_lines = network, n_lines
        self.params = SolveParameters(time_limit=time_limit)
        model = Model(f"cascade-lp[{network.name}]")
        d = network.input_size
        self.inputs = model.add_variables(d, 0.0, 1.0, tags=[VariableTag("input", neuron=j) for j in range(d)])
        self.pre: list[Array] = []
        self.post: list[Array | None] = []
        self.rows: list[tuple[Array, Array] | None] = []  # per layer: (lower rows (m, K), upper rows (m, K))
        a = self.inputs
        last = len(network.layers) - 1
        for i, layer in enumerate(network.layers):
            m = layer.n_out
            # placeholder bounds, replaced per input; the envelope rows built on [-1, 1] give the structure
            placeholder = LayerBounds(-np.ones(m), np.ones(m))
            z = encode_affine(model, layer.weight, layer.bias, a, placeholder, layer=i)
            self.pre.append(z)
            if i == last or layer.activation.name == "identity":
                self.post.append(None)
                self.rows.append(None)
                a = z
                continue
            first = model.num_constraints
            a = encode_envelope(model, layer.activation, z, placeholder, layer=i, n_lines=n_lines)
            self.post.append(a)
            self.rows.append(self._envelope_rows(model, first, i, m))
        self.lp = PersistentLP(model)
        self.lp_name = NAME
        self.n_vars = model.num_variables

    @staticmethod
    def _envelope_rows(model: Model, first: int, layer: int, m: int) -> tuple[Array, Array]:
        """Row indices of layer's envelope lines, read back from their tags: (m, K) per side."""
        lower, upper = {}, {}
        for row in range(first, model.num_constraints):
            tag = model.constraint_tags[row]
            side = lower if tag.kind == "envelope_lower" else upper
            side[(tag.neuron, tag.index)] = row
        k = len(lower) // m
        as_array = lambda side: np.array([[side[(j, q)] for q in range(k)] for j in range(m)], dtype=np.int64)
        return as_array(lower), as_array(upper)

    def lines(self, act: Activation, l: Array, u: Array) -> tuple[Array, Array, Array, Array]:
        """The certified lines of :func:`encode_envelope` for many neurons at once, (n, K) each side."""
        lo_s, lo_c, up_s, up_c = envelope_arrays(act, l, u, self.n_lines)
        a_lo, b_lo, a_up, b_up = linear_bounds(act, l, u)
        return (np.column_stack([lo_s, a_lo]), np.column_stack([lo_c, b_lo]),
                np.column_stack([up_s, a_up]), np.column_stack([up_c, b_up]))

    def set_layer(self, i: int, l: Array, u: Array, lines=None) -> None:
        """Bounds [l, u] on layer i's pre-activations; the image bounds and envelope rows to match."""
        lp = self.lp
        lp.set_variable_bounds(self.pre[i], l, u)
        if self.rows[i] is None:
            return
        act = self.network.layers[i].activation
        f_min, f_max = act.image(l, u)
        lp.set_variable_bounds(self.post[i], f_min, f_max)
        lo_s, lo_c, up_s, up_c = lines if lines is not None else self.lines(act, l, u)
        lower_rows, upper_rows = self.rows[i]
        z_cols = np.broadcast_to(self.pre[i][:, None], lower_rows.shape)
        lp.set_coefficients(np.concatenate([lower_rows.ravel(), upper_rows.ravel()]),
                            np.concatenate([z_cols.ravel(), z_cols.ravel()]),
                            -np.concatenate([lo_s.ravel(), up_s.ravel()]))
        lp.set_row_bounds(lower_rows.ravel(), lo_c.ravel(), np.inf)
        lp.set_row_bounds(upper_rows.ravel(), -np.inf, up_c.ravel())

    def set_box(self, lo: Array, hi: Array) -> None:
        self.lp.set_variable_bounds(self.inputs, lo, hi)

    def minimize(self, variables: Array, coefficients: Array):
        c = np.zeros(self.n_vars)
        np.add.at(c, variables, coefficients)
        self.lp.set_objective(c, sense=Sense.MINIMIZE)
        return self.lp.solve(self.params)


class _Relaxations:
    """Per-input layer bounds of the LP inputs and their certified lines, computed a whole layer at a time."""

    def __init__(self, env: _EnvelopeLP, bounds: list[LayerBounds]) -> None:
        self.env = env
        self.lower = [b.lower.copy() for b in bounds]
        self.upper = [b.upper.copy() for b in bounds]
        self.lines: list = [None] * len(bounds)
        for i in range(len(bounds)):
            self.recompute(i, np.arange(self.lower[i].shape[0]))

    def recompute(self, i: int, rows: Array) -> None:
        """Certify layer i's lines for ``rows`` (one vectorised call) on their current [l, u]."""
        if self.env.rows[i] is None or rows.size == 0:
            return
        m = self.lower[i].shape[1]
        act = self.env.network.layers[i].activation
        fresh = self.env.lines(act, self.lower[i][rows].ravel(), self.upper[i][rows].ravel())
        if self.lines[i] is None:
            self.lines[i] = tuple(np.empty((self.lower[i].shape[0], m, v.shape[1])) for v in fresh)
        for store, v in zip(self.lines[i], fresh):
            store[rows] = v.reshape(rows.size, m, -1)

    def load(self, r: int, lo: Array, hi: Array) -> None:
        """Put input r's box, bounds and lines into the persistent LP."""
        self.env.set_box(lo, hi)
        for i in range(len(self.lower)):
            lines = None if self.lines[i] is None else tuple(v[r] for v in self.lines[i])
            self.env.set_layer(i, self.lower[i][r], self.upper[i][r], lines)

    def bounds(self) -> list[LayerBounds]:
        return [LayerBounds(lo, up) for lo, up in zip(self.lower, self.upper)]

    def bounds_of(self, r: int) -> list[LayerBounds]:
        return [LayerBounds(lo[r], up[r]) for lo, up in zip(self.lower, self.upper)]


def _margin_lps(env: _EnvelopeLP, rel: _Relaxations, br: _Brackets, rows: Array, r: int, lo: Array, hi: Array,
                input_set: InputSet, *, stop_at_failure: bool) -> None:
    """Input ``rows[r]``'s open targets by LP, lowest attained margin first (until one fails, if asked)."""
    i = int(rows[r])
    network, y = env.network, env.pre[-1]
    rel.load(r, lo, hi)
    for k in sorted(br.open_targets(i), key=lambda k: br.upper[i, k]):
        if br.upper[i].min() <= 0.0:
            return
        res = env.minimize(np.array([y[br.labels[i]], y[k]]), np.array([1.0, -1.0]))
        br.termination[(i, k)], br.solver[(i, k)] = res.termination, res.solver
        if res.dual_bound is not None and np.isfinite(res.dual_bound):
            value = np.full(br.lower.shape[1], -np.inf)
            value[k] = sound_lower(res.dual_bound)
            br.offer_lower(np.array([i]), value[None, :], "lp")
        if res.primal is not None:
            p = input_set.project(res.primal[env.inputs])
            br.offer_points(np.array([i]), p[None, :], _margins(network, p[None, :], br.labels[i:i + 1]), "lp")
        if stop_at_failure and br.lower[i, k] <= 0.0:
            return  # this target needs more than this LP: the rest can wait for the tightened relaxation


def _tighten_layer(env: _EnvelopeLP, rel: _Relaxations, layer: int, r: int, lo: Array, hi: Array) -> None:
    """LP bound tightening of one layer for input r: ``min / max z_j`` over the relaxation of the layers below.

    Each new bound is a safe dual bound, so it is sound; it is intersected with the old one.
    """
    rel.load(r, lo, hi)
    for j, z in enumerate(env.pre[layer]):
        for sign in (1.0, -1.0):
            res = env.minimize(np.array([z]), np.array([sign]))
            if res.dual_bound is None or not np.isfinite(res.dual_bound):
                continue
            bound = sign * sound_lower(res.dual_bound)
            if sign > 0:
                rel.lower[layer][r, j] = max(rel.lower[layer][r, j], bound)
            else:
                rel.upper[layer][r, j] = min(rel.upper[layer][r, j], bound)
    if (rel.lower[layer][r] > rel.upper[layer][r]).any():
        raise UnsoundAnswerError(f"LP bound tightening emptied layer {layer}'s bounds; answer rejected")


def _lp_stage(env: "_EnvelopeLP", br: _Brackets, rows: Array, lo: Array, hi: Array, bounds: list[LayerBounds],
              settings: CascadeSettings, sets: list[InputSet]) -> "_Relaxations":
    """Stage 3 for inputs ``rows``; returns their (possibly LP-tightened) layer bounds, shape (len(rows), m).

    Pass 1: the margin LPs on the symbolic bounds. Pass 2 (``lp_tighten``), for the inputs still open:
    hidden layers 1.. tightened by LP one layer at a time (layer 0 over a box is exact already; the lines
    of a tightened layer are re-certified on the narrower intervals before the next layer), then the
    margin LPs again.
    """
    network = env.network
    rel = _Relaxations(env, bounds)
    for r in range(rows.size):
        _margin_lps(env, rel, br, rows, r, lo[r], hi[r], sets[r], stop_at_failure=settings.lp_tighten)
    if not settings.lp_tighten:
        return rel
    still = np.array([r for r in range(rows.size) if br.open_targets(int(rows[r])).size], dtype=np.int64)
    if still.size == 0:
        return rel
    last = len(network.layers) - 1
    for layer in range(1, last):
        if env.rows[layer] is None:
            continue
        for r in still:
            _tighten_layer(env, rel, layer, int(r), lo[r], hi[r])
        rel.recompute(layer, still)
    for r in still:
        _margin_lps(env, rel, br, rows, int(r), lo[r], hi[r], sets[r], stop_at_failure=False)
    return rel


# -- stage 4 ---------------------------------------------------------------------------------------------


@dataclass
class _Node:
    """A branch of the segment tree: per layer, the neurons' intervals and the lines certified on them."""

    lower: list[Array]
    upper: list[Array]
    lines: list  # per layer (lo_s, lo_c, up_s, up_c), each (m, K), or None
    bound: float  # a sound lower bound inherited from the parent (the priority)


def _load_node(env: "_EnvelopeLP", node: _Node, lo: Array, hi: Array) -> None:
    env.set_box(lo, hi)
    for i in range(len(node.lower)):
        env.set_layer(i, node.lower[i], node.upper[i], node.lines[i])


def _branch_neuron(env: "_EnvelopeLP", node: _Node, primal: Array) -> tuple[int, int, float] | None:
    """The neuron whose LP point lies farthest off the graph, and where to split it (the LP's z, as in
    :func:`formulations.refinement.refine_segments`, kept a tenth of the width away from the ends)."""
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
            pick = (i, j, t)
    return pick if best > 0.0 else None


def _children(env: "_EnvelopeLP", node: _Node, i: int, j: int, t: float, bound: float) -> list[_Node]:
    """Split neuron (i, j) of ``node`` at t; both children's lines for it certified in one call."""
    act = env.network.layers[i].activation
    l, u = node.lower[i][j], node.upper[i][j]
    fresh = env.lines(act, np.array([l, t]), np.array([t, u]))
    out = []
    for side, (cl, cu) in enumerate(((l, t), (t, u))):
        lower = [b.copy() for b in node.lower]
        upper = [b.copy() for b in node.upper]
        lower[i][j], upper[i][j] = cl, cu
        lines = list(node.lines)
        layer_lines = tuple(v.copy() for v in node.lines[i])
        for store, v in zip(layer_lines, fresh):
            store[j] = v[side]
        lines[i] = layer_lines
        out.append(_Node(lower, upper, lines, bound))
    return out


def _branch_and_bound(env: "_EnvelopeLP", rel: "_Relaxations", br: _Brackets, i: int, r: int, k: int,
                      lo: Array, hi: Array, input_set: InputSet, node_limit: int,
                      tolerance: float | None = None) -> bool:
    """Decide target k of input i exactly by branch and bound over the neurons' segments.

    Each node is the LP envelope relaxation on sub-intervals of some neurons' [l, u] (the segments of the
    piecewise MIP, design.md §4; the union of the leaves covers the parent, so the smallest leaf bound is a
    sound bound), solved in the persistent LP with its safe dual bound. At every node the real network is
    evaluated at the LP's input (a counterexample ends the search); an open node is split at its LP point
    in the neuron farthest off the graph — the refinement of :mod:`formulations.refinement`, branched on
    instead of re-solved. Returns whether the target was decided within ``node_limit`` LPs.

    With ``tolerance`` it computes the minimum margin itself rather than its sign: a node is closed once its
    bound is within ``tolerance`` of the best margin attained, and the search ends when every open node is
    (best-first order makes that the first popped node that is); returns whether the bracket closed.
    """
    exact = tolerance is not None
    network, y = env.network, env.pre[-1]
    label = int(br.labels[i])
    root = _Node([b[r].copy() for b in rel.lower], [b[r].copy() for b in rel.upper],
                 [None if v is None else tuple(a[r].copy() for a in v) for v in rel.lines], -np.inf)
    order = itertools.count()  # tie-breaker: nodes themselves are not comparable
    heap = [(root.bound, next(order), root)]
    closed = np.inf
    count = 0
    while heap and count < node_limit:
        if not exact and br.upper[i, k] <= 0.0:
            return True
        if exact and heap[0][0] >= br.upper[i, k] - tolerance:
            break  # best first: every open node is within the tolerance of the attained margin
        _, _, node = heapq.heappop(heap)
        _load_node(env, node, lo, hi)
        res = env.minimize(np.array([y[label], y[k]]), np.array([1.0, -1.0]))
        count += 1
        if res.termination == Termination.INFEASIBLE:
            continue  # an empty region (the persistent LP accepts "infeasible" only with a Farkas proof)
        bound = sound_lower(res.dual_bound) if res.dual_bound is not None and not np.isnan(res.dual_bound) else -np.inf
        bound = max(bound, node.bound)
        if res.primal is not None and res.termination == Termination.OPTIMAL:
            p = input_set.project(res.primal[env.inputs])
            br.offer_points(np.array([i]), p[None, :], _margins(network, p[None, :], br.labels[i:i + 1]), "mip")
        if bound > 0.0 if not exact else bound >= br.upper[i, k] - tolerance:
            closed = min(closed, bound)
            continue
        pick = None if res.primal is None else _branch_neuron(env, node, res.primal)
        if pick is None:  # nothing left to split (or no LP point): leave it open, the MIP decides
            heapq.heappush(heap, (bound, next(order), node))
            break
        for child in _children(env, node, *pick, bound):
            heapq.heappush(heap, (bound, next(order), child))
    br.solver[(i, k)] = "branch-and-bound/" + env.lp_name
    if not exact and br.upper[i, k] <= 0.0:
        return True
    lower = min([closed] + [b for b, _, _ in heap])
    value = np.full(br.lower.shape[1], -np.inf)
    value[k] = lower
    br.offer_lower(np.array([i]), value[None, :], "mip")
    if exact:
        return br.upper[i, k] - br.lower[i, k] <= tolerance
    return not heap


def _mip_target(network: Network, br: _Brackets, i: int, k: int, input_set: InputSet, bounds: list[LayerBounds],
                settings: CascadeSettings, solver: str) -> None:
    """Target k of input i by the exact piecewise MIP with refinement (the MIP solver's dual bound)."""
    if br.upper[i].min() <= 0.0 or br.lower[i, k] > 0.0:
        return
    label = int(br.labels[i])
    deadline = None if settings.mip_time_limit is None else time.monotonic() + settings.mip_time_limit
    point = None if not np.isfinite(br.upper[i, k]) else br.points[i, k].copy()
    outcome = minimize_with_refinement(
        network, input_set, bounds,
        lambda e: margin_objective(e, label, k),
        lambda p: float(_margins(network, p[None, :], br.labels[i:i + 1])[0, k]),
        solver=solver, tolerance=settings.mip_tolerance, deadline=deadline,
        max_rounds=settings.mip_max_rounds, upper=float(br.upper[i, k]), point=point,
    )
    br.termination[(i, k)], br.solver[(i, k)] = outcome.termination, outcome.solver
    value = np.full(br.lower.shape[1], -np.inf)
    value[k] = outcome.lower
    br.offer_lower(np.array([i]), value[None, :], "mip")
    if outcome.point is not None:
        p = input_set.project(outcome.point)
        br.offer_points(np.array([i]), p[None, :], _margins(network, p[None, :], br.labels[i:i + 1]), "mip")


# -- the cascade ---------------------------------------------------------------------------------------


def run_cascade(network: Network, xs: Array, labels, eps, *, method: str = MIP,
                settings: CascadeSettings | None = None, norm: str = "linf",
                domain: tuple[float, float] = (0.0, 1.0), on_decided: OnDecided | None = None) -> CascadeResult:
    """The cascade over one chunk of inputs; :func:`certify_batch` without discarding the stage times.

    Args: as :func:`certify_batch`.
    """
    settings = settings or CascadeSettings()
    if not isinstance(settings, CascadeSettings):
        raise InvalidInputError(f"settings must be a CascadeSettings, got {type(settings).__name__}")
    centers, labels, eps, norm, dlo, dhi = _validate(network, xs, labels, eps, method, norm, domain)
    n, d = centers.shape
    br = _Brackets.start(labels, network.output_size, d)
    times = dict.fromkeys(STAGES, 0.0)
    if n == 0:
        return CascadeResult([], times)
    lo, hi = ball_boxes(centers, eps, norm, dlo, dhi)
    ball = None if norm == "linf" else (centers, eps, norm)

    # 0. the centre (inside its own ball; validate_balls ensured the ball meets the domain)
    t0 = time.monotonic()
    start_points = np.clip(centers, dlo, dhi)
    inside = contains_points(start_points, centers, eps, norm, dlo, dhi, tol=0.0)
    rows = np.flatnonzero(inside)
    br.offer_points(rows, start_points[rows], _margins(network, start_points[rows], labels[rows]), "center")
    times["center"] = time.monotonic() - t0

    # 1. symbolic margins of every input still open, in one batch
    t0 = time.monotonic()
    if settings.symbolic:
        rows = np.flatnonzero(br.undecided)
        if rows.size:
            ball_r = None if ball is None else (centers[rows], eps[rows], norm)
            m_lo, _ = margin_bounds_batch(network, lo[rows], hi[rows], labels[rows], ball=ball_r)
            br.offer_lower(rows, m_lo, "symbolic")  # entry label is 0, never above its +inf
    times["symbolic"] = time.monotonic() - t0

    # 2. attacks: a cheap pass over everything open, a stronger one over what is left
    t0 = time.monotonic()
    for steps, restarts, salt in ((settings.attack_steps, settings.attack_restarts, 0),
                                  (settings.strong_attack_steps, settings.strong_attack_restarts, 1)):
        rows = np.flatnonzero(br.undecided & (eps > 0))
        if rows.size == 0 or steps == 0:
            continue
        res = pgd_attack(network, centers[rows], labels[rows], eps[rows], norm=norm, domain=(dlo, dhi),
                         steps=steps, restarts=restarts, seed=settings.seed + salt)
        br.offer_points(rows, res.points, _margins(network, res.points, labels[rows]), "attack")
    times["attack"] = time.monotonic() - t0

    # what the cheap stages decided is final (later stages only look at open inputs): a caller may store it
    # while the LP and MIP stages run
    early: dict[int, Certificate] = {}
    decided = np.flatnonzero(~br.undecided)
    if on_decided is not None and decided.size:
        elapsed = sum(times.values())
        early = {int(i): _certificate(network, br, int(i), centers[i], float(eps[i]), norm, dlo, dhi, method, times,
                                      elapsed, n) for i in decided}
        on_decided(list(early), list(early.values()))

    # 3. LP, then 4. MIP, input by input
    rows = np.flatnonzero(br.undecided)
    sets = [InputSet(centers[i], float(eps[i]), norm=norm, domain=(dlo, dhi)) for i in rows]
    t0 = time.monotonic()
    rel = env = None
    if rows.size and (settings.lp or method == MIP):
        ball_r = None if ball is None else (centers[rows], eps[rows], norm)
        bounds = symbolic_bounds_batch(network, lo[rows], hi[rows], ball=ball_r)
        env = _EnvelopeLP(network, settings.lp_lines, settings.lp_time_limit)  # one LP model for the chunk
        rel = _Relaxations(env, bounds)
    if rows.size and settings.lp:
        rel = _lp_stage(env, br, rows, lo[rows], hi[rows], bounds, settings, sets)
    times["lp"] = time.monotonic() - t0

    t0 = time.monotonic()
    if method == MIP and rows.size:
        solver = settings.mip_solver or default_mip_solver()
        for r, i in enumerate(rows):
            for k in sorted(br.open_targets(int(i)), key=lambda k: br.upper[i, k]):
                if not br.undecided[i]:
                    break
                if settings.branching and settings.branch_node_limit > 0 and _branch_and_bound(
                        env, rel, br, int(i), r, int(k), lo[i], hi[i], sets[r], settings.branch_node_limit):
                    continue
                _mip_target(network, br, int(i), int(k), sets[r], rel.bounds_of(r), settings, solver)
    times["mip"] = time.monotonic() - t0

    total = sum(times.values())
    certificates = [early.get(i) or _certificate(network, br, i, centers[i], float(eps[i]), norm, dlo, dhi, method,
                                                 times, total, n) for i in range(n)]
    return CascadeResult(certificates, times)


def certify_batch(network: Network, xs: Array, labels, eps, *, method: str = MIP,
                  settings: CascadeSettings | None = None, norm: str = "linf",
                  domain: tuple[float, float] = (0.0, 1.0), on_decided: OnDecided | None = None) -> list[Certificate]:
    """Certify local robustness of every input of a chunk with the cascade (module docstring).

    Args:
        xs: (n, d) inputs; labels: (n,) true classes (or one int); eps: a radius or one per input.
        method: ``"mip"`` (exact: every query verified or falsified unless a limit is hit) or ``"lp"``
            (stages 0-3 only; what they leave is *unknown (relaxation inconclusive)*).
        settings: :class:`CascadeSettings` (thresholds and limits).
        norm, domain: the input sets, as in :class:`formulations.input_sets.InputSet`.
        on_decided: called once, after the attack stage, with the indices and certificates of the inputs
            the cheap stages (centre, symbolic, attack) decided; they are final (the same objects are in
            the returned list), so a caller can store them while the LP and MIP stages run.

    Returns:
        One robustness :class:`Certificate` per input, in order; ``stage`` is the stage that decided it
        (``center``, ``symbolic``, ``attack``, ``lp``, ``mip``; for unknown ones the last stage tried).

    Raises:
        InvalidInputError: malformed inputs, labels, eps, norm, domain, method or settings.
        SolverNotAvailableError: ``method="mip"`` and the MIP solver cannot run here.
        UnsoundAnswerError: a bound contradicted a margin the real network attains.
    """
    return run_cascade(network, xs, labels, eps, method=method, settings=settings, norm=norm,
                       domain=domain, on_decided=on_decided).certificates


# -- certificates ------------------------------------------------------------------------------------------

_REASONS = {
    Termination.TIME_LIMIT: UnknownReason.TIME_LIMIT,
    Termination.FEASIBLE: UnknownReason.TIME_LIMIT,
    Termination.NODE_LIMIT: UnknownReason.NODE_LIMIT,
    Termination.NUMERICAL: UnknownReason.NUMERICAL,
    Termination.ERROR: UnknownReason.SOLVER_ERROR,
    Termination.UNCONFIRMED: UnknownReason.UNCONFIRMED,
}


def _reason(br: _Brackets, i: int, k: int, method: str) -> UnknownReason:
    term = br.termination.get((i, k))
    if method == LP or term is None:
        return UnknownReason.RELAXATION
    return _REASONS.get(term, UnknownReason.REFINEMENT_LIMIT)


def _certificate(network: Network, br: _Brackets, i: int, center: Array, eps: float, norm: str, dlo: Array,
                 dhi: Array, method: str, times: dict, total: float, n: int) -> Certificate:
    label = int(br.labels[i])
    ks = [k for k in range(br.lower.shape[1]) if k != label]
    target_bounds = []
    for k in ks:
        lo_k, up_k = float(br.lower[i, k]), float(br.upper[i, k])
        if lo_k > 0:
            verdict, reason = Verdict.VERIFIED, None
        elif up_k <= 0:
            verdict, reason = Verdict.FALSIFIED, None
        else:
            verdict, reason = Verdict.UNKNOWN, _reason(br, i, k, method)
        term_solver = br.solver.get((i, k), "")
        target_bounds.append(TargetBound(k, lo_k, up_k, verdict, reason, (), term_solver))
    lower = float(min(br.lower[i, k] for k in ks))
    worst = min(ks, key=lambda k: br.upper[i, k])
    upper = float(br.upper[i, worst])
    counterexample, value, reason = None, None, None
    if upper <= 0:
        verdict, stage = Verdict.FALSIFIED, str(br.upper_stage[i, worst])
        counterexample = br.points[i, worst].copy()
        # the re-check of design.md: inside the set, and the real network's margin is <= 0
        value = float(_margins(network, counterexample[None, :], br.labels[i:i + 1])[0][ks].min())
        inside = contains_points(counterexample[None, :], center[None, :], np.array([eps]), norm, dlo, dhi, tol=0.0)[0]
        if not inside or value > 0.0:
            raise UnsoundAnswerError(f"input {i}: the counterexample failed its re-check on the real network")
    elif lower > 0:
        verdict = Verdict.VERIFIED
        stage = max((str(br.lower_stage[i, k]) for k in ks), key=_LOWER_STAGES.index)
    else:
        verdict = Verdict.UNKNOWN
        undecided = [b for b in target_bounds if b.verdict == Verdict.UNKNOWN]
        reason = undecided[0].reason if undecided else UnknownReason.RELAXATION
        stage = method
    binding = min(ks, key=lambda k: br.lower[i, k])
    solvers = sorted({s for (j, _), s in br.solver.items() if j == i and s})
    return Certificate(
        kind="robustness", verdict=verdict, lower=lower, upper=upper, method=method, stage=stage, reason=reason,
        label=label, eps=eps, norm=norm, counterexample=counterexample, counterexample_value=value,
        targets=tuple(target_bounds), solver=",".join(solvers),
        # batched stages are shared: each query carries its share of the wall time of the stages it went
        # through (one decided by the attack carries no LP or MIP share; its batch_total is the time so far)
        times={**{f"{s}_share": float(times[s]) / n for s in STAGES}, "batch_total": float(total)},
        extra={"binding_target": int(binding), "worst_target": int(worst), "cascade": True},
    )


def minimum_margin_bb(network: Network, x: Array, label: int, target: int, eps: float, *, tolerance: float = 1e-4,
                      node_limit: int = 20_000, norm: str = "linf", domain: tuple[float, float] = (0.0, 1.0),
                      lp_lines: int = 3) -> tuple[float, float, Array | None]:
    """The exact minimum of ``logit[label] - logit[target]`` over the input set, by branch and bound.

    The same bracket as :func:`formulations.robustness.minimum_margin` (a sound lower bound from safe LP dual
    bounds over segment leaves, an upper bound attained by the real network), computed by the branch and
    bound of stage 4 run to ``tolerance`` instead of re-solving a growing MIP. Returns ``(lower, upper, point)``;
    the bracket may stay wider than ``tolerance`` if ``node_limit`` LPs do not close it.
    """
    centers, labels, eps_arr, norm, dlo, dhi = _validate(network, np.atleast_2d(x), np.array([label]), eps, MIP,
                                                         norm, domain)
    k = int(target)
    if not 0 <= k < network.output_size or k == int(label):
        raise InvalidInputError(f"target {target} is out of range or equal to the label {label}")
    br = _Brackets.start(labels, network.output_size, centers.shape[1])
    lo, hi = ball_boxes(centers, eps_arr, norm, dlo, dhi)
    input_set = InputSet(centers[0], float(eps_arr[0]), norm=norm, domain=(dlo, dhi))
    start = input_set.project(centers[0])
    br.offer_points(np.array([0]), start[None, :], _margins(network, start[None, :], labels), "center")
    ball = None if norm == "linf" else (centers, eps_arr, norm)
    bounds = symbolic_bounds_batch(network, lo, hi, ball=ball)
    env = _EnvelopeLP(network, lp_lines, None)
    rel = _Relaxations(env, bounds)
    _branch_and_bound(env, rel, br, 0, 0, k, lo[0], hi[0], input_set, node_limit, tolerance=tolerance)
    point = br.points[0, k]
    return float(br.lower[0, k]), float(br.upper[0, k]), None if np.isnan(point).any() else point.copy()
