"""The one crossing between the solver-neutral model and the solvers: shared parameters and results.

As in MathOpt: a back-end exports a :class:`~formulations.model.Model`, solves it, and parses the answer
into one vocabulary. What is only the solver's *claim* is said so: ``objective_value`` is the value of
the solver's best primal point (a maximisation's incumbent is *below* the true maximum whenever the gap
is open), ``dual_bound`` is the solver's proven bound on the optimum. Verdicts of *verified* may only use
``dual_bound`` (design.md, Soundness rules).
"""

from __future__ import annotations

import abc
import importlib
import enum
import time
from dataclasses import dataclass, field, replace

import numpy as np

from ..model import Model


@enum.unique
class Termination(enum.Enum):
    OPTIMAL = "optimal"
    FEASIBLE = "feasible"  # a limit stopped it with an incumbent and a dual bound
    INFEASIBLE = "infeasible"
    UNBOUNDED = "unbounded"
    TIME_LIMIT = "time_limit"
    NODE_LIMIT = "node_limit"
    NUMERICAL = "numerical"
    ERROR = "error"
    # ``SolveParameters.cutoff`` pruned every point: the optimum is not better than the cutoff
    # (``dual_bound`` is the cutoff); says nothing about the model's feasibility
    CUTOFF = "cutoff"
    # a back-end whose MIP answers need a second opinion answered, and no trusted back-end could confirm
    # it (backends.second_opinion): no dual bound, whatever the back-end claimed
    UNCONFIRMED = "unconfirmed"


@dataclass(frozen=True, kw_only=True)
class SolveParameters:
    """Common parameters; ``None`` leaves the solver's default."""

    time_limit: float | None = None
    node_limit: int | None = None
    relative_gap: float | None = 1e-9
    absolute_gap: float | None = 1e-9
    threads: int = 1
    verbose: bool = False
    # a known objective value the optimum must reach (e.g. an attack's margin); lets MIP solvers prune
    cutoff: float | None = None
    # effort a MIP solver spends on presolve, cutting planes and primal heuristics, as MathOpt's Emphasis:
    # "off", "low", "medium", "high" (None: the solver's default). Small, well-formulated models (the
    # piecewise multiple-choice MIPs of a refinement loop) solve many times faster with "low": SCIP spent
    # 94 % of a 2.4 s solve separating cuts at a root that needed 4 nodes. A hint: SCIP honours it, the
    # other back-ends keep their defaults.
    presolve: str | None = None
    cuts: str | None = None
    heuristics: str | None = None

    def __post_init__(self) -> None:
        for name in ("presolve", "cuts", "heuristics"):
            value = getattr(self, name)
            if value is not None and value not in EMPHASIS:
                raise ValueError(f"SolveParameters.{name} must be one of {EMPHASIS} or None, got {value!r}")


EMPHASIS = ("off", "low", "medium", "high")


@dataclass(frozen=True, kw_only=True)
class SolveResult:
    termination: Termination
    solver: str
    primal: np.ndarray | None = None  # best primal point found (solver's claim)
    objective_value: float | None = None  # value at ``primal`` (solver's claim)
    dual_bound: float | None = None  # proven bound: upper for MAXIMIZE, lower for MINIMIZE
    tight_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    solve_time: float = 0.0
    build_time: float = 0.0
    node_count: int | None = None
    message: str = ""
    # LP only: row multipliers y in the convention ``c - A^T y = reduced costs`` (c as given, either
    # sense); approximate, so use them through ``safe_dual_bound``, never as a proof on their own
    row_duals: np.ndarray | None = None
    # LP only: rigorous bound from ``row_duals`` (Neumaier & Shcherbina 2004), see safe_bounds.py;
    # valid whatever the solver's accuracy: lower for MINIMIZE, upper for MAXIMIZE
    safe_dual_bound: float | None = None

    @property
    def has_primal(self) -> bool:
        return self.primal is not None


@dataclass(frozen=True, kw_only=True)
class Capabilities:
    """What a back-end can solve (as cvxpy/linopy keep one registry of solver features).

    ``quadratic``: quadratic rows and objective terms, convex or not, solved globally (SCIP, Gurobi with
    NonConvex=2); back-ends without it refuse such models (QuadraticNotSupportedError).
    ``integer_only``: every variable must be integer (CP-SAT). ``needs_second_opinion``: its MIP answers
    are not trusted alone (HiGHS, design.md, Soundness rules). ``duals``: LP row duals are returned.
    """

    lp: bool
    mip: bool
    sos2: bool = False
    quadratic: bool = False
    duals: bool = False
    integer_only: bool = False
    needs_second_opinion: bool = False


# A cutoff is relaxed by this relative amount before it reaches a solver: solvers keep only points
# strictly better than it up to their own epsilons (SCIP drops a point 1e-6 below an integral limit),
# and a known point that attains the cutoff must survive. A looser cutoff only prunes less.
CUTOFF_SLACK = 1e-4


class Backend(abc.ABC):
    """One solver back-end (cvxpy/linopy style): a lazy import, ``is_installed()``, one status map.

    ``solve`` is the MathOpt crossing: export the :class:`Model`, solve, parse into :class:`SolveResult`.
    Sub-classes implement ``_build`` (translate; returns a handle) and ``_run`` (solve the handle and
    parse); the precedence of checks and the timing are written once here.
    """

    name: str
    requires: str  # the Python package it needs, for error messages
    capabilities: Capabilities

    def is_installed(self) -> bool:
        """True when the package imports; back-ends with a licence override this to solve a tiny model."""
        try:
            importlib.import_module(self.requires)
        except ImportError:
            return False
        return True

    def check_model(self, model: Model) -> None:
        """Raise :class:`SolverError` when ``model`` needs a feature this back-end lacks."""
        from ..errors import QuadraticNotSupportedError, SolverError

        caps = self.capabilities
        if model.is_quadratic and not caps.quadratic:
            raise QuadraticNotSupportedError.of(self.name, model)
        if model.sos2 and not caps.sos2:
            raise SolverError(f"solver {self.name!r} does not support SOS2 sets (model {model.name!r} has "
                              f"{len(model.sos2)}); use 'scip' or 'gurobi'")
        if model.num_integers and not caps.mip:
            raise SolverError(f"solver {self.name!r} solves LPs only; model {model.name!r} has "
                              f"{model.num_integers} integer variables")
        if caps.integer_only and model.num_integers < model.num_variables:
            raise SolverError(f"solver {self.name!r} needs every variable integer; model {model.name!r} has "
                              f"{model.num_variables - model.num_integers} continuous variables")

    def solve(self, model: Model, params: SolveParameters) -> SolveResult:
        self.check_model(model)
        t0 = time.perf_counter()
        handle = self._build(model, params)
        build_time = time.perf_counter() - t0
        result = self._run(model, handle, params)
        return replace(result, build_time=build_time)

    @abc.abstractmethod
    def _build(self, model: Model, params: SolveParameters):
        """Translate ``model`` into the solver's own model (with ``params`` applied)."""

    @abc.abstractmethod
    def _run(self, model: Model, handle, params: SolveParameters) -> SolveResult:
        """Solve the translated model and parse the answer."""


def make_result(model: Model, solver: str, termination: Termination, *, primal: np.ndarray | None = None,
                dual_bound: float | None = None, solve_time: float = 0.0, node_count: int | None = None,
                message: str = "", row_duals: np.ndarray | None = None) -> SolveResult:
    """Parse step shared by the back-ends: ``objective_value`` and ``tight_rows`` are recomputed at the
    primal point (not copied from the solver), ``safe_dual_bound`` from ``row_duals`` when given."""
    objective_value, tight = None, np.zeros(0, dtype=np.int64)
    if primal is not None:
        primal = np.asarray(primal, dtype=np.float64)
        objective_value = model.evaluate(primal)
        tight = model.tight_rows(primal)
    safe = None
    if row_duals is not None:
        from .safe_bounds import safe_lp_bound

        row_duals = np.asarray(row_duals, dtype=np.float64)
        safe = safe_lp_bound(model, row_duals)
    if dual_bound is not None:
        dual_bound = float(dual_bound)
    return SolveResult(termination=termination, solver=solver, primal=primal, objective_value=objective_value,
                       dual_bound=dual_bound, tight_rows=tight, solve_time=solve_time, node_count=node_count,
                       message=message, row_duals=row_duals, safe_dual_bound=safe)
