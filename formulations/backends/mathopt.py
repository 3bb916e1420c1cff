"""OR-Tools MathOpt back-ends: ``ortools-glop``, ``ortools-pdlp`` (LP), ``ortools-scip``, ``ortools-highs``,
``ortools-cpsat`` (MIP).

The Python ``mathopt.Model`` adds variables and coefficients one call at a time; instead the model is
exported straight into a ``ModelProto`` from the CSR arrays (repeated fields filled from lists, in the
row-major order the proto requires) and handed to MathOpt's proto-level ``solve``; the answer is parsed
from the ``SolveResultProto``. Same solvers, same parameters, no per-coefficient Python.

``dual_bound`` is MathOpt's ``objective_bounds.dual_bound``. For PDLP (a first-order method whose duals
are only approximately feasible) the reported bound is not a proof: ``dual_bound`` is replaced by the
Neumaier–Shcherbina bound computed from its duals (:mod:`.safe_bounds`).
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..errors import SolverError
from ..model import Model, Sense
from .base import CUTOFF_SLACK, Backend, Capabilities, SolveParameters, SolveResult, Termination, make_result


class MathOptBackend(Backend):
    """One MathOpt solver type. ``mip_params``: the solver accepts node limits and gap tolerances."""

    requires = "ortools"

    def __init__(self, name: str, solver_type: str, capabilities: Capabilities, *, mip_params: bool,
                 safe_bound_only: bool = False) -> None:
        self.name = name
        self.solver_type = solver_type  # a SolverTypeProto name, e.g. "SOLVER_TYPE_GLOP"
        self.capabilities = capabilities
        self.mip_params = mip_params
        self.safe_bound_only = safe_bound_only

    def is_installed(self) -> bool:
        try:
            from ortools.math_opt.core.python import solver  # noqa: F401
        except ImportError:
            return False
        return True

    # -- export -------------------------------------------------------------------------------
    def _build(self, model: Model, params: SolveParameters, *, zero_objective: bool = False):
        from ortools.math_opt import model_pb2

        proto = model_pb2.ModelProto(name=model.name)
        n, m = model.num_variables, model.num_constraints
        v = proto.variables
        v.ids.extend(range(n))
        v.lower_bounds.extend(model.lb.tolist())
        v.upper_bounds.extend(model.ub.tolist())
        v.integers.extend(model.integrality.tolist())
        rows = proto.linear_constraints
        rows.ids.extend(range(m))
        rows.lower_bounds.extend(model.row_lower.tolist())
        rows.upper_bounds.extend(model.row_upper.tolist())
        A = model.matrix().copy()
        A.sum_duplicates()  # also sorts the column indices of each row, as the proto requires
        A.eliminate_zeros()
        coo = A.tocoo()
        mat = proto.linear_constraint_matrix
        mat.row_ids.extend(coo.row.tolist())
        mat.column_ids.extend(coo.col.tolist())
        mat.coefficients.extend(coo.data.tolist())
        c = np.zeros(n) if zero_objective else model.objective_vector()
        nz = np.flatnonzero(c)
        proto.objective.maximize = model.sense == Sense.MAXIMIZE
        proto.objective.offset = 0.0 if zero_objective else model.objective_constant
        proto.objective.linear_coefficients.ids.extend(nz.tolist())
        proto.objective.linear_coefficients.values.extend(c[nz].tolist())
        return proto, self._parameters(params, model.sense, zero_objective)

    def _parameters(self, params: SolveParameters, sense: Sense, zero_objective: bool):
        from ortools.math_opt import parameters_pb2

        p = parameters_pb2.SolveParametersProto(enable_output=bool(params.verbose))
        if params.time_limit is not None:
            p.time_limit.FromNanoseconds(int(max(float(params.time_limit), 0.0) * 1e9))
        if self.solver_type not in ("SOLVER_TYPE_GLOP", "SOLVER_TYPE_HIGHS"):  # these reject a thread count
            p.threads = max(1, int(params.threads))
        if self.mip_params:
            if params.node_limit is not None and self.solver_type != "SOLVER_TYPE_CP_SAT":  # CP-SAT has none
                p.node_limit = int(params.node_limit)
            if params.relative_gap is not None:
                p.relative_gap_tolerance = float(params.relative_gap)
            if params.absolute_gap is not None:
                p.absolute_gap_tolerance = float(params.absolute_gap)
            if params.cutoff is not None and not zero_objective and self.solver_type == "SOLVER_TYPE_GSCIP":
                slack = CUTOFF_SLACK * (1.0 + abs(params.cutoff))
                p.cutoff_limit = params.cutoff - slack if sense == Sense.MAXIMIZE else params.cutoff + slack
        return p

    # -- solve and parse ----------------------------------------------------------------------
    def _call(self, model: Model, proto, parameters):
        from ortools.math_opt import callback_pb2, model_parameters_pb2, parameters_pb2
        from ortools.math_opt.core.python import solver

        try:
            return solver.solve(proto, parameters_pb2.SolverTypeProto.Value(self.solver_type),
                                parameters_pb2.SolverInitializerProto(), parameters,
                                model_parameters_pb2.ModelSolveParametersProto(), None,
                                callback_pb2.CallbackRegistrationProto(), None, None)
        except Exception as exc:  # StatusNotOk and friends: the one boundary
            raise SolverError(f"{self.name} failed on model {model.name!r}: {exc}") from None

    def _run(self, model: Model, handle, params: SolveParameters) -> SolveResult:
        from ortools.math_opt import result_pb2

        proto, parameters = handle
        t0 = time.perf_counter()
        try:
            res = self._call(model, proto, parameters)
        except SolverError as exc:
            # gSCIP reports an unbounded MIP with a primal point of infinite objective, which MathOpt's
            # own validation then rejects; that point is SCIP's proof of unboundedness
            if "PrimalSolutionProto.objective_value" not in str(exc) or "inf" not in str(exc):
                raise
            return make_result(model, self.name, Termination.UNBOUNDED, solve_time=time.perf_counter() - t0,
                               message=f"{self.name}: unbounded (a primal point of infinite objective)")
        reason = result_pb2.TerminationReasonProto.Name(res.termination.reason)
        limit = result_pb2.LimitProto.Name(res.termination.limit)
        if reason == "TERMINATION_REASON_INFEASIBLE_OR_UNBOUNDED":
            probe_proto, probe_params = self._build(model, params, zero_objective=True)
            probe = self._call(model, probe_proto, probe_params)
            probe_reason = result_pb2.TerminationReasonProto.Name(probe.termination.reason)
            reason = ("TERMINATION_REASON_INFEASIBLE" if probe_reason == "TERMINATION_REASON_INFEASIBLE"
                      else "TERMINATION_REASON_UNBOUNDED")
        n, m = model.num_variables, model.num_constraints
        primal, duals = None, None
        if res.solutions:
            sol = res.solutions[0]
            if sol.HasField("primal_solution") and reason not in ("TERMINATION_REASON_INFEASIBLE",
                                                                   "TERMINATION_REASON_UNBOUNDED"):
                primal = np.zeros(n)
                vals = sol.primal_solution.variable_values
                primal[np.asarray(vals.ids, dtype=np.int64)] = np.asarray(vals.values, dtype=np.float64)
            if sol.HasField("dual_solution") and self.capabilities.duals and not model.is_mip:
                duals = np.zeros(m)
                dv = sol.dual_solution.dual_values
                duals[np.asarray(dv.ids, dtype=np.int64)] = np.asarray(dv.values, dtype=np.float64)
        termination = _termination(reason, limit, primal is not None)
        dual = res.termination.objective_bounds.dual_bound
        dual = float(dual) if math.isfinite(dual) and termination in (
            Termination.OPTIMAL, Termination.FEASIBLE, Termination.TIME_LIMIT, Termination.NODE_LIMIT) else None
        if termination == Termination.CUTOFF:
            dual = float(params.cutoff) if params.cutoff is not None else None
        nodes = int(res.solve_stats.node_count) if model.is_mip else None
        result = make_result(model, self.name, termination, primal=primal, dual_bound=dual,
                             solve_time=time.perf_counter() - t0, node_count=nodes, row_duals=duals,
                             message=f"{self.name}: {reason.removeprefix('TERMINATION_REASON_').lower()}"
                                     f"{'' if limit == 'LIMIT_UNSPECIFIED' else ' (' + limit.lower() + ')'}"
                                     f" {res.termination.detail}".rstrip())
        if self.safe_bound_only and result.dual_bound is not None:
            from dataclasses import replace

            safe = result.safe_dual_bound
            result = replace(result, dual_bound=safe if safe is not None and math.isfinite(safe) else None)
        return result


def _termination(reason: str, limit: str, has_primal: bool) -> Termination:
    """MathOpt's (reason, limit) -> our vocabulary (one status map for all MathOpt solvers)."""
    if reason == "TERMINATION_REASON_OPTIMAL":
        return Termination.OPTIMAL
    if reason == "TERMINATION_REASON_INFEASIBLE":
        return Termination.INFEASIBLE
    if reason == "TERMINATION_REASON_UNBOUNDED":
        return Termination.UNBOUNDED
    if reason in ("TERMINATION_REASON_IMPRECISE", "TERMINATION_REASON_NUMERICAL_ERROR"):
        return Termination.NUMERICAL
    if reason in ("TERMINATION_REASON_FEASIBLE", "TERMINATION_REASON_NO_SOLUTION_FOUND"):
        if limit == "LIMIT_CUTOFF" and not has_primal:
            return Termination.CUTOFF
        if has_primal:
            return Termination.FEASIBLE
        if limit == "LIMIT_NODE":
            return Termination.NODE_LIMIT
        if limit in ("LIMIT_TIME", "LIMIT_UNDETERMINED"):
            return Termination.TIME_LIMIT
    return Termination.ERROR


GLOP = MathOptBackend("ortools-glop", "SOLVER_TYPE_GLOP", Capabilities(lp=True, mip=False, duals=True),
                      mip_params=False)
PDLP = MathOptBackend("ortools-pdlp", "SOLVER_TYPE_PDLP", Capabilities(lp=True, mip=False, duals=True),
                      mip_params=False, safe_bound_only=True)
SCIP = MathOptBackend("ortools-scip", "SOLVER_TYPE_GSCIP", Capabilities(lp=True, mip=True), mip_params=True)
HIGHS = MathOptBackend("ortools-highs", "SOLVER_TYPE_HIGHS",
                       Capabilities(lp=True, mip=True, needs_second_opinion=True), mip_params=True)
CPSAT = MathOptBackend("ortools-cpsat", "SOLVER_TYPE_CP_SAT",
                       Capabilities(lp=False, mip=True, integer_only=True), mip_params=True)
