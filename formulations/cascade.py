"""The batched cascade: robustness certificates for a batch of inputs, cheapest methods first (issue 7).

A batch query asks, for each input ``c_i`` with label ``y_i``, about ``m_ik = min_{x in S_i} f(x)[y_i] - f(x)[k]``
for every other class k (``S_i`` = the eps-ball around ``c_i`` clipped to the domain). Each (input, target) pair
carries a bracket ``lower <= m_ik <= upper`` (:class:`formulations.brackets.Brackets`); the stages narrow it:

0. **center** — the margins at the centre itself: a misclassified input is falsified there.
1. **symbolic** — CROWN/DeepPoly back-substitution of the margins over the whole chunk at once, in float64
   matrix operations (:func:`formulations.bounds.margin_bounds_batch`; Zhang et al., NeurIPS 2018; Singh
   et al., POPL 2019) with certified envelope lines and GELU's exact interval image: lower bounds.
2. **attack** — batched PGD over the inputs and every target (:func:`formulations.attack.pgd_attack`;
   Madry et al., ICLR 2018): points re-evaluated on the real network in float64, upper bounds and
   counterexamples. A cheap pass (few steps, the centre as start) then a stronger one for what is left.
2b. **bab** — for verdicts on smooth networks over L-inf balls: the batched branch and bound with optimised linear
   bounds and interval splits (:mod:`formulations.smooth_bab`; GenBaB, Shi et al., TACAS 2025) over each query's
   open targets, round by round (:func:`_smooth_stage`); it runs before the LP because it needs neither LP
   tightening nor a solver, and what it leaves open goes on to the LP and the exact stage, which stay complete.
3. **lp** — the envelope LP relaxation (design.md §3) in *one* persistent model per call, re-targeted per
   input (:class:`formulations.envelope_lp.EnvelopeLP`); the bound used is the safe bound from the LP's duals.
   Optionally the hidden layers' bounds are first tightened by LP (min/max of each neuron).
3b. **klp** — the k-neuron LP (:mod:`formulations.klp`; Singh et al., "Beyond the Single Neuron Convex
   Barrier", NeurIPS 2019): octagonal input polyhedra over groups of k neurons, the certified facets of their
   joint hull (:mod:`formulations.multi_neuron`), each layer re-tightened over the k-neuron rows below it.
   Method ``klp`` ends here; method ``mip`` runs it (``CascadeSettings.klp``) on what the LP left open.
4. **mip** — exact: branch and bound over the smooth neurons' segments with LP nodes
   (:func:`formulations.segment_bab.minimize_bab`), then the piecewise MIP with refinement
   (:func:`formulations.refinement.minimize_with_refinement`, design.md §4) for what it leaves open.

Two kinds of answer (``CascadeSettings.answer``):

* ``"verdict"`` — the sign of ``min_k m_ik`` only: each stage looks only at what is still undecided, the MIP
  stops at the first counterexample. Fastest.
* ``"bounds"`` — the analytical answer of issue 16: method ``lp`` solves the envelope LP of *every* target of
  every input (the LP's own lower bound, with the symbolic line as a cut, and the constraints tight at the LP
  optimum of the worst target); method ``mip`` brackets the exact minimum margin ``min_k m_ik`` to
  ``mip_tolerance`` for every input (a target is searched until its bound is within the tolerance of the best
  margin attained over all targets) and reads the tight constraints off the optimum's input (pixels at a bound,
  each hidden neuron's region / ReLU phase). The cheap stages still run first and seed the brackets.

``query_time_limit`` is a deadline for each query's own LP and MIP work (all its targets and stages); the
batched stages 0-2 are the chunk's shared cost. A query past it is *unknown (time limit)* with its bounds.

Soundness: *verified* only from a symbolic bound or a solver's dual bound (less the slack of
:func:`~formulations.refinement.sound_lower`); *falsified* only with a point inside ``S_i`` whose margin,
re-evaluated with :meth:`Network.forward`, is <= 0 (re-checked once more before the certificate is made).
A lower bound above a margin the real network attains is a contradiction: :class:`UnsoundAnswerError`.
Each certificate's ``stage`` names the stage that decided it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np

from .attack import pgd_attack
from .backends import capabilities, default_mip_solver
from .backends.base import Termination
from .bounds import LayerBounds, check_labels, margin_bounds_batch, symbolic_bounds_batch
from .brackets import Brackets, margins
from .certificate import Certificate, TargetBound, UnknownReason, Verdict, reason_for
from .encoding import KLP, LP, MIP, ROBUSTNESS_METHODS, margin_objective
from .envelope_lp import EnvelopeLP, Relaxations, point_tags
from .errors import InvalidInputError, UnsoundAnswerError
from .input_sets import InputSet, ball_boxes, contains_points, validate_balls
from .klp import KLPSettings, build_klp
from .model import ConstraintTag
from .network import Network
from .refinement import minimize_with_refinement, sound_lower
from .segment_bab import BRANCH_LINES, branch_lines, minimize_bab, root_node
from .smooth_bab import SmoothBabSearch
from .smooth_bab import optimised_bounds as smooth_optimised_bounds
from .smooth_bab import supports as smooth_bab_supports

Array = np.ndarray
STAGES = ("center", "symbolic", "attack", "bab", "lp", "klp", "mip")
#: ``method="both"``: the LP answer and the exact answer of each input from one run, the LP's read off the
#: brackets after stage 3 (one symbolic pass, one attack, one LP stage instead of two of each).
BOTH = "both"
METHODS = (*ROBUSTNESS_METHODS, BOTH)
ANSWERS = ("verdict", "bounds")
JOB_FIELDS = ("answer", "query_time_limit")  # set per job by the service; the other fields are its settings
_LOWER_STAGES = ("symbolic", "bab", "lp", "klp", "mip")  # stages that prove lower bounds, in cascade order
_OWN_STAGES = ("bab", "lp", "klp", "mip")  # stages that work query by query: each certificate carries its own seconds
# the attacks' share of a query's time limit (the LP and exact stages have what is left): an attack gives
# upper bounds only, and on a large network its 250 strong trajectories per target can take seconds
ATTACK_SHARE = 0.25
#: the smooth branch and bound's share of what a query's time limit leaves after the attacks (stage ``bab``); the LP
#: and exact stages have the rest (on a 6-12-12-4 GELU net at eps 0.3, 20 s per query, 0.7 left one query that the
#: MIP path decides unknown: the smooth search closes the last thousandths of a margin slowly)
BAB_SHARE = 0.5


@dataclass(frozen=True, kw_only=True)
class CascadeSettings:
    """Thresholds and limits of the cascade's stages (all keyword-only; defaults tuned on the 49-3-3-10 nets).

    Attributes:
        answer: ``"verdict"`` (the sign only) or ``"bounds"`` (LP bound of every target, exact brackets and
            tight constraints; module docstring).
        symbolic: run stage 1 (CROWN/DeepPoly margins).
        attack_steps, attack_restarts: the cheap PGD pass over every undecided input (restarts = random
            starts besides the centre).
        strong_attack_steps, strong_attack_restarts: the second pass over inputs still undecided (0 steps:
            skipped).
        lp: run stage 3. ``lp_lines``: certified envelope lines per side and neuron (plus the symbolic bound's
            own line). ``lp_tighten``: tighten hidden layers' bounds by LP (2 LPs per neuron) when a margin LP
            fails. ``lp_time_limit``: seconds per LP.
        smooth_bab: run stage ``bab`` (smooth networks, L-inf balls, ``answer="verdict"``): the smooth branch and
            bound (:mod:`formulations.smooth_bab`) over the open targets, at most ``smooth_bab_time_limit`` seconds
            per query (and ``BAB_SHARE`` of its time limit); what it leaves open goes on to the LP and stage 4.
        klp: run stage 3b, the k-neuron LP (:mod:`formulations.klp`), for what the LP left open before the
            MIP (method ``"mip"``; method ``"klp"`` always runs it). Off by default: on the 49-3-3-10 GELU
            networks the exact stage closes an open query in ~0.2 s and the k-LP takes ~1 s
            (bench/relaxations.py), so it removes MIP work only where the MIP is the expensive part. ``klp_k``: neurons per group (2 or 3);
            ``klp_cluster``: kPoly's set size n_s; ``klp_max_groups``: groups per layer at most.
        input_bab_nodes: after the k-neuron LP, branch and bound over the input box (L-inf balls only) with
            k-LP nodes for each target still open, up to this many nodes per target
            (:func:`formulations.input_bab.minimize_input_bab`; 0: off). Complete on low-dimensional inputs.
        branching: decide stage 4 first by branch and bound over segments with LP nodes;
            ``branch_node_limit`` LPs per target before the MIP solver takes over; ``branch_lines`` lines per
            side and smooth neuron in those LPs (:data:`formulations.segment_bab.BRANCH_LINES`; the LP stage's
            answer keeps its ``lp_lines``).
        mip_solver: the MIP back-end (None: :func:`formulations.backends.default_mip_solver`).
        mip_tolerance, mip_max_rounds, mip_time_limit: refinement tolerance, rounds and seconds per target.
        query_time_limit: seconds of LP and MIP work per query, all targets together (None: no deadline).
        seed: seed of the attacks' random starts.
    """

    answer: Literal["verdict", "bounds"] = "verdict"
    symbolic: bool = True
    attack_steps: int = 20
    attack_restarts: int = 0
    strong_attack_steps: int = 50
    strong_attack_restarts: int = 5
    lp: bool = True
    lp_lines: int = 3
    lp_tighten: bool = True
    lp_time_limit: float | None = 10.0
    smooth_bab: bool = True
    smooth_bab_time_limit: float | None = 30.0
    klp: bool = False
    klp_k: int = 2
    klp_cluster: int = 4
    klp_max_groups: int = 30
    input_bab_nodes: int = 0
    branching: bool = True
    branch_node_limit: int = 400
    branch_lines: int = BRANCH_LINES
    mip_solver: str | None = None
    mip_tolerance: float = 1e-4
    mip_max_rounds: int = 30
    mip_time_limit: float | None = 60.0
    query_time_limit: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.answer not in ANSWERS:
            raise InvalidInputError(f"CascadeSettings.answer must be one of {ANSWERS}, got {self.answer!r}")
        for name in ("attack_steps", "attack_restarts", "strong_attack_steps", "strong_attack_restarts",
                     "lp_lines", "branch_node_limit", "branch_lines", "mip_max_rounds", "klp_k", "klp_cluster", "klp_max_groups", "input_bab_nodes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise InvalidInputError(f"CascadeSettings.{name} must be an integer >= 0, got {value!r}")
        if self.lp_lines < 1 or self.branch_lines < 1:
            raise InvalidInputError(f"CascadeSettings.lp_lines and branch_lines must be >= 1, got {self.lp_lines} "
                                    f"and {self.branch_lines}")
        if self.klp_k not in (2, 3) or self.klp_cluster < self.klp_k or self.klp_max_groups < 1:
            raise InvalidInputError(f"CascadeSettings.klp_k must be 2 or 3, klp_cluster >= klp_k and klp_max_groups "
                                    f">= 1; got {self.klp_k}, {self.klp_cluster}, {self.klp_max_groups}")
        for name in ("lp_time_limit", "mip_time_limit", "query_time_limit", "smooth_bab_time_limit"):
            value = getattr(self, name)
            if value is not None and not (np.isfinite(value) and value > 0):
                raise InvalidInputError(f"CascadeSettings.{name} must be a positive number or None, got {value!r}")
        if not (np.isfinite(self.mip_tolerance) and self.mip_tolerance > 0):
            raise InvalidInputError(f"CascadeSettings.mip_tolerance must be > 0, got {self.mip_tolerance!r}")

    @property
    def bounds(self) -> bool:
        return self.answer == "bounds"

    def klp_settings(self) -> KLPSettings:
        """The k-neuron LP's settings (:class:`formulations.klp.KLPSettings`) derived from these."""
        return KLPSettings(k=self.klp_k, cluster=self.klp_cluster, max_groups=self.klp_max_groups,
                           n_lines=self.lp_lines, lp_time_limit=self.lp_time_limit)


OnDecided = Callable[[list[int], list[Certificate]], None]  # (indices, their certificates)


@dataclass
class CascadeResult:
    """The certificates of a batch (in input order) and the wall time of each stage."""

    certificates: list[Certificate]
    stage_times: dict[str, float]
    lp_certificates: list[Certificate] | None = None  # method "both": the LP answers (certificates: the MIP's)

    def decided_by(self) -> dict[str, int]:
        """How many queries each stage decided (unknown ones are not counted)."""
        counts = dict.fromkeys(STAGES, 0)
        for c in self.certificates:
            if c.verdict != Verdict.UNKNOWN:
                counts[c.stage] += 1
        return counts


# -- validation --------------------------------------------------------------------------------------


def _validate(network: Network, xs, labels, eps, method: str, norm: str, domain):
    xs = network.check_input(xs)
    if xs.ndim != 2:
        raise InvalidInputError(f"certify_batch takes inputs of shape (n, {network.input_size}), got {xs.shape}")
    if method not in METHODS:
        raise InvalidInputError(f"method must be one of {METHODS}, got {method!r}")
    centers, eps, norm, dlo, dhi = validate_balls(xs, eps, norm, domain)
    labels = check_labels(labels, centers.shape[0], network.output_size)
    return centers, labels, eps, norm, dlo, dhi


class _Clock:
    """Each query's own LP and MIP seconds against ``query_time_limit`` (the batched stages are shared)."""

    def __init__(self, n: int, limit: float | None) -> None:
        self.spent, self.limit = np.zeros(n), limit
        self.own = {stage: np.zeros(n) for stage in _OWN_STAGES}  # each query's own seconds per stage

    def deadline(self, r: int) -> float | None:
        return None if self.limit is None else time.monotonic() + max(0.0, self.limit - self.spent[r])

    def expired(self, r: int) -> bool:
        return self.limit is not None and self.spent[r] >= self.limit

    def charge(self, r: int, since: float, stage: str) -> None:
        seconds = time.monotonic() - since
        self.spent[r] += seconds
        self.own[stage][r] += seconds


# -- stage bab: the smooth branch and bound -------------------------------------------------------------------

def _smooth_stage(run: _Run) -> None:
    """The smooth branch and bound (:class:`formulations.smooth_bab.SmoothBabSearch`) over each L-inf input's open
    targets, in rounds: every target still open, worst attained margin first, gets an equal share of the time left
    and keeps its search tree for the next round (as :func:`formulations.vnncomp._bab`), until the input is decided,
    one target is falsified, every search has ended, or the stage's time (``smooth_bab_time_limit``, at most
    ``BAB_SHARE`` of the query's time left) is up. Bounds and points go into the brackets as every stage's do: a
    proven lower bound whatever the outcome, the best point projected into the set and re-evaluated."""
    br, settings = run.br, run.settings
    for r, i in enumerate(run.rows):
        i = int(i)
        if run.sets[r].norm != "linf" or not br.undecided[i]:
            continue
        budget = np.inf if settings.smooth_bab_time_limit is None else settings.smooth_bab_time_limit
        if run.clock.limit is not None:
            budget = min(budget, BAB_SHARE * (run.clock.limit - run.clock.spent[r]))
        started = time.monotonic()
        deadline = started + budget
        bounds = _optimised_bounds(run, r, started + 0.2 * budget)
        searches: dict[int, SmoothBabSearch] = {}
        pending = sorted((int(k) for k in br.open_targets(i)), key=lambda k: br.upper[i, k])
        while pending and br.undecided[i] and time.monotonic() < deadline:
            for n, k in enumerate(pending):
                share = (deadline - time.monotonic()) / (len(pending) - n)
                if share <= 0 or not br.undecided[i]:
                    break
                if k not in searches:
                    searches[k] = SmoothBabSearch(run.network, run.lo[r], run.hi[r], bounds, int(br.labels[i]), k)
                res = searches[k].run(share)
                if res.stats.get("point") is not None:
                    run.offer(i, r, res.stats["point"], "bab")
                br.raise_lower(i, k, res.lower, "bab")
                br.solver[(i, k)] = "smooth-bab"
                br.termination[(i, k)] = Termination.OPTIMAL if res.status != "unknown" else Termination.TIME_LIMIT
            pending = [k for k in pending if k in searches and not searches[k].finished]
        run.clock.charge(r, started, "bab")


def _optimised_bounds(run: _Run, r: int, deadline: float) -> list[LayerBounds]:
    """Input r's hidden-layer bounds tightened by :func:`formulations.smooth_bab.optimised_bounds` (sound, never
    looser), written back into the LP's relaxation with its lines re-certified on the narrower intervals, so the
    LP stage starts from them too."""
    given = run.rel.bounds_of(r)
    tight = smooth_optimised_bounds(run.network, run.lo[r], run.hi[r], given, deadline=deadline)
    for layer, (old, new) in enumerate(zip(given, tight)):
        if np.array_equal(old.lower, new.lower) and np.array_equal(old.upper, new.upper):
            continue
        run.rel.lower[layer][r], run.rel.upper[layer][r] = new.lower, new.upper
        run.rel.recompute(layer, np.array([r]))
    return tight


# -- stage 3: the envelope LP ----------------------------------------------------------------------------


@dataclass
class _Run:
    """What the LP and MIP stages share for the inputs ``rows`` they work on (index r into rows)."""

    network: Network
    br: Brackets
    rows: Array
    lo: Array  # (len(rows), d) boxes
    hi: Array
    sets: list[InputSet]
    env: EnvelopeLP
    rel: Relaxations
    settings: CascadeSettings
    clock: _Clock
    lp_tags: dict  # (i, k) -> tight constraints at the LP optimum of target k of input i
    klp_info: dict = None  # i -> the k-neuron relaxation's summary (k, groups, facets per layer)
    klp_tags: dict = field(default_factory=dict)  # (i, k) -> tight constraints at the k-LP optimum of target k of input i
    branch: tuple | None = None  # the segment search's own (EnvelopeLP, Relaxations), when its lines differ

    def branch_relaxation(self) -> tuple[EnvelopeLP, Relaxations]:
        """The LP the segment branch and bound searches with: ``branch_lines`` lines per side on the bounds the
        earlier stages tightened, built when the first search starts (the LP stage's own model otherwise)."""
        lines = branch_lines(self.network, self.settings.lp_lines, self.settings.branch_lines)
        if lines == self.env.n_lines:
            return self.env, self.rel
        if self.branch is None:
            env = EnvelopeLP(self.network, lines, self.settings.lp_time_limit)
            self.branch = (env, Relaxations(env, self.rel.bounds()))
        return self.branch

    def offer(self, i: int, r: int, x: Array, stage: str) -> None:
        """A solver's input: projected into the set and evaluated on the real network (upper bounds)."""
        p = self.sets[r].project(x)
        self.br.offer_points(np.array([i]), p[None, :], margins(self.network, p[None, :], self.br.labels[i:i + 1]), stage)

    def lp_targets(self, i: int) -> Array:
        """The targets whose margin LP stage 3 solves: every target for bounds, the open ones for a verdict."""
        ks = self.br.targets_of(i) if self.settings.bounds else self.br.open_targets(i)
        return np.array(sorted(ks, key=lambda k: self.br.upper[i, k]), dtype=np.int64)


def _margin_lps(run: _Run, r: int, *, stop_at_failure: bool) -> None:
    """Input ``rows[r]``'s margin LPs, lowest attained margin first (until one fails, if asked)."""
    i, br, env = int(run.rows[r]), run.br, run.env
    started = time.monotonic()
    run.rel.load(r, run.lo[r], run.hi[r])
    for k in run.lp_targets(i):
        if not run.settings.bounds and br.upper[i].min() <= 0.0:
            break
        if run.clock.limit is not None and run.clock.spent[r] + time.monotonic() - started >= run.clock.limit:
            br.termination[(i, int(k))] = Termination.TIME_LIMIT
            break
        c = np.zeros(run.network.output_size)
        c[br.labels[i]], c[k] = 1.0, -1.0
        res = env.minimize_outputs(c)
        br.termination[(i, int(k))], br.solver[(i, int(k))] = res.termination, res.solver
        if res.dual_bound is not None and np.isfinite(res.dual_bound):
            br.raise_lower(i, int(k), sound_lower(res.dual_bound), "lp")
            run.lp_tags[(i, int(k))] = env.tight_tags(res)
        if res.primal is not None:
            run.offer(i, r, res.primal[env.inputs], "lp")
        if stop_at_failure and br.lower[i, k] <= 0.0:
            break  # this target needs more than this LP: the rest can wait for the tightened relaxation
    run.clock.charge(r, started, "lp")


def _tighten_layer(run: _Run, layer: int, r: int) -> None:
    """LP bound tightening of one layer for input r: ``min / max z_j`` over the relaxation of the layers below.

    Each new bound is a safe dual bound, so it is sound; it is intersected with the old one.
    """
    env, rel = run.env, run.rel
    started = time.monotonic()
    rel.load(r, run.lo[r], run.hi[r])
    for j, z in enumerate(env.pre[layer]):
        if run.clock.limit is not None and run.clock.spent[r] + time.monotonic() - started >= run.clock.limit:
            break  # out of time: the neurons not reached keep their (sound) bounds
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
    run.clock.charge(r, started, "lp")


def _lp_stage(run: _Run) -> None:
    """Stage 3 for the run's inputs.

    Pass 1: the margin LPs on the symbolic bounds. Pass 2 (``lp_tighten``), for the inputs still open:
    hidden layers 1.. tightened by LP one layer at a time (layer 0 over a box is exact already; the lines
    of a tightened layer are re-certified on the narrower intervals before the next layer), then the
    margin LPs again.
    """
    settings, br = run.settings, run.br
    for r in range(run.rows.size):
        _margin_lps(run, r, stop_at_failure=settings.lp_tighten and not settings.bounds)
    if not settings.lp_tighten:
        return
    # a verdict tightens only what the first LPs left open; bounds tighten every input, so that every LP bound
    # is the same relaxation (and the exact search starts from it)
    still = np.array([r for r in range(run.rows.size)
                      if (settings.bounds or br.open_targets(int(run.rows[r])).size) and not run.clock.expired(r)],
                     dtype=np.int64)
    if still.size == 0:
        return
    last = len(run.network.layers) - 1
    for layer in range(1, last):
        if run.env.rows[layer] is None:
            continue
        for r in still:
            _tighten_layer(run, layer, int(r))
        run.rel.recompute(layer, still)
    for r in still:
        _margin_lps(run, int(r), stop_at_failure=False)


# -- stage 3b: the k-neuron LP ---------------------------------------------------------------------------


def _klp_stage(run: _Run) -> None:
    """Stage 3b: the k-neuron LP (:func:`formulations.klp.build_klp`, kPoly) for the inputs still open (every
    input for bounds), built on the LP stage's bounds and re-tightened layer by layer with the k-neuron rows;
    the margins of the targets stage 3 would solve. Its bound is the safe dual bound less the slack."""
    settings, br = run.settings, run.br
    ks = settings.klp_settings()
    run.klp_info = {} if run.klp_info is None else run.klp_info
    for r, i in enumerate(run.rows):
        i = int(i)
        targets = run.lp_targets(i)
        if targets.size == 0 or (not settings.bounds and br.upper[i].min() <= 0.0):
            continue
        if run.clock.expired(r):
            for k in targets:
                br.termination[(i, int(k))] = Termination.TIME_LIMIT
            continue
        started = time.monotonic()
        directions = []
        for k in targets:
            c = np.zeros(run.network.output_size)
            c[br.labels[i]], c[k] = 1.0, -1.0
            directions.append(c)
        rel = build_klp(run.network, run.sets[r], run.rel.bounds_of(r), ks, deadline=run.clock.deadline(r),
                        output_directions=directions)
        for k in targets:
            if not settings.bounds and br.upper[i].min() <= 0.0:
                break
            c = np.zeros(run.network.output_size)
            c[br.labels[i]], c[k] = 1.0, -1.0
            res = rel.minimize_outputs(c)
            br.termination[(i, int(k))], br.solver[(i, int(k))] = res.termination, "klp/" + res.solver
            if res.dual_bound is not None and np.isfinite(res.dual_bound):
                br.raise_lower(i, int(k), sound_lower(res.dual_bound), "klp")
                run.klp_tags[(i, int(k))] = rel.tight_tags(res)
            if res.primal is not None:
                run.offer(i, r, res.primal[rel.inputs], "klp")
        run.klp_info[i] = rel.summary()
        if settings.input_bab_nodes and run.sets[r].norm == "linf":
            run.klp_info[i]["input_bab"] = _input_bab(run, r, ks)
        run.clock.charge(r, started, "klp")


def _input_bab(run: _Run, r: int, ks: KLPSettings) -> dict:
    """Input partitioning with k-LP nodes for the targets the k-LP left open (module docstring, stage 3b);
    returns the tree sizes (nodes, deepest split) for the certificate."""
    from .input_bab import minimize_input_bab

    i, br, settings = int(run.rows[r]), run.br, run.settings
    nodes, depth = 0, 0
    for k in run.lp_targets(i):
        k = int(k)
        if not settings.bounds and (br.upper[i].min() <= 0.0 or br.lower[i, k] > 0.0):
            continue
        c = np.zeros(run.network.output_size)
        c[br.labels[i]], c[k] = 1.0, -1.0
        # the logits' c-combination, as a one-output network would give it: minimise c . f over the box
        close = _close_at(run, i)()
        out = minimize_input_bab(run.network, run.lo[r], run.hi[r], c, settings=ks, close_at=close,
                                 stop_at=0.0 if not settings.bounds else -np.inf,
                                 tolerance=settings.mip_tolerance, node_limit=settings.input_bab_nodes,
                                 deadline=run.clock.deadline(r))
        nodes, depth = nodes + out.nodes, max(depth, out.depth)
        br.termination[(i, k)], br.solver[(i, k)] = out.termination, "input-bab/klp"
        br.raise_lower(i, k, out.lower, "klp")
        if out.point is not None:
            run.offer(i, r, out.point, "klp")
    return {"nodes": nodes, "depth": depth}


# -- stage 4: exact ---------------------------------------------------------------------------------------

def _close_at(run: _Run, i: int) -> Callable[[], float]:
    """When a target's search may stop: its bound above 0 (a verdict), or within the tolerance of the best
    margin attained over all targets (the exact minimum ``min_k m_ik``, bounds)."""
    if not run.settings.bounds:
        return lambda: 0.0
    br, tol = run.br, run.settings.mip_tolerance
    return lambda: float(np.min(np.where(br.mask[i], br.upper[i], np.inf))) - tol


def _needs_search(run: _Run, i: int, k: int) -> bool:
    """Whether stage 4 still has to search target k of input i: its bound not yet within the tolerance of
    the best margin attained (bounds), or its sign still open (verdict)."""
    br = run.br
    if run.settings.bounds:
        return bool(br.mask[i, k]) and br.lower[i, k] <= _close_at(run, i)()
    return k in br.open_targets(i)


def _exact_targets(run: _Run, i: int) -> list[int]:
    """The targets stage 4 has to search, worst attained margin first."""
    ks = [int(k) for k in range(run.br.lower.shape[1]) if _needs_search(run, i, int(k))]
    return sorted(ks, key=lambda k: run.br.upper[i, k])


def _branch_and_bound(run: _Run, r: int, k: int) -> bool:
    """Target k of input ``rows[r]`` by branch and bound over segments; whether it was settled (sign, or the
    exact bracket) within ``branch_node_limit`` LPs and the query's deadline."""
    i, br = int(run.rows[r]), run.br
    c = np.zeros(run.network.output_size)
    c[br.labels[i]], c[k] = 1.0, -1.0
    started = time.monotonic()
    env, rel = run.branch_relaxation()
    outcome = minimize_bab(
        env, root_node(rel, r), run.lo[r], run.hi[r], c,
        offer=lambda x: run.offer(i, r, x, "mip"), close_at=_close_at(run, i),
        stop=(lambda: False) if run.settings.bounds else (lambda: br.upper[i].min() <= 0.0),
        node_limit=run.settings.branch_node_limit, deadline=run.clock.deadline(r))
    run.clock.charge(r, started, "mip")
    br.solver[(i, k)] = "branch-and-bound/" + env.lp_name
    br.termination[(i, k)] = outcome.termination
    br.raise_lower(i, k, outcome.lower, "mip")
    return outcome.termination == Termination.OPTIMAL


def _mip_target(run: _Run, r: int, k: int, solver: str) -> None:
    """Target k of input ``rows[r]`` by the exact piecewise MIP with refinement (the MIP solver's dual bound)."""
    i, br, settings = int(run.rows[r]), run.br, run.settings
    if not settings.bounds and (br.upper[i].min() <= 0.0 or br.lower[i, k] > 0.0):
        return
    label = int(br.labels[i])
    deadline = run.clock.deadline(r)
    if settings.mip_time_limit is not None:
        own = time.monotonic() + settings.mip_time_limit
        deadline = own if deadline is None else min(deadline, own)
    point = None if not np.isfinite(br.upper[i, k]) else br.points[i, k].copy()
    started = time.monotonic()
    outcome = minimize_with_refinement(
        run.network, run.sets[r], run.rel.bounds_of(r),
        lambda e: margin_objective(e, label, k),
        lambda p: float(margins(run.network, p[None, :], br.labels[i:i + 1])[0, k]),
        solver=solver, tolerance=settings.mip_tolerance, deadline=deadline, stop_at_sign=not settings.bounds,
        max_rounds=settings.mip_max_rounds, upper=float(br.upper[i, k]), point=point,
    )
    run.clock.charge(r, started, "mip")
    br.termination[(i, k)], br.solver[(i, k)] = outcome.termination, outcome.solver
    br.raise_lower(i, k, outcome.lower, "mip")
    if outcome.point is not None:
        run.offer(i, r, outcome.point, "mip")


def _mip_stage(run: _Run) -> None:
    solver = run.settings.mip_solver or default_mip_solver()
    # branch and bound over segments works on LPs, which see an L2 ball only through its polyhedral hull: it stays
    # sound but can rarely close an L2 bracket, so a MIP back-end that states the ball exactly goes first
    exact_l2 = capabilities(solver).quadratic
    for r, i in enumerate(run.rows):
        branching = run.settings.branching and not (exact_l2 and run.sets[r].norm == "l2")
        i = int(i)
        for k in _exact_targets(run, i):
            if not run.settings.bounds and not run.br.undecided[i]:
                break
            if not _needs_search(run, i, k):  # an earlier target's points closed it already
                continue
            if run.clock.expired(r):
                run.br.termination[(i, k)] = Termination.TIME_LIMIT
                continue
            if branching and run.settings.branch_node_limit > 0 and _branch_and_bound(run, r, k):
                continue
            if not run.clock.expired(r):
                _mip_target(run, r, k, solver)


# -- the cascade ---------------------------------------------------------------------------------------


def run_cascade(network: Network, xs: Array, labels, eps, *, method: str = MIP,
                settings: CascadeSettings | None = None, norm: str = "linf",
                domain: tuple[float, float] = (0.0, 1.0), on_decided: OnDecided | None = None,
                targets: Array | None = None) -> CascadeResult:
    """The cascade over one chunk of inputs; :func:`certify_batch` without discarding the stage times.

    Args: as :func:`certify_batch`.
    """
    settings = settings or CascadeSettings()
    if not isinstance(settings, CascadeSettings):
        raise InvalidInputError(f"settings must be a CascadeSettings, got {type(settings).__name__}")
    centers, labels, eps, norm, dlo, dhi = _validate(network, xs, labels, eps, method, norm, domain)
    both = method == BOTH
    method = MIP if both else method  # both: the exact run, with the LP answer read off on the way
    n, d = centers.shape
    br = Brackets.start(labels, network.output_size, d, _target_mask(targets, n, network.output_size, labels))
    times = dict.fromkeys(STAGES, 0.0)
    if n == 0:
        return CascadeResult([], times, [] if both else None)
    lo, hi = ball_boxes(centers, eps, norm, dlo, dhi)
    ball = None if norm == "linf" else (centers, eps, norm)

    # 0. the centre (inside its own ball; validate_balls ensured the ball meets the domain)
    t0 = time.monotonic()
    start_points = np.clip(centers, dlo, dhi)
    inside = contains_points(start_points, centers, eps, norm, dlo, dhi, tol=0.0)
    rows = np.flatnonzero(inside)
    br.offer_points(rows, start_points[rows], margins(network, start_points[rows], labels[rows]), "center")
    times["center"] = time.monotonic() - t0

    # 1. symbolic margins of every input still open, in one batch
    t0 = time.monotonic()
    if settings.symbolic:
        rows = np.flatnonzero(br.undecided | settings.bounds)
        if rows.size:
            ball_r = None if ball is None else (centers[rows], eps[rows], norm)
            m_lo, _ = margin_bounds_batch(network, lo[rows], hi[rows], labels[rows], ball=ball_r)
            br.offer_lower(rows, np.where(br.mask[rows], m_lo, -np.inf), "symbolic")
    times["symbolic"] = time.monotonic() - t0

    # 2. attacks: a cheap pass over everything open, a stronger one over what is left (for bounds, the cheap
    # pass over every input: its points are the first upper bounds the exact search closes against)
    t0 = time.monotonic()
    limit = settings.query_time_limit
    attack_deadline = None if limit is None else t0 + ATTACK_SHARE * limit
    for steps, restarts, salt in ((settings.attack_steps, settings.attack_restarts, 0),
                                  (settings.strong_attack_steps, settings.strong_attack_restarts, 1)):
        wanted = br.undecided | (settings.bounds and salt == 0)
        rows = np.flatnonzero(wanted & (eps > 0))
        if rows.size == 0 or steps == 0:
            continue
        res = pgd_attack(network, centers[rows], labels[rows], eps[rows], norm=norm, domain=(dlo, dhi),
                         steps=steps, restarts=restarts, seed=settings.seed + salt, deadline=attack_deadline)
        br.offer_points(rows, res.points, margins(network, res.points, labels[rows]), "attack")
    times["attack"] = time.monotonic() - t0

    # what the cheap stages decided is final for a verdict (later stages only look at open inputs): a caller
    # may store it while the LP and MIP stages run. Bounds need every input's LP or exact search.
    early: dict[int, Certificate] = {}
    early_lp: dict[int, Certificate] = {}
    decided = np.flatnonzero(~br.undecided) if not settings.bounds else np.zeros(0, dtype=np.int64)
    if on_decided is not None and decided.size:
        elapsed = sum(times.values())
        early = {int(i): _certificate(network, br, int(i), centers[i], float(eps[i]), norm, dlo, dhi, method, times,
                                      elapsed, n, (), settings) for i in decided}
        if both:
            early_lp = {int(i): _certificate(network, br, int(i), centers[i], float(eps[i]), norm, dlo, dhi, LP,
                                             times, elapsed, n, (), settings) for i in decided}
            on_decided(list(early), list(zip(early_lp.values(), early.values())))
        else:
            on_decided(list(early), list(early.values()))

    # 3. LP, then 4. exact, input by input
    rows = np.arange(n) if settings.bounds else np.flatnonzero(br.undecided)
    t0 = time.monotonic()
    run = None
    if rows.size and (settings.lp or method in (KLP, MIP)):
        ball_r = None if ball is None else (centers[rows], eps[rows], norm)
        bounds = symbolic_bounds_batch(network, lo[rows], hi[rows], ball=ball_r)
        env = EnvelopeLP(network, settings.lp_lines, settings.lp_time_limit)  # one LP model for the chunk
        sets = [InputSet(centers[i], float(eps[i]), norm=norm, domain=(dlo, dhi)) for i in rows]
        clock = _Clock(rows.size, settings.query_time_limit)
        clock.spent[:] = (times["center"] + times["symbolic"] + times["attack"]) / n  # the shared stages' share
        run = _Run(network, br, rows, lo[rows], hi[rows], sets, env, Relaxations(env, bounds), settings, clock, {})
        times["lp"] = time.monotonic() - t0  # the symbolic bounds and the LP model: the LP stage's set-up
        smooth = method == MIP and settings.smooth_bab and not settings.bounds and smooth_bab_supports(network)
        t0 = time.monotonic()
        if smooth and not both:
            _smooth_stage(run)
        times["bab"] = time.monotonic() - t0
        t0 = time.monotonic()
        if settings.lp:
            _lp_stage(run)
    times["lp"] += time.monotonic() - t0
    lp_br, lp_times = (br.snapshot(), dict(times)) if both else (None, None)
    if both and run is not None and smooth:
        # both: the branch and bound after the LP's answer is read off (the LP certificate is the LP's own)
        t0 = time.monotonic()
        _smooth_stage(run)
        times["bab"] += time.monotonic() - t0

    t0 = time.monotonic()
    if run is not None and (method == KLP or (method == MIP and settings.klp)):
        _klp_stage(run)
    times["klp"] = time.monotonic() - t0

    t0 = time.monotonic()
    if method == MIP and run is not None:
        _mip_stage(run)
    times["mip"] = time.monotonic() - t0

    position = {int(i): r for r, i in enumerate(rows)}

    def answers(brackets: Brackets, answer_method: str, stage_times: dict, done: dict) -> list[Certificate]:
        total = sum(stage_times.values())
        out = []
        for i in range(n):
            if i in done:
                out.append(done[i])
                continue
            r = position.get(i)
            tags = () if run is None or r is None else _tight(run, brackets, i, r, answer_method, float(eps[i]))
            own = None if run is None or r is None else {f"{s}_own": float(run.clock.own[s][r]) for s in _OWN_STAGES}
            relaxation = None if run is None or not run.klp_info or answer_method == LP else run.klp_info.get(i)
            out.append(_certificate(network, brackets, i, centers[i], float(eps[i]), norm, dlo, dhi, answer_method,
                                    stage_times, total, n, tags, settings, own, relaxation))
        return out

    lp_certificates = answers(lp_br, LP, lp_times, early_lp) if both else None
    return CascadeResult(answers(br, method, times, early), times, lp_certificates)


def _target_mask(targets, n: int, n_out: int, labels: Array) -> Array | None:
    """``targets``: None (every other class), one list of classes for every input, or a (n, n_out) mask."""
    if targets is None:
        return None
    arr = np.asarray(targets)
    if arr.dtype == bool and arr.shape == (n, n_out):
        mask = arr.copy()
    else:
        ks = [int(k) for k in np.ravel(arr)]
        bad = [k for k in ks if not 0 <= k < n_out]
        if bad:
            raise InvalidInputError(f"targets {bad} are not output indices of a network with {n_out} outputs")
        mask = np.zeros((n, n_out), dtype=bool)
        mask[:, ks] = True
    mask &= np.arange(n_out)[None, :] != labels[:, None]
    if not mask.any(axis=1).all():
        raise InvalidInputError("every query needs at least one target other than its label")
    return mask


def _tight(run: _Run, br: Brackets, i: int, r: int, method: str, eps: float) -> tuple[ConstraintTag, ...]:
    """The constraints tight at the optimum the certificate reports (``br``: the brackets it reports): for
    LP, the LP optimum of the target with the lowest bound; for the k-LP, the k-LP optimum of that target
    (the LP's where the k-LP did not solve it: it was closed before); for MIP, the input attaining the
    smallest margin, read off the real network."""
    if method in (LP, KLP):
        ks = br.targets_of(i)
        for k in sorted(ks, key=lambda k: br.lower[i, k]):
            if method == KLP and (i, int(k)) in run.klp_tags:
                return run.klp_tags[(i, int(k))]
            if (i, int(k)) in run.lp_tags:
                return run.lp_tags[(i, int(k))]
        return ()
    worst = br.worst(i)
    point = br.points[i, worst]
    if np.isnan(point).any():
        return ()
    # the exact optimum is exact to the tolerance only: a pixel within 1 % of the radius counts as at its bound
    return point_tags(run.network, point, run.lo[r], run.hi[r], max(1e-6, 0.01 * eps))


def certify_batch(network: Network, xs: Array, labels, eps, *, method: str = MIP,
                  settings: CascadeSettings | None = None, norm: str = "linf",
                  domain: tuple[float, float] = (0.0, 1.0), on_decided: OnDecided | None = None,
                  targets: Array | None = None) -> list[Certificate]:
    """Certify local robustness of every input of a chunk with the cascade (module docstring).

    Args:
        xs: (n, d) inputs; labels: (n,) true classes (or one int); eps: a radius or one per input.
        method: ``"mip"`` (exact: every query verified or falsified unless a limit is hit), ``"lp"``
            (stages 0-3 only; what they leave is *unknown (relaxation inconclusive)*), ``"klp"`` (stages 0-3
            and the k-neuron LP of stage 3b: the k-LP lower bounds of the margins; also incomplete), or
            ``"both"``: the LP and MIP answers of each input from one run (the LP's as the brackets stood after
            stage 3).
        settings: :class:`CascadeSettings` (thresholds, limits, and ``answer``: verdict or bounds).
        norm, domain: the input sets, as in :class:`formulations.input_sets.InputSet`.
        on_decided: called once, after the attack stage, with the indices and certificates of the inputs
            the cheap stages (centre, symbolic, attack) decided; they are final (the same objects are in
            the returned list), so a caller can store them while the LP and MIP stages run. For ``"both"``
            each certificate is an (LP, MIP) pair, as in the returned list.
        targets: the classes to compare against (a list for every input, or an (n, n_out) mask; default all).

    Returns:
        One robustness :class:`Certificate` per input, in order (``"both"``: one (LP, MIP) pair per input);
        ``stage`` is the stage that decided it (``center``, ``symbolic``, ``attack``, ``bab``, ``lp``, ``klp``,
        ``mip``; for unknown ones the last stage tried);
        ``tight`` the constraints tight at the reported optimum (bounds answers).

    Raises:
        InvalidInputError: malformed inputs, labels, eps, norm, domain, method or settings.
        SolverNotAvailableError: ``method="mip"`` and the MIP solver cannot run here.
        UnsoundAnswerError: a bound contradicted a margin the real network attains.
    """
    result = run_cascade(network, xs, labels, eps, method=method, settings=settings, norm=norm,
                         domain=domain, on_decided=on_decided, targets=targets)
    if method == BOTH:
        return list(zip(result.lp_certificates, result.certificates))
    return result.certificates


# -- certificates ------------------------------------------------------------------------------------------


def _target_verdict(lower: float, upper: float, termination, method: str) -> tuple[Verdict, UnknownReason | None]:
    if lower > 0:
        return Verdict.VERIFIED, None
    if upper <= 0:
        return Verdict.FALSIFIED, None
    return Verdict.UNKNOWN, reason_for(termination, relaxation=method in (LP, KLP))


def _certificate(network: Network, br: Brackets, i: int, center: Array, eps: float, norm: str, dlo: Array,
                 dhi: Array, method: str, times: dict, total: float, n: int, tight: tuple[ConstraintTag, ...],
                 settings: CascadeSettings, own: dict | None = None, relaxation: dict | None = None) -> Certificate:
    """Input i's certificate. ``times``: the batch's stage times (each query carries its share) and, in ``own``, the
    query's own seconds in the stages that work query by query (``bab_own``, ``lp_own``, ``klp_own``, ``mip_own``);
    ``relaxation``: what the k-neuron LP held, when it ran on this query."""
    label = int(br.labels[i])
    ks = [int(k) for k in br.targets_of(i)]
    target_bounds = []
    for k in ks:
        lo_k, up_k = float(br.lower[i, k]), float(br.upper[i, k])
        verdict, reason = _target_verdict(lo_k, up_k, br.termination.get((i, k)), method)
        target_bounds.append(TargetBound(k, lo_k, up_k, verdict, reason, (), br.solver.get((i, k), ""),
                                         stage=str(br.lower_stage[i, k])))
    lower = float(min(br.lower[i, k] for k in ks))
    worst = br.worst(i)
    upper = float(br.upper[i, worst])
    counterexample, value, reason = None, None, None
    if upper <= 0:
        verdict, stage = Verdict.FALSIFIED, str(br.upper_stage[i, worst])
        counterexample = br.points[i, worst].copy()
        # the re-check of design.md: inside the set, and the real network's margin is <= 0
        value = float(margins(network, counterexample[None, :], br.labels[i:i + 1])[0][ks].min())
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
    # the input itself on the wrong side of a target: a misclassification, not a robustness failure
    misclassified = bool(margins(network, center[None, :], br.labels[i:i + 1])[0][ks].min() <= 0.0)
    extra = {"binding_target": int(binding), "worst_target": int(worst), "cascade": True, "answer": settings.answer,
             "misclassified": misclassified}
    if relaxation is not None:  # the k-neuron LP ran on this query: what it held
        extra["relaxation"] = {"kind": "k-neuron", **relaxation}
    if settings.bounds and method == MIP:
        extra["exact"] = bool(upper - lower <= settings.mip_tolerance * (1.0 + 1e-9))
    return Certificate(
        kind="robustness", verdict=verdict, lower=lower, upper=upper, method=method, stage=stage, reason=reason,
        label=label, eps=eps, norm=norm, counterexample=counterexample, counterexample_value=value,
        targets=tuple(target_bounds), tight=tight, solver=",".join(solvers),
        # batched stages are shared: each query carries its share of the wall time of the stages it went
        # through (one decided by the attack carries no LP or MIP share; its batch_total is the time so far)
        times={**{f"{s}_share": float(times[s]) / n for s in STAGES}, "batch_total": float(total), **(own or {})},
        extra=extra,
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
    mask = np.zeros((1, network.output_size), dtype=bool)
    mask[0, k] = True
    br = Brackets.start(labels, network.output_size, centers.shape[1], mask)
    lo, hi = ball_boxes(centers, eps_arr, norm, dlo, dhi)
    input_set = InputSet(centers[0], float(eps_arr[0]), norm=norm, domain=(dlo, dhi))
    start = input_set.project(centers[0])
    br.offer_points(np.array([0]), start[None, :], margins(network, start[None, :], labels), "center")
    ball = None if norm == "linf" else (centers, eps_arr, norm)
    env = EnvelopeLP(network, lp_lines, None)
    rel = Relaxations(env, symbolic_bounds_batch(network, lo, hi, ball=ball))
    c = np.zeros(network.output_size)
    c[int(label)], c[k] = 1.0, -1.0

    def offer(p: Array) -> None:
        p = input_set.project(p)
        br.offer_points(np.array([0]), p[None, :], margins(network, p[None, :], labels), "mip")

    outcome = minimize_bab(env, root_node(rel, 0), lo[0], hi[0], c, offer=offer,
                           close_at=lambda: float(br.upper[0, k]) - tolerance, node_limit=node_limit)
    br.raise_lower(0, k, outcome.lower, "mip")
    point = br.points[0, k]
    return float(br.lower[0, k]), float(br.upper[0, k]), None if np.isnan(point).any() else point.copy()
