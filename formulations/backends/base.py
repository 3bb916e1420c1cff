"""The one crossing between the solver-neutral model and the solvers: shared parameters and results.

As in MathOpt: a back-end exports a :class:`~formulations.model.Model`, solves it, and parses the answer
into one vocabulary. What is only the solver's *claim* is said so: ``objective_value`` is the value of
the solver's best primal point (a maximisation's incumbent is *below* the true maximum whenever the gap
is open), ``dual_bound`` is the solver's proven bound on the optimum. Verdicts of *verified* may only use
``dual_bound`` (design.md, Soundness rules).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

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

    @property
    def has_primal(self) -> bool:
        return self.primal is not None
