"""Solver back-ends: one crossing ``solve(model, solver, params)`` from the solver-neutral
:class:`~formulations.model.Model` to SCIP, OR-Tools MathOpt (GLOP, PDLP, SCIP, HiGHS, CP-SAT), HiGHS
(highspy) and Gurobi, parsed into one :class:`SolveResult` vocabulary (MathOpt style).

    >>> res = solve(model, "scip", SolveParameters(time_limit=10))
    >>> res.termination, res.dual_bound            # proven bound; objective_value is only a claim

Only ``dual_bound`` (and, for LPs, ``safe_dual_bound``) may support a *verified* verdict
(design.md, Soundness rules). HiGHS's MIP answers need a second opinion (its capabilities say so).
"""

from __future__ import annotations

import dataclasses

from ..errors import InvalidInputError
from ..model import Model
from .base import Capabilities, SolveParameters, SolveResult, Termination
from .registry import (
    SOLVERS,
    available_solvers,
    capabilities,
    default_lp_solver,
    default_mip_solver,
    require,
)
from .safe_bounds import safe_lp_bound

__all__ = [
    "SOLVERS", "Capabilities", "SolveParameters", "SolveResult", "Termination", "available_solvers",
    "capabilities", "default_lp_solver", "default_mip_solver", "safe_lp_bound", "solve",
]


def solve(model: Model, solver: str = "scip", params: SolveParameters | None = None, **overrides) -> SolveResult:
    """Solve ``model`` with back-end ``solver``.

    Args:
      model: the solver-neutral model.
      solver: one of :data:`SOLVERS`.
      params: common parameters; ``overrides`` (e.g. ``time_limit=5``) replace single fields of it,
        and take precedence over ``params``.

    Returns:
      The parsed answer. ``objective_value`` and ``primal`` are the solver's claim; ``dual_bound`` is
      its proven bound (upper for MAXIMIZE, lower for MINIMIZE).

    Raises:
      SolverNotAvailableError: ``solver`` is unknown, not installed or unlicensed, or the model is
        too large for its licence.
      SolverError: the solver failed, or the model needs a feature the solver lacks (SOS2, integers,
        continuous variables for CP-SAT).
      InvalidInputError: an unknown parameter name in ``overrides``.
    """
    params = params or SolveParameters()
    if overrides:
        known = {f.name for f in dataclasses.fields(SolveParameters)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise InvalidInputError(f"unknown solve parameter(s) {unknown}; known: {sorted(known)}")
        params = dataclasses.replace(params, **overrides)
    return require(solver).solve(model, params)
