"""Gurobi through gurobipy's matrix API (``gurobi``), optional.

Variables come from one ``addMVar``, rows from ``addMConstr`` with the SciPy CSR matrix. Gurobi rows
have one sense each, so a ranged row ``lo < a.x < hi`` becomes a ``>=`` row and a ``<=`` row; its dual
is the sum of theirs. SOS2 sets map to ``addSOS(SOS_TYPE2)``.

The pip wheel's licence is size-limited (2000 variables / constraints): ``is_installed`` checks that a
tiny model really solves, and a model over the limit raises :class:`SolverNotAvailableError` naming
the limit instead of a crash.
"""

from __future__ import annotations

import functools
import math
import time

import numpy as np
import scipy.sparse as sp

from ..errors import SolverError, SolverNotAvailableError
from ..model import Model, Sense
from .base import CUTOFF_SLACK, Backend, Capabilities, SolveParameters, SolveResult, Termination, make_result

_SIZE_LIMIT_CODE = 10010  # GRB_ERROR_SIZE_LIMIT_EXCEEDED


@functools.cache
def _environment():
    """One quiet Gurobi environment (starting one checks the licence and prints a banner)."""
    import gurobipy as gp

    env = gp.Env(empty=True)
    env.setParam("OutputFlag", 0)
    env.start()
    return env


#: SolveParameters' emphasis hints as Gurobi's Presolve, Cuts and Heuristics; None is Gurobi's default
_EMPHASIS = {
    "presolve": ("Presolve", {None: -1, "off": 0, "low": 1, "medium": -1, "high": 2}),
    "cuts": ("Cuts", {None: -1, "off": 0, "low": 1, "medium": -1, "high": 2}),
    "heuristics": ("Heuristics", {None: 0.05, "off": 0.0, "low": 0.01, "medium": 0.05, "high": 0.2}),
}


def _apply(g, params: SolveParameters, sense: Sense) -> None:
    """Set ``params`` on the Gurobi model ``g`` (every field, so a persistent model forgets the last solve's)."""
    from gurobipy import GRB

    g.Params.OutputFlag = int(bool(params.verbose))
    g.Params.Threads = max(1, int(params.threads))
    g.Params.TimeLimit = max(float(params.time_limit), 0.0) if params.time_limit is not None else GRB.INFINITY
    g.Params.NodeLimit = float(params.node_limit) if params.node_limit is not None else GRB.INFINITY
    g.Params.MIPGap = float(params.relative_gap) if params.relative_gap is not None else 1e-4
    g.Params.MIPGapAbs = float(params.absolute_gap) if params.absolute_gap is not None else 1e-10
    if params.cutoff is not None:
        slack = CUTOFF_SLACK * (1.0 + abs(params.cutoff))
        g.Params.Cutoff = params.cutoff - slack if sense == Sense.MAXIMIZE else params.cutoff + slack
    else:
        g.Params.Cutoff = -GRB.INFINITY if sense == Sense.MAXIMIZE else GRB.INFINITY
    for field, (name, values) in _EMPHASIS.items():
        g.setParam(name, values[getattr(params, field)])


def _licence_error(model: Model, exc) -> Exception:
    code = getattr(exc, "errno", None)
    if code == _SIZE_LIMIT_CODE or "size-limited" in str(exc).lower():
        return SolverNotAvailableError(
            f"gurobi's licence here is size-limited and model {model.name!r} ({model.num_variables} variables, "
            f"{model.num_constraints} rows) is over the limit: {exc}; use 'scip' or another solver")
    if code is not None and 10009 <= code <= 10009:  # GRB_ERROR_NO_LICENSE
        return SolverNotAvailableError(f"gurobi has no working licence: {exc}")
    return SolverError(f"gurobi failed on model {model.name!r}: {exc}")


def _quad_expr(xs, lin_vars, lin_coefs, qi, qj, q):
    import gurobipy as gp

    expr = gp.QuadExpr()
    for j, v in zip(np.asarray(lin_vars).tolist(), np.asarray(lin_coefs).tolist()):
        expr.add(xs[j], v)
    for i, j, v in zip(np.asarray(qi).tolist(), np.asarray(qj).tolist(), np.asarray(q).tolist()):
        expr.add(xs[i] * xs[j], v)
    return expr


class GurobiBackend(Backend):
    name = "gurobi"
    requires = "gurobipy"
    capabilities = Capabilities(lp=True, mip=True, sos2=True, quadratic=True, duals=True)

    def is_installed(self) -> bool:
        try:
            import gurobipy as gp

            m = gp.Model("probe", env=_environment())
            x = m.addVar(ub=1.0)
            m.setObjective(x, gp.GRB.MAXIMIZE)
            m.optimize()
            ok = m.Status == gp.GRB.OPTIMAL
            m.dispose()
            return ok
        except Exception:  # ImportError, no licence, anything: not usable
            return False

    def _build(self, model: Model, params: SolveParameters, *, relaxed_reductions: bool = False):
        import gurobipy as gp
        from gurobipy import GRB

        try:
            g = gp.Model(model.name, env=_environment())
            n = model.num_variables
            vtype = np.where(model.integrality, GRB.INTEGER, GRB.CONTINUOUS)
            x = g.addMVar(n, lb=model.lb, ub=model.ub, vtype=vtype)
            A = model.matrix()
            lo, hi = model.row_lower, model.row_upper
            ge = np.flatnonzero(np.isfinite(lo) & (lo != hi))
            le = np.flatnonzero(np.isfinite(hi) & (lo != hi))
            eq = np.flatnonzero(np.isfinite(lo) & (lo == hi))
            blocks = []
            for rows, sense, rhs in ((ge, GRB.GREATER_EQUAL, lo), (le, GRB.LESS_EQUAL, hi), (eq, GRB.EQUAL, lo)):
                if rows.size:
                    constr = g.addMConstr(sp.csr_matrix(A[rows]), x, sense, rhs[rows])
                    blocks.append((rows, constr))
            if model.sos2:
                xs = x.tolist()
                for variables, weights in model.sos2:
                    g.addSOS(GRB.SOS_TYPE2, [xs[j] for j in variables.tolist()], weights.tolist())
            gsense = GRB.MAXIMIZE if model.sense == Sense.MAXIMIZE else GRB.MINIMIZE
            if model.is_quadratic:
                xs = x.tolist()
                for qc in model.quadratic_constraints:
                    expr = _quad_expr(xs, qc.lin_vars, qc.lin_coefs, qc.qi, qc.qj, qc.q)
                    if math.isfinite(qc.lo) and qc.lo == qc.hi:
                        g.addQConstr(expr == qc.lo)
                        continue
                    if math.isfinite(qc.lo):
                        g.addQConstr(expr >= qc.lo)
                    if math.isfinite(qc.hi):
                        g.addQConstr(expr <= qc.hi)
                c = model.objective_vector()
                nz = np.flatnonzero(c)
                qi, qj, q = model.objective_quadratic
                g.setObjective(_quad_expr(xs, nz, c[nz], qi, qj, q) + model.objective_constant, gsense)
            else:
                g.setMObjective(None, model.objective_vector(), model.objective_constant, sense=gsense)
            _apply(g, params, model.sense)
            if model.is_quadratic:
                g.Params.NonConvex = 2  # global optimality, convex or not (ObjBound is then a proven bound)
            if relaxed_reductions:
                g.Params.DualReductions = 0  # tells infeasible from unbounded (Gurobi's documented recipe)
        except gp.GurobiError as exc:
            raise _licence_error(model, exc) from None
        return g, x, blocks

    def _run(self, model: Model, handle, params: SolveParameters) -> SolveResult:
        import gurobipy as gp
        from gurobipy import GRB

        g, x, blocks = handle
        t0 = time.perf_counter()
        try:
            g.optimize()
            if g.Status == GRB.INF_OR_UNBD:
                g.dispose()
                g, x, blocks = self._build(model, params, relaxed_reductions=True)
                g.optimize()
            result = _result(model, self.name, g, x, blocks, params, time.perf_counter() - t0)
            g.dispose()
        except gp.GurobiError as exc:
            raise _licence_error(model, exc) from None
        return result


def _result(model: Model, name: str, g, x, blocks, params: SolveParameters, seconds: float) -> SolveResult:
    """Parse the solved Gurobi model ``g`` (variables ``x``, row blocks ``blocks``) into a SolveResult."""
    from gurobipy import GRB

    status = g.Status
    has_primal = g.SolCount > 0 and status not in (GRB.INFEASIBLE, GRB.UNBOUNDED)
    primal = np.asarray(x.X, dtype=np.float64) if has_primal else None
    termination = {
        GRB.OPTIMAL: Termination.OPTIMAL,
        GRB.INFEASIBLE: Termination.INFEASIBLE,
        GRB.UNBOUNDED: Termination.UNBOUNDED,
        GRB.CUTOFF: Termination.CUTOFF,
        GRB.TIME_LIMIT: Termination.TIME_LIMIT,
        GRB.NODE_LIMIT: Termination.NODE_LIMIT,
        GRB.ITERATION_LIMIT: Termination.NODE_LIMIT,
        GRB.NUMERIC: Termination.NUMERICAL,
        GRB.SUBOPTIMAL: Termination.NUMERICAL,
    }.get(status, Termination.ERROR)
    if has_primal and termination in (Termination.TIME_LIMIT, Termination.NODE_LIMIT, Termination.ERROR):
        termination = Termination.FEASIBLE
    dual, duals, nodes = None, None, None
    if termination == Termination.CUTOFF:
        dual = float(params.cutoff)
    elif model.is_mip or model.is_quadratic:
        # quadratic models: only Gurobi's proven ObjBound counts (no LP duals, no safe bound from them)
        try:
            nodes = int(g.NodeCount)
        except Exception:  # a convex QCP solved by barrier has no node count
            nodes = None
        # a limit without an incumbent still leaves a proven bound
        if termination in (Termination.OPTIMAL, Termination.FEASIBLE, Termination.TIME_LIMIT,
                           Termination.NODE_LIMIT):
            try:
                bound = float(g.ObjBound)
            except Exception:  # no proven bound attribute: no dual bound (the answer stays unknown)
                bound = math.inf
            if math.isfinite(bound):
                dual = bound
    elif termination == Termination.OPTIMAL:
        dual = float(g.ObjVal)
        duals = np.zeros(model.num_constraints)
        for rows, constr in blocks:
            duals[rows] += np.asarray(constr.Pi, dtype=np.float64)
    return make_result(model, name, termination, primal=primal, dual_bound=dual, solve_time=seconds,
                       node_count=nodes, row_duals=duals, message=f"gurobi status {status}")


class PersistentGurobi:
    """A MIP handed to Gurobi once and re-solved with a new objective each time (Gurobi keeps the model, so
    a re-solve skips the export and the build: the bound-tightening MIPs of one layer share everything else).
    ``solve`` answers as :meth:`GurobiBackend.solve` does."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self._g, self._x, self._blocks = GurobiBackend()._build(model, SolveParameters())

    def set_objective(self, c, *, sense: Sense = Sense.MINIMIZE, constant: float = 0.0) -> None:
        from gurobipy import GRB

        self.model.set_objective(np.asarray(c, dtype=np.float64), constant=constant, sense=sense)
        self._g.setMObjective(None, self.model.objective_vector(), float(constant),
                              sense=GRB.MAXIMIZE if sense == Sense.MAXIMIZE else GRB.MINIMIZE)

    def solve(self, params: SolveParameters | None = None) -> SolveResult:
        import gurobipy as gp

        params = params or SolveParameters()
        t0 = time.perf_counter()
        try:
            _apply(self._g, params, self.model.sense)
            self._g.optimize()
            return _result(self.model, "gurobi", self._g, self._x, self._blocks, params, time.perf_counter() - t0)
        except gp.GurobiError as exc:
            raise _licence_error(self.model, exc) from None

    def close(self) -> None:
        self._g.dispose()
