"""Solver back-ends: one crossing ``solve(model, solver, params)`` from the solver-neutral
:class:`~formulations.model.Model` to SCIP, OR-Tools MathOpt (GLOP, PDLP, SCIP, HiGHS, CP-SAT), HiGHS
(highspy) and Gurobi, parsed into one :class:`SolveResult` vocabulary (MathOpt style).

    >>> res = solve(model, "scip", SolveParameters(time_limit=10))
    >>> res.termination, res.dual_bound            # proven bound; objective_value is only a claim

Only ``dual_bound`` (and, for LPs, ``safe_dual_bound``) may support a *verified* verdict
(design.md, Soundness rules). HiGHS's MIP answers need a second opinion (its capabilities say so), and
:func:`solve` is where that rule is kept, once for every caller (:func:`second_opinion`).
"""

from __future__ import annotations

import dataclasses

from ..errors import InvalidInputError, SolverError, SolverNotAvailableError
from ..model import Model
from .base import Capabilities, SolveParameters, SolveResult, Termination
from .registry import (
    SOLVERS,
    available_solvers,
    capabilities,
    default_lp_solver,
    default_mip_solver,
    is_available,
    register_backend,
    require,
    solver_names,
    unregister_backend,
)
from .safe_bounds import safe_lp_bound

__all__ = [
    "SOLVERS", "TRUSTED_MIP_SOLVERS", "Capabilities", "SolveParameters", "SolveResult", "Termination",
    "available_solvers", "capabilities", "default_lp_solver", "default_mip_solver", "register_backend",
    "safe_lp_bound", "second_opinion", "solve", "solver_names", "unregister_backend",
]

# The back-ends whose MIP dual bounds are taken as proofs, in the order they are asked for a second
# opinion: SCIP solved correctly the piecewise GELU MILPs on which HiGHS was wrong (design.md), Gurobi
# where its licence runs, then SCIP through OR-Tools.
TRUSTED_MIP_SOLVERS: tuple[str, ...] = ("scip", "gurobi", "ortools-scip")


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
    return second_opinion(model, solver, params, require(solver).solve(model, params))


def second_opinion(model: Model, solver: str, params: SolveParameters, result: SolveResult) -> SolveResult:
    """``result`` as a proof may use it: unchanged, unless ``solver``'s MIP answers need a second opinion.

    For a model with integer variables solved by such a back-end (``needs_second_opinion``: HiGHS), the
    model is solved again, with the same parameters, by the first trusted back-end that runs here
    (:data:`TRUSTED_MIP_SOLVERS`), and *its* answer is returned: termination, dual bound and primal point,
    named ``"<solver>+<trusted>"``, with both solve times added. The untrusted claim is dropped whole,
    not mixed in: a wrong "infeasible" or an overstated dual bound would otherwise still reach a verdict.
    The price is a second solve, within the same time limit: the trusted one gets what the first left
    (none left: :attr:`Termination.TIME_LIMIT` with no dual bound).

    When no trusted back-end can solve it, the answer is :attr:`Termination.UNCONFIRMED` with no dual
    bound (the primal point stays: it is only a claim, and the engine re-checks it on the real network),
    so the engine can only say *unknown (unconfirmed)*.
    """
    if not model.num_integers or not capabilities(solver).needs_second_opinion:
        return result
    if params.time_limit is not None:  # the time limit holds for both solves together
        left = params.time_limit - result.solve_time - result.build_time
        if left <= 0:
            return dataclasses.replace(result, termination=Termination.TIME_LIMIT, dual_bound=None, safe_dual_bound=None,
                                       solver=f"{solver}+unconfirmed",  # never named as if its word stood alone
                                       message=f"{solver}'s MIP answer is unconfirmed: no time was left for a second opinion")
        params = dataclasses.replace(params, time_limit=left)
    tried = []
    for trusted in TRUSTED_MIP_SOLVERS:
        if trusted == solver or not is_available(trusted) or capabilities(trusted).needs_second_opinion:
            continue
        try:
            confirmed = require(trusted).solve(model, params)
        except (SolverNotAvailableError, SolverError) as exc:  # over a licence, a feature it lacks: the next
            tried.append(f"{trusted}: {exc}")
            continue
        return dataclasses.replace(confirmed, solver=f"{solver}+{trusted}",
                                   solve_time=result.solve_time + confirmed.solve_time,
                                   build_time=result.build_time + confirmed.build_time,
                                   message=f"{solver}'s MIP answer replaced by {trusted}'s (second opinion)")
    return dataclasses.replace(
        result, termination=Termination.UNCONFIRMED, dual_bound=None, safe_dual_bound=None,
        message=f"{solver}'s MIP answer is unconfirmed: no trusted back-end "
                f"({', '.join(TRUSTED_MIP_SOLVERS)}) could solve the model" + (f" ({'; '.join(tried)})" if tried else ""))
