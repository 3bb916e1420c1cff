"""HiGHS through highspy's matrix API (``highs``): the fast LP back-end.

The model is passed whole (``passModel`` with the CSR arrays: no Python loop), so building is cheap
even at 5e5 non-zeros. LP answers carry row duals and the Neumaier–Shcherbina ``safe_dual_bound``.

HiGHS also solves MIPs, but design.md records wrong HiGHS MIP optima (even "infeasible") on a sound
piecewise GELU model that SCIP solved correctly: its capabilities say ``needs_second_opinion`` and
every MIP answer's message says so. Re-solving many LPs that differ in bounds and objective is
:class:`formulations.backends.highs_persistent.PersistentLP`.
"""

from __future__ import annotations

import os
import sys

import math
import time

import numpy as np

from ..errors import SolverError
from ..model import Model, Sense
from .base import Backend, Capabilities, SolveParameters, SolveResult, Termination, make_result

SECOND_OPINION = "HiGHS MIP answer: needs a second opinion before use (design.md, Soundness rules)"



def new_highs():
    """A ``highspy.Highs`` instance, silent: HiGHS prints its banner to the C-level stdout on the first
    construction in a process, before any option can turn output off, which would corrupt the output of
    commands such as ``polycert vnncomp`` (the answer word must be all they print)."""
    import highspy

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
            h = highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    h.setOptionValue("output_flag", False)
    # HiGHS runs every instance on one global scheduler, fixed by the first run in the process; an instance
    # asking for another thread count then fails to run ("Not Set"). All of ours use one thread (its simplex
    # is serial anyway; parallelism comes from running queries in several processes).
    h.setOptionValue("threads", 1)
    return h

class HighsBackend(Backend):
    name = "highs"
    requires = "highspy"
    capabilities = Capabilities(lp=True, mip=True, duals=True, quadratic=False, needs_second_opinion=True)

    def _build(self, model: Model, params: SolveParameters, *, zero_objective: bool = False):
        import highspy

        h = new_highs()
        h.setOptionValue("output_flag", bool(params.verbose))
        inf = h.getInfinity()
        lp = highspy.HighsLp()
        n, m = model.num_variables, model.num_constraints
        lp.num_col_, lp.num_row_ = n, m
        c = np.zeros(n) if zero_objective else model.objective_vector()
        lp.col_cost_ = c
        lp.offset_ = 0.0 if zero_objective else model.objective_constant
        lp.sense_ = highspy.ObjSense.kMaximize if model.sense == Sense.MAXIMIZE else highspy.ObjSense.kMinimize
        lp.col_lower_ = np.clip(model.lb, -inf, inf)
        lp.col_upper_ = np.clip(model.ub, -inf, inf)
        lp.row_lower_ = np.clip(model.row_lower, -inf, inf)
        lp.row_upper_ = np.clip(model.row_upper, -inf, inf)
        A = model.matrix()
        lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
        lp.a_matrix_.start_ = A.indptr.astype(np.int32)
        lp.a_matrix_.index_ = A.indices.astype(np.int32)
        lp.a_matrix_.value_ = A.data.astype(np.float64)
        lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = n, m
        if model.num_integers:
            lp.integrality_ = [highspy.HighsVarType.kInteger if v else highspy.HighsVarType.kContinuous
                               for v in model.integrality.tolist()]
        if h.passModel(lp) == highspy.HighsStatus.kError:
            raise SolverError(f"highs rejected model {model.name!r}")
        if params.time_limit is not None:
            h.setOptionValue("time_limit", max(float(params.time_limit), 0.0))
        if model.is_mip:
            if params.node_limit is not None:
                h.setOptionValue("mip_max_nodes", int(params.node_limit))
            if params.relative_gap is not None:
                h.setOptionValue("mip_rel_gap", float(params.relative_gap))
            if params.absolute_gap is not None:
                h.setOptionValue("mip_abs_gap", float(params.absolute_gap))
        return h

    def _run(self, model: Model, handle, params: SolveParameters) -> SolveResult:
        import highspy

        S = highspy.HighsModelStatus
        h = handle
        t0 = time.perf_counter()
        try:
            h.run()
            status = h.getModelStatus()
            if status == S.kUnboundedOrInfeasible:
                probe = self._build(model, params, zero_objective=True)
                probe.run()
                status = S.kInfeasible if probe.getModelStatus() == S.kInfeasible else S.kUnbounded
            info, sol = h.getInfo(), h.getSolution()
            has_primal = bool(sol.value_valid) and status not in (S.kInfeasible, S.kUnbounded)
            primal = np.asarray(sol.col_value, dtype=np.float64) if has_primal else None
            termination = {
                S.kOptimal: Termination.OPTIMAL,
                S.kInfeasible: Termination.INFEASIBLE,
                S.kUnbounded: Termination.UNBOUNDED,
                S.kTimeLimit: Termination.TIME_LIMIT,
                S.kIterationLimit: Termination.NODE_LIMIT,
                S.kSolutionLimit: Termination.NODE_LIMIT,  # mip_max_nodes reports as a solution limit
            }.get(status, Termination.ERROR)
            if has_primal and termination in (Termination.TIME_LIMIT, Termination.NODE_LIMIT):
                termination = Termination.FEASIBLE
            dual, duals, nodes = None, None, None
            if model.is_mip:
                nodes = int(info.mip_node_count)
                if termination in (Termination.OPTIMAL, Termination.FEASIBLE, Termination.TIME_LIMIT,
                                   Termination.NODE_LIMIT) and math.isfinite(info.mip_dual_bound):
                    dual = float(info.mip_dual_bound)
            elif termination == Termination.OPTIMAL:
                dual = float(info.objective_function_value)
                if sol.dual_valid:
                    duals = np.asarray(sol.row_dual, dtype=np.float64)
            message = f"highs status {h.modelStatusToString(status)}"
        except SolverError:
            raise
        except Exception as exc:  # the one boundary where HiGHS's exceptions become ours
            raise SolverError(f"highs failed on model {model.name!r}: {exc}") from None
        if model.is_mip:
            message += f"; {SECOND_OPINION}"
        return make_result(model, self.name, termination, primal=primal, dual_bound=dual,
                           solve_time=time.perf_counter() - t0, node_count=nodes, row_duals=duals,
                           message=message)
