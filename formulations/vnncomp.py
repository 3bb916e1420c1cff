"""VNN-COMP answers for ReLU and smooth networks and VNN-LIB robustness properties, in a time budget.

Smooth networks (GELU, sigmoid, tanh, SiLU: :func:`formulations.smooth_bab.supports`) take stages 1-3, then their own
optimised bounds and the smooth branch and bound (:func:`_smooth`); other networks stop after the attack.

A property (:class:`formulations.vnnlib.VnnlibProperty`) is *violated* iff some ``x`` of the box has
``y_target >= y_label`` for some target (its robustness view). Stages, cheapest first; each one drops the
targets it decides:

1. ``centre``: the box centre, evaluated on the real network;
2. ``symbolic``: DeepPoly/CROWN back-substitution of every margin (:func:`formulations.bounds.margin_bounds`);
3. ``attack``: PGD on the targets still open (Madry et al. 2018), :func:`formulations.attack.pgd_attack`, with
   steps of eps/4 from output-diversified random starts (Tashiro et al. 2020);
4. ``tightening``: alpha-CROWN bounds of every hidden layer (:func:`formulations.relu_bab.optimised_bounds`,
   seconds), then the margins on them. (LP tightening and the margins' triangle LP are not run: after
   alpha-CROWN, whose optimum is theirs, they moved no bound on 256x4 and 256x6 and cost 20-45 s.)
5. ``bab``: branch and bound over ReLU splits with optimised linear bounds (alpha/beta-CROWN,
   :mod:`formulations.relu_bab`) over the remaining targets in rounds (each target's search resumed where its
   last share left it), with ``BAB_FIRST_SHARE`` of the time: what it decides does not wait for the next stage;
6. ``refine``: exact MIP bounds of the hidden layers' unstable neurons, layer by layer, each followed by
   alpha-CROWN on the later layers (:func:`_refine`, alpha-beta-CROWN's ``bab-refine``), with ``REFINE_SHARE``
   of the time left, then branch and bound again from scratch on the refined bounds with ``BAB_SHARE`` of the
   rest. On 256x4 prop_0_0.05 the refinement took the roots from -1.4..-2.3 to -0.8..-1.5, where branch and
   bound closed each target in 20-950 domains instead of leaving 1,000 open after 8 s each;
7. ``mip``: the exact big-M MIP per remaining target (Tjeng et al. 2019), with the solver's cutoff at a
   small positive margin so that it prunes everything it can prove safe, and the rest of the budget; only
   when branch and bound stopped for good before its time was up (its domain limit).

Answers (design.md, Soundness rules): ``violated`` only with a point that
:func:`formulations.vnnlib.check_counterexample` accepts on the real network in float64; ``holds`` only when
*every* target has a sound lower bound > 0 (a symbolic bound, a branch-and-bound's smallest leaf bound
(each a Lagrangian dual bound, moved outward like a solver's), or a solver's dual bound moved outward by
:func:`formulations.refinement.sound_lower`); anything else is ``unknown``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .attack import pgd_attack
from .bounds import LayerBounds, margin_bounds, symbolic_bounds, unstable
from .brackets import Brackets, margins
from .certificate import TargetBound, UnknownReason, Verdict
from .encoding import MIP, encode_network, margin_objective
from .errors import InvalidInputError, SolverError, SolverNotAvailableError
from .input_sets import InputSet
from .model import Model, Sense
from .network import Network
from .refinement import sound_lower
from .relu_bab import optimised_bounds
from .smooth_bab import supports as smooth_bab_supports
from .tightening import tighten_bounds
from .vnnlib import VnnlibProperty, check_counterexample, robustness_view

Array = np.ndarray

HOLDS, VIOLATED, UNKNOWN = "holds", "violated", "unknown"
#: The MIP is asked only whether a margin below this exists; its infeasibility proves margin >= this > 0.
MIP_CUTOFF = 1e-4
#: Output-diversification steps before PGD from each random start (formulations.attack).
ATTACK_ODI_STEPS = 10
#: Fraction of the time left after the refinement that branch and bound may use (the MIPs get the rest only when
#: it stops early; the margin is for its last round and the answer).
BAB_SHARE = 0.97
#: Fraction of the time left after alpha-CROWN for a first branch and bound on alpha-CROWN's bounds: the
#: instances it decides do not wait for the MIP refinement.
BAB_FIRST_SHARE = 0.1
#: Fraction of the time left after the first branch and bound for the MIP refinement of the hidden layers.
REFINE_SHARE = 0.5
#: Seconds per refinement MIP (one side of one neuron); a stopped solve still gives its dual bound.
REFINE_PER_SOLVE = 0.5
#: Points of the box tried against a property of no robustness form (which only a point can decide).
GENERAL_SAMPLES = 2000


@dataclass(frozen=True)
class VnncompAnswer:
    """``word`` in holds / violated / unknown; ``x``, ``y`` the re-checked counterexample of a violation;
    ``stage`` the stage that decided; ``times`` seconds per stage; ``lower`` the proven bound on the
    smallest margin (``-inf`` where none), ``upper`` the smallest margin a point of the box attains,
    ``undecided`` the targets left open, ``reason`` why (the certificates' :class:`UnknownReason`)."""

    word: str
    x: Array | None = None
    y: Array | None = None
    stage: str = ""
    times: dict = field(default_factory=dict)
    lower: float = -np.inf
    undecided: tuple[int, ...] = ()
    upper: float = np.inf  # the smallest margin attained inside the box (a confirmed point's)
    targets: tuple[TargetBound, ...] = ()  # per target: its bracket, verdict and the stage of its bound
    reason: UnknownReason | None = None  # why an unknown is one


def property_input_set(prop: VnnlibProperty) -> InputSet:
    """The property's box as an :class:`InputSet`: an L-inf ball around the centre, clipped to the box itself."""
    radius = float(np.max(prop.upper - prop.lower)) / 2.0
    return InputSet(prop.center, np.nextafter(radius, np.inf), norm="linf", domain=(prop.lower, prop.upper))


class _Run:
    """The running state of one answer: the targets' brackets (:class:`formulations.brackets.Brackets`, one
    input: proven lower bounds, margins attained inside the box), the counterexample, the clock."""

    def __init__(self, network: Network, prop: VnnlibProperty, label: int, targets: tuple[int, ...], timeout: float,
                 *, decidable: bool = True):
        self.network, self.prop, self.label, self.targets = network, prop, label, tuple(targets)
        # only a robustness view's targets can be proven here: any other form can be refuted, never held
        self.decidable = decidable and bool(targets)
        mask = np.zeros((1, network.output_size), dtype=bool)
        mask[0, list(self.targets)] = True
        self.br = Brackets.start(np.array([max(label, 0)]), network.output_size, network.input_size, mask)
        self.started = time.monotonic()
        self.deadline = self.started + timeout
        self.times: dict[str, float] = {}
        self.counterexample: Array | None = None
        self.stage = ""
        self.exhausted = False  # a search ended undecided before the time was up (its domain limit)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    @property
    def lower(self) -> dict[int, float]:
        return {k: float(self.br.lower[0, k]) for k in self.targets}

    @property
    def open(self) -> list[int]:
        return [k for k in self.targets if not self.br.lower[0, k] > 0.0]

    def offer_lower(self, k: int, value: float, stage: str) -> None:
        """A proven lower bound on target k's margin (checked against the margins attained: a contradiction
        is an :class:`UnsoundAnswerError`)."""
        was_open = bool(self.open)
        self.br.raise_lower(0, int(k), float(value), stage)
        if was_open and not self.open:
            self.stage = stage

    def offer_point(self, x: Array, stage: str) -> bool:
        """A point: an upper bound on the margins if it lies in the box; the counterexample only if the real
        network confirms it."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        if self.targets and self.prop.contains_input(x):
            self.br.offer_points(np.array([0]), x[None, :], margins(self.network, x[None, :], self.br.labels), stage)
        if self.counterexample is None and check_counterexample(self.prop, self.network.forward, x):
            self.counterexample, self.stage = x, stage
            return True
        return False

    def timed(self, name: str, t0: float) -> None:
        self.times[name] = self.times.get(name, 0.0) + time.monotonic() - t0

    def reason(self) -> UnknownReason:
        """Why the answer is unknown, in the certificates' words (:class:`UnknownReason`)."""
        if not self.decidable:
            return UnknownReason.UNSUPPORTED_FORM
        if self.remaining() <= 1.0:
            return UnknownReason.TIME_LIMIT
        return UnknownReason.NODE_LIMIT if self.exhausted else UnknownReason.RELAXATION

    def target_bounds(self) -> tuple[TargetBound, ...]:
        out = []
        for k in self.targets:
            lo, up = float(self.br.lower[0, k]), float(self.br.upper[0, k])
            verdict = Verdict.VERIFIED if lo > 0 else Verdict.FALSIFIED if up <= 0 else Verdict.UNKNOWN
            out.append(TargetBound(int(k), lo, up, verdict, None if verdict != Verdict.UNKNOWN else self.reason(),
                                   stage=str(self.br.lower_stage[0, k])))
        return tuple(out)

    def answer(self) -> VnncompAnswer:
        self.times["total"] = time.monotonic() - self.started
        lower = float(self.br.lower[0, list(self.targets)].min()) if self.targets else -np.inf
        upper = float(self.br.upper[0, list(self.targets)].min()) if self.targets else np.inf
        common = dict(times=dict(self.times), lower=lower, upper=upper, targets=self.target_bounds())
        if self.counterexample is not None:
            x = self.counterexample
            return VnncompAnswer(VIOLATED, x, self.network.forward(x), self.stage, **common)
        if not self.open and self.decidable:
            return VnncompAnswer(HOLDS, stage=self.stage, **common)
        return VnncompAnswer(UNKNOWN, stage="", undecided=tuple(self.open), reason=self.reason(), **common)


def _bab(run: _Run, input_set: InputSet, bounds: list[LayerBounds], budget: float, *, search=None) -> bool:
    """ReLU branch and bound over the open targets, round by round: in each round every target still open, easiest
    (highest bound) first, gets an equal share of the time left, so the easy ones finish early and pass their
    time on. A target its share leaves open keeps its search tree (:class:`formulations.relu_bab.BabSearch`) and
    goes on from it in the next round: the property holds only when every target does, so no target's work is
    wasted on the way. Ends when every target is verified, a counterexample is confirmed, the time is up, or a
    search ends undecided for good (its domain limit). Returns whether the MIPs should have the time left: only
    in the last case (on 256x4 prop_10_0.05 the MIP's encoding alone outran the 27 s that branch and bound left it,
    and no target that branch and bound still works on was decided by the MIP in that time). ``search``: the
    search class (default :class:`formulations.relu_bab.BabSearch`; smooth networks:
    :class:`formulations.smooth_bab.SmoothBabSearch`, which has the same interface)."""
    from .relu_bab import FALSIFIED, VERIFIED, BabSearch

    search = search or BabSearch

    lo, hi = input_set.box()
    deadline = time.monotonic() + budget
    searches: dict[int, object] = {}
    pending = sorted(run.open, key=lambda k: -run.lower[k])
    while pending:
        for i, k in enumerate(pending):
            share = (deadline - time.monotonic()) / (len(pending) - i)
            if share <= 0.5:
                return False
            if k not in searches:
                searches[k] = search(run.network, lo, hi, bounds, run.label, k)
            res = searches[k].run(share)
            if res.status == FALSIFIED and run.offer_point(input_set.project(res.x), "bab"):
                return False
            run.offer_lower(k, res.lower, "bab")  # a proven bound whatever the status
            if searches[k].finished and res.status != VERIFIED:
                run.exhausted = True
                return True  # this target stays open whatever the others do: the MIPs get the rest of the time
        pending = sorted((k for k in pending if searches[k].result.status != VERIFIED),
                         key=lambda k: -searches[k].result.stats.get("open_bound", -np.inf))
    return False


def _refine(run: _Run, input_set: InputSet, bounds: list[LayerBounds], budget: float,
            solver: str) -> list[LayerBounds]:
    """Exact MIP bounds of the hidden layers' unstable neurons, layer by layer, each layer's followed by
    alpha-CROWN on the layers after it (the winner's ``bab-refine``; Tjeng et al.'s progressive tightening with
    their MIP in place of the LP). Each layer gets a share of the budget in proportion to its unstable
    neurons among the layers still to go, and at least half of the time left; what a layer leaves passes on.
    Gurobi when it runs here (it keeps the model between solves), else ``solver``."""
    from .backends import available_solvers

    network = run.network
    lo, hi = input_set.box()
    refine_solver = "gurobi" if available_solvers().get("gurobi") else solver
    deadline = time.monotonic() + budget
    hidden = len(network.hidden_layers)
    for k in range(1, hidden):
        left = deadline - time.monotonic()
        if left <= 1.0:
            break
        counts = [unstable(b).size for b in bounds[k:hidden]]
        if counts[0] == 0:
            continue
        # the first layers' bounds enter every later one: each layer gets at least half of the time left
        share = left * max(0.5, counts[0] / sum(counts))
        try:
            bounds = tighten_bounds(network, input_set, bounds, method=MIP, solver=refine_solver, layers=[k],
                                    time_limit=share, per_neuron_limit=REFINE_PER_SOLVE)
        except SolverNotAvailableError:
            if refine_solver == solver:
                break
            refine_solver = solver  # over the size-limited licence: the rest with the trusted default
            continue
        bounds = optimised_bounds(network, lo, hi, bounds, deadline=deadline)
    return bounds


def _mip(run: _Run, input_set: InputSet, bounds: list[LayerBounds], solver: str) -> None:
    """Exact big-M MIP per open target, hardest (lowest bound) first, each with a share of the time left."""
    from .backends import solve
    from .backends.base import SolveParameters

    model = Model("vnncomp-mip")
    enc = encode_network(model, run.network, input_set, bounds, mode=MIP)
    pending = sorted(run.open, key=lambda k: run.lower[k])
    while pending and run.counterexample is None:
        k = pending.pop(0)
        if not pending and run.remaining() > 1.0:
            # a round is over: targets its time shares left open get the time the others did not use
            pending = [j for j in sorted(run.open, key=lambda j: run.lower[j]) if j != k]
        share = run.remaining() / (len(pending) + 1)
        if share <= 0.5:
            return
        margin_objective(enc, run.label, k, sense=Sense.MINIMIZE)
        try:
            res = solve(model, solver, SolveParameters(time_limit=share, cutoff=MIP_CUTOFF))
        except SolverError:
            continue  # an answer we cannot trust decides nothing
        if res.dual_bound is not None and np.isfinite(res.dual_bound):
            run.offer_lower(k, sound_lower(res.dual_bound), "mip")
        if res.primal is not None and res.objective_value is not None and res.objective_value <= 0.0:
            # the solver's point is only a claim: the real network must confirm it (projected into the box)
            x = input_set.project(res.primal[enc.inputs])
            if not run.offer_point(x, "mip"):
                # a numerically borderline point: a short local attack from it usually finds a real one
                found = pgd_attack(run.network, x, run.label, input_set.eps, domain=input_set.domain,
                                   steps=20, restarts=0, targets=[k])
                run.offer_point(found.points[0], "mip")


def _smooth(run: _Run, input_set: InputSet, bounds: list[LayerBounds]) -> None:
    """Stages 4 and 5 for smooth networks: optimised bounds of the hidden layers
    (:func:`formulations.smooth_bab.optimised_bounds`), the margins on them, then the smooth branch and bound
    (:class:`formulations.smooth_bab.SmoothBabSearch`) over the open targets with the rest of the time (no MIP
    stage here yet: the piecewise MIP is the cascade's)."""
    from .smooth_bab import SmoothBabSearch
    from .smooth_bab import optimised_bounds as smooth_optimised_bounds

    t0 = time.monotonic()
    lo, hi = input_set.box()
    bounds = smooth_optimised_bounds(run.network, lo, hi, bounds, deadline=time.monotonic() + 0.3 * run.remaining())
    m_lo, _ = margin_bounds(run.network, lo, hi, run.label, bounds=bounds)
    for k in run.open:
        run.offer_lower(k, float(m_lo[k]), "tightening")
    run.timed("tightening", t0)
    if not run.open or run.remaining() <= 1.0:
        return
    t0 = time.monotonic()
    _bab(run, input_set, bounds, BAB_SHARE * run.remaining(), search=SmoothBabSearch)
    run.timed("bab", t0)


def vnncomp_answer(network: Network, prop: VnnlibProperty, *, timeout: float, solver: str = "scip",
                   seed: int = 0, attack_restarts: int = 20, attack_steps: int = 50,
                   tighten: bool = True) -> VnncompAnswer:
    """Decide a VNN-LIB property on a ReLU network within ``timeout`` seconds (module docstring).

    Args:
        network: a feed-forward network whose hidden layers are ReLU (the LP/MIP stages need it).
        prop: the property; only the robustness form (:func:`formulations.vnnlib.robustness_view`) is
            decided by bounds; other forms can only be refuted (the centre and sampled points of the box) and
            are otherwise *unknown*, never *holds*.
        timeout: the wall-clock budget in seconds for this call.
        solver: the MIP back-end (SCIP by default; HiGHS MIP answers need a second opinion). The refinement's
            many small MIPs go to Gurobi when its licence runs here (it keeps the model between solves),
            and to ``solver`` otherwise.
        tighten: alpha-CROWN's intermediate bounds before branch and bound (off: the symbolic ones).

    Returns:
        A :class:`VnncompAnswer`; ``violated`` carries the counterexample and its outputs.

    Raises:
        InvalidInputError: the property's sizes do not match the network, or a non-positive timeout.
    """
    if not (np.isfinite(timeout) and timeout > 0):
        raise InvalidInputError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if prop.n_inputs != network.input_size or prop.n_outputs != network.output_size:
        raise InvalidInputError(f"the property speaks of {prop.n_inputs} inputs and {prop.n_outputs} outputs; "
                                f"the network {network.name!r} has {network.input_size} and {network.output_size}")
    view = robustness_view(prop)
    label, targets = view if view is not None else (-1, ())
    run = _Run(network, prop, label, targets, float(timeout), decidable=view is not None)

    t0 = time.monotonic()
    run.offer_point(prop.center, "centre")
    run.timed("centre", t0)
    if run.counterexample is not None:
        return run.answer()
    if view is None:
        # a form the bounds do not decide: it can only be refuted, by points of the box (unknown otherwise)
        t0 = time.monotonic()
        rng = np.random.default_rng(seed)
        xs = prop.lower + rng.uniform(size=(GENERAL_SAMPLES, prop.n_inputs)) * (prop.upper - prop.lower)
        ys = network.forward(np.clip(xs, prop.lower, prop.upper))
        for x in xs[[bool(prop.output_violates(y)) for y in ys]]:  # candidates, each confirmed on its own
            if run.offer_point(x, "sampling"):
                break
        run.timed("sampling", t0)
        return run.answer()
    relu = all(layer.activation.name in ("relu", "identity") for layer in network.hidden_layers)
    input_set = property_input_set(prop)

    # 2. symbolic bounds (cheaper than the attack: most robust instances end here)
    t0 = time.monotonic()
    lo, hi = input_set.box()
    bounds = symbolic_bounds(network, lo, hi)
    m_lo, _ = margin_bounds(network, lo, hi, label, bounds=bounds)
    for k in targets:
        run.offer_lower(k, float(m_lo[k]), "symbolic")
    run.timed("symbolic", t0)
    if not run.open:
        return run.answer()

    # 3. attack the targets the bounds left open
    t0 = time.monotonic()
    # large steps (eps / 4) and output-diversified starts: small steps from uniform starts all settle in the
    # same basin and miss the narrow violations of the deeper networks
    found = pgd_attack(network, input_set.center, label, input_set.eps, domain=input_set.domain,
                       steps=attack_steps, restarts=attack_restarts, step_size=input_set.eps / 4, seed=seed,
                       targets=run.open, odi_steps=ATTACK_ODI_STEPS)
    run.offer_point(found.points[0], "attack")
    run.timed("attack", t0)
    if run.counterexample is not None:
        return run.answer()
    if not relu:
        if smooth_bab_supports(network):
            _smooth(run, input_set, bounds)
        return run.answer()

    # 4. alpha-CROWN bounds of the hidden layers, then the margins on them
    t0 = time.monotonic()
    if tighten:
        bounds = optimised_bounds(network, lo, hi, bounds, deadline=time.monotonic() + 0.3 * run.remaining())
        m_lo, _ = margin_bounds(network, lo, hi, label, bounds=bounds)
        for k in targets:
            run.offer_lower(k, float(m_lo[k]), "tightening")
    run.timed("tightening", t0)
    if not run.open or run.remaining() <= 1.0:
        return run.answer()

    # 5. branch and bound over ReLU splits, first on alpha-CROWN's bounds
    t0 = time.monotonic()
    mip = _bab(run, input_set, bounds, BAB_FIRST_SHARE * run.remaining())
    run.timed("bab", t0)
    if not run.open or run.counterexample is not None or run.remaining() <= 1.0:
        return run.answer()

    # 6. exact MIP bounds of the hidden layers, then branch and bound again on them
    if not mip:
        t0 = time.monotonic()
        bounds = _refine(run, input_set, bounds, REFINE_SHARE * run.remaining(), solver)
        m_lo, _ = margin_bounds(network, lo, hi, label, bounds=bounds)
        for k in run.open:
            run.offer_lower(k, float(m_lo[k]), "refine")
        run.timed("refine", t0)
        if not run.open or run.remaining() <= 1.0:
            return run.answer()
        t0 = time.monotonic()
        mip = _bab(run, input_set, bounds, BAB_SHARE * run.remaining())
        run.timed("bab", t0)
        if not run.open or run.counterexample is not None or run.remaining() <= 1.0 or not mip:
            return run.answer()

    # 7. exact MIP for what remains
    t0 = time.monotonic()
    _mip(run, input_set, bounds, solver)
    run.timed("mip", t0)
    return run.answer()
