"""Local robustness queries: ``certify(network, x, label, eps, method=...)``.

The query: over the input set B (a norm ball around ``x`` clipped to the input domain), is the margin
``logit[label] - logit[k]`` positive for every other class k? The answer is a :class:`Certificate` bracketing
``m* = min_k min_{x' in B} margin_k(x')``:

* *falsified* iff some x' in B has a margin <= 0, re-evaluated on the real network in float64;
* *verified* iff a sound lower bound on m* is > 0: a symbolic bound or a solver's **dual** bound, moved
  outward by the slack granted to its tolerances (never a primal / incumbent value);
* *unknown* otherwise, with the reason.

Stages, cheapest first (each decided target skips the rest): the centre and a PGD attack (upper bounds,
counterexamples), symbolic back-substitution (lower bounds), the LP envelope relaxation, and — for
``method="mip"`` — the exact MIP with refinement. A solver bound that contradicts a known point (lower bound
above a value the real network attains) is rejected with :class:`UnsoundAnswerError`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .attack import pgd_attack
from .backends.registry import require
from .backends import available_solvers, default_lp_solver, default_mip_solver, solve
from .backends.base import SolveParameters, Termination
from .bounds import margin_bounds, symbolic_bounds
from .certificate import Certificate, TargetBound, UnknownReason, Verdict, reason_for
from .encoding import LP, MIP, encode_network, margin_objective, tight_constraints
from .errors import InvalidInputError, SolverNotAvailableError, UnsoundAnswerError
from .input_sets import InputSet
from .model import ConstraintTag, Model
from .network import Network
from .refinement import minimize_with_refinement, sound_lower

Array = np.ndarray
METHODS = (LP, MIP)



def margins(network: Network, x: Array, label: int) -> Array:
    """``logit[label] - logit[k]`` for every k (0 at k = label), in float64, for one input or a batch."""
    y = network.forward(x)
    return y[..., label, None] - y


@dataclass
class _Target:
    """Running bracket of one target's minimum margin."""

    target: int
    lower: float = -np.inf
    upper: float = np.inf
    point: Array | None = None
    stage: str = ""
    lower_stage: str = ""
    tight: tuple[ConstraintTag, ...] = ()
    solver: str = ""
    solve_time: float = 0.0
    termination: Termination | None = None
    extra: dict = field(default_factory=dict)

    def offer_point(self, x: Array, value: float, stage: str) -> None:
        if value < self.upper:
            self.upper, self.point, self.stage = float(value), np.array(x, dtype=np.float64), stage

    def offer_lower(self, value: float, stage: str) -> None:
        if value > self.lower:
            self.lower, self.lower_stage = float(value), stage

    @property
    def decided(self) -> bool:
        return self.lower > 0.0 or self.upper <= 0.0


def validate_query(network: Network, x: Array, label: int, eps: float, method: str) -> Array:
    """Check a robustness query's arguments; returns ``x`` as float64. Raises InvalidInputError."""
    x = network.check_input(x)
    if x.ndim != 1:
        raise InvalidInputError(f"certify takes one input of length {network.input_size}, got shape {x.shape}")
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
        raise InvalidInputError(f"label must be an integer class index, got {label!r}")
    if not 0 <= int(label) < network.output_size:
        raise InvalidInputError(f"label {label} is out of range for a network with {network.output_size} outputs")
    if not np.isfinite(eps) or eps < 0:
        raise InvalidInputError(f"eps must be a finite number >= 0, got {eps!r}")
    if method not in METHODS:
        raise InvalidInputError(f"method must be one of {METHODS}, got {method!r}")
    return x


def _check_solver(name: str) -> None:
    """Fail early, with a message naming the solver and what is usable, before any work is done."""
    require(name)


def _check_contradiction(t: _Target) -> None:
    # lower > upper means a bound claims something the real network refutes at a known point
    if t.lower > t.upper + 1e-6 * (1.0 + abs(t.upper)):
        raise UnsoundAnswerError(
            f"target {t.target}: lower bound {t.lower:.9g} (from {t.lower_stage}) exceeds the margin "
            f"{t.upper:.9g} that the real network attains (found by {t.stage}); answer rejected"
        )


def certify(
    network: Network,
    x: Array,
    label: int,
    eps: float,
    *,
    method: str = MIP,
    solver: str | None = None,
    lp_solver: str | None = None,
    norm: str = "linf",
    domain: tuple[float, float] = (0.0, 1.0),
    targets: list[int] | None = None,
    tolerance: float = 1e-4,
    time_limit: float | None = None,
    attack: bool = True,
    n_lines: int = 3,
    seed: int = 0,
    solve_all_targets: bool | None = None,
) -> Certificate:
    """Certify local robustness of ``network`` at ``x`` (class ``label``) within radius ``eps``.

    Args:
        method: ``"lp"`` (sound, incomplete) or ``"mip"`` (exact to ``tolerance``).
        solver: the MIP back-end (default SCIP); ``lp_solver`` the LP back-end (default GLOP).
        norm, domain: the input set, a ``norm`` ball of radius ``eps`` intersected with the box ``domain``.
        targets: the classes to compare against (default: all others).
        time_limit: seconds for the whole query; on expiry the answer is *unknown (time limit)*.
        solve_all_targets: solve every target's LP even when the query is already falsified (so that the LP
            bound of every target is reported); defaults to True for ``method="lp"``.

    Returns:
        A :class:`Certificate` whose ``lower``/``upper`` bracket the minimum margin over all targets.

    Raises:
        InvalidInputError: malformed input, label, eps, norm or method.
        SolverNotAvailableError: the requested solver cannot run here.
        UnsoundAnswerError: a solver's bound contradicted a point the real network attains.
    """
    started = time.monotonic()
    deadline = None if time_limit is None else started + float(time_limit)
    x = validate_query(network, x, label, eps, method)
    label = int(label)
    input_set = InputSet(x, float(eps), norm=norm, domain=domain)
    # HiGHS held across targets (only the objective changes) is the fastest LP here, and its bound is
    # rigorous whatever HiGHS claims: it comes from the row duals (Neumaier & Shcherbina 2004)
    lp_solver = lp_solver or ("highs" if available_solvers().get("highs") else default_lp_solver())
    _check_solver(lp_solver)
    mip_solver = solver or default_mip_solver()
    if method == MIP:
        _check_solver(mip_solver)
    if targets is None:
        targets = [k for k in range(network.output_size) if k != label]
    bad = [k for k in targets if not 0 <= int(k) < network.output_size or int(k) == label]
    if bad:
        raise InvalidInputError(f"targets {bad} are out of range or equal to the label {label}")
    if solve_all_targets is None:
        solve_all_targets = method == LP
    tracks = {int(k): _Target(int(k)) for k in targets}
    times: dict[str, float] = {}

    def value_of(point: Array, k: int) -> float:
        return float(margins(network, point, label)[k])

    # 1. the centre (projected into the set) and a cheap attack: upper bounds and counterexamples
    t0 = time.monotonic()
    centre = input_set.project(x)
    m_centre = margins(network, centre, label)
    for k, t in tracks.items():
        t.offer_point(centre, m_centre[k], "center")
    if attack and eps > 0 and not any(t.upper <= 0 for t in tracks.values()):
        result = pgd_attack(network, x[None, :], np.array([label]), float(eps), norm=norm, domain=domain, seed=seed)
        pts = np.asarray(result.points)[0]
        m_att = margins(network, pts, label)
        for k, t in tracks.items():
            t.offer_point(pts, m_att[k], "attack")
    times["attack"] = time.monotonic() - t0

    # 2. symbolic bounds: pre-activation bounds for the encodings, and margin lower bounds
    t0 = time.monotonic()
    lo, hi = input_set.box()
    bounds = symbolic_bounds(network, lo, hi, ball=input_set)
    m_lo, _ = margin_bounds(network, lo, hi, label, bounds=bounds, ball=input_set)
    for k, t in tracks.items():
        t.offer_lower(float(m_lo[k]), "symbolic")
        _check_contradiction(t)
    times["bounds"] = time.monotonic() - t0

    def falsified() -> bool:
        return any(t.upper <= 0 for t in tracks.values())

    size: dict[str, int] = {}
    # 3. LP envelope relaxation: one model, one objective per target
    t0 = time.monotonic()
    lp_targets = [t for t in tracks.values() if solve_all_targets or not t.decided]
    if lp_targets and not (falsified() and not solve_all_targets):
        model = Model("robustness-lp")
        enc = encode_network(model, network, input_set, bounds, mode=LP, n_lines=n_lines)
        size = model.summary()
        solve_lp = _lp_runner(model, lp_solver)
        for t in lp_targets:
            if deadline is not None and time.monotonic() >= deadline:
                t.termination = Termination.TIME_LIMIT
                continue
            if falsified() and not solve_all_targets:
                break
            margin_objective(enc, label, t.target)
            remaining = None if deadline is None else max(deadline - time.monotonic(), 1e-3)
            res = solve_lp(SolveParameters(time_limit=remaining))
            t.solver, t.solve_time = res.solver, t.solve_time + res.solve_time
            t.termination = res.termination
            bound = res.safe_dual_bound if res.safe_dual_bound is not None else res.dual_bound
            if res.termination == Termination.OPTIMAL and bound is not None:
                t.offer_lower(sound_lower(bound), "lp")
                if t.lower_stage == "lp" or method == LP:
                    t.tight = tight_constraints(enc, res.primal, res.tight_rows) if res.primal is not None else ()
            if res.primal is not None:
                p = input_set.project(res.primal[enc.inputs])
                t.offer_point(p, value_of(p, t.target), "lp")
            _check_contradiction(t)
    times["lp"] = time.monotonic() - t0

    # 4. exact MIP with refinement for what remains
    t0 = time.monotonic()
    if method == MIP:
        for t in sorted(tracks.values(), key=lambda t: t.lower):
            if t.decided or falsified():
                continue
            if deadline is not None and time.monotonic() >= deadline:
                t.termination = Termination.TIME_LIMIT
                continue
            outcome = minimize_with_refinement(
                network, input_set, bounds,
                lambda e, k=t.target: margin_objective(e, label, k),
                lambda p, k=t.target: value_of(p, k),
                solver=mip_solver, tolerance=tolerance, deadline=deadline,
                upper=t.upper, point=t.point,
            )
            t.solver, t.solve_time = outcome.solver, t.solve_time + outcome.solve_time
            t.termination = outcome.termination
            t.extra["refinement_rounds"] = outcome.rounds
            t.offer_lower(outcome.lower, "mip")
            if outcome.point is not None:
                t.offer_point(outcome.point, value_of(outcome.point, t.target), "mip")
            if outcome.primal is not None and outcome.encoding is not None and outcome.result is not None:
                t.tight = tight_constraints(outcome.encoding, outcome.primal, outcome.result.tight_rows)
                size = outcome.encoding.model.summary()
            _check_contradiction(t)
    times["mip"] = time.monotonic() - t0
    times["total"] = time.monotonic() - started

    return _certificate(network, input_set, label, method, tracks, times, size, tolerance, mip_solver, lp_solver)


def _lp_runner(model: Model, lp_solver: str):
    """A function solving ``model`` with its current objective: a persistent HiGHS LP where possible."""
    if lp_solver == "highs":
        from .backends.highs_persistent import PersistentLP

        lp = PersistentLP(model)

        def run(params: SolveParameters):
            lp.set_objective(model.objective_vector(), sense=model.sense, constant=model.objective_constant)
            return lp.solve(params)

        return run
    return lambda params: solve(model, lp_solver, params)


def _target_bound(t: _Target, method: str, tolerance: float) -> TargetBound:
    if t.lower > 0:
        verdict, reason = Verdict.VERIFIED, None
    elif t.upper <= 0:
        verdict, reason = Verdict.FALSIFIED, None
    else:
        verdict, reason = Verdict.UNKNOWN, reason_for(t.termination, relaxation=method == LP)
    return TargetBound(t.target, t.lower, t.upper, verdict, reason, t.tight, t.solver, t.solve_time, t.lower_stage)


def _certificate(network, input_set, label, method, tracks, times, size, tolerance, mip_solver, lp_solver) -> Certificate:
    bounds = tuple(_target_bound(t, method, tolerance) for t in sorted(tracks.values(), key=lambda t: t.target))
    lower = min(t.lower for t in tracks.values())
    worst = min(tracks.values(), key=lambda t: t.upper)
    upper = worst.upper
    binding = min(tracks.values(), key=lambda t: t.lower)
    if upper <= 0:
        verdict, reason, stage = Verdict.FALSIFIED, None, worst.stage
        # re-check the counterexample on the real network, inside the set, before it is reported
        if worst.point is None or not input_set.contains(worst.point) or float(margins(network, worst.point, label).min()) > 0.0:
            raise UnsoundAnswerError("a counterexample failed its re-check on the real network; answer rejected")
    elif lower > 0:
        verdict, reason = Verdict.VERIFIED, None
        stage = max((t.lower_stage for t in tracks.values()), key=["symbolic", "lp", "mip"].index)
    else:
        verdict = Verdict.UNKNOWN
        undecided = [b for b in bounds if b.verdict == Verdict.UNKNOWN]
        reason = undecided[0].reason if undecided else UnknownReason.RELAXATION
        stage = method
    solvers = sorted({t.solver for t in tracks.values() if t.solver})
    return Certificate(
        kind="robustness",
        verdict=verdict,
        lower=float(lower),
        upper=float(upper),
        method=method,
        stage=stage,
        reason=reason,
        label=label,
        eps=float(input_set.eps),
        norm=input_set.norm,
        counterexample=worst.point if verdict == Verdict.FALSIFIED else None,
        counterexample_value=float(upper) if verdict == Verdict.FALSIFIED else None,
        targets=bounds,
        tight=binding.tight,
        solver=",".join(solvers) or (mip_solver if method == MIP else lp_solver),
        times={k: float(v) for k, v in times.items()},
        size=dict(size),
        extra={"binding_target": binding.target, "worst_target": worst.target},
    )


def minimum_margin(
    network: Network,
    x: Array,
    label: int,
    target: int,
    eps: float,
    *,
    solver: str | None = None,
    norm: str = "linf",
    domain: tuple[float, float] = (0.0, 1.0),
    tolerance: float = 1e-4,
    time_limit: float | None = None,
) -> tuple[float, float, Array | None]:
    """The exact minimum of ``logit[label] - logit[target]`` over the input set, as a bracket.

    Unlike :func:`certify` it does not stop once the sign is known: refinement runs until
    ``upper - lower <= tolerance``. Returns ``(lower, upper, point)`` with ``point`` attaining ``upper``.
    """
    x = validate_query(network, x, label, eps, MIP)
    solver = solver or default_mip_solver()
    _check_solver(solver)
    input_set = InputSet(x, float(eps), norm=norm, domain=domain)
    lo, hi = input_set.box()
    bounds = symbolic_bounds(network, lo, hi, ball=input_set)
    centre = input_set.project(x)
    deadline = None if time_limit is None else time.monotonic() + time_limit
    outcome = minimize_with_refinement(
        network, input_set, bounds,
        lambda e: margin_objective(e, int(label), int(target)),
        lambda p: float(margins(network, p, int(label))[int(target)]),
        solver=solver, tolerance=tolerance, deadline=deadline, stop_at_sign=False,
        upper=float(margins(network, centre, int(label))[int(target)]), point=centre, max_rounds=60,
    )
    return outcome.lower, outcome.upper, outcome.point
