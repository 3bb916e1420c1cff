"""A persistent HiGHS LP: one model built once, re-solved with changed bounds, coefficients and objective.

The batched cascade (:mod:`formulations.cascade`) asks thousands of LPs that share one structure — the rows
of a network's affine layers and one block of envelope rows per neuron — and differ only in the input box,
the per-neuron bounds, the envelope lines' coefficients and the objective. Building a model per query would
cost more than solving it; here the model is passed to HiGHS once and each query changes it in place, so the
dual simplex restarts from the previous basis (a warm start).

Soundness (design.md, "Soundness rules"): the LP's optimum as reported by HiGHS is only its *claim*. The
bound returned as ``dual_bound`` is recomputed from the row duals by
:func:`formulations.backends.safe_bounds.lower_bound_from_duals` (Neumaier & Shcherbina, Math. Prog. 2004):
valid whatever the quality of HiGHS's duals, for the model *as currently modified* (this class keeps its
own copy of the bounds, coefficients and objective). "Infeasible" is trusted only when HiGHS's dual ray
passes the same test with a zero objective (a Farkas certificate); otherwise the answer is *numerical*.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import scipy.sparse as sp

from .highs import HighsBackend, new_highs
from ..errors import SolverError, SolverNotAvailableError
from ..model import Model, Sense
from .base import SolveParameters, SolveResult, Termination
from .safe_bounds import lower_bound_from_duals

Array = np.ndarray
NAME = "highs-persistent"


def is_installed() -> bool:
    return HighsBackend().is_installed()


class PersistentLP:
    """A :class:`~formulations.model.Model` (continuous) held by HiGHS and modified in place between solves.

    Indices are those of the model: variable ``j`` is HiGHS column ``j``, row ``i`` is HiGHS row ``i``.
    """

    def __init__(self, model: Model, *, threads: int = 1) -> None:
        # ``threads`` is kept for callers; every HiGHS instance runs on one thread (see highs.new_highs)
        if model.is_mip:
            raise SolverError(f"{NAME} solves LPs only; model {model.name!r} has integers or SOS2 sets")
        if model.is_quadratic:
            from ..errors import QuadraticNotSupportedError

            raise QuadraticNotSupportedError.of(NAME, model)
        try:
            import highspy
        except ImportError:
            raise SolverNotAvailableError(f"{NAME} needs highspy, which is not installed") from None
        self._highspy = highspy
        t0 = time.monotonic()
        self.n_cols, self.n_rows = model.num_variables, model.num_constraints
        self._matrix = model.matrix().tocsc().astype(np.float64)  # CSC: what the dual bound works on
        self._keys: Array | None = None  # sorted entry keys of the CSC structure (see _positions)
        self._lb, self._ub = model.lb.copy(), model.ub.copy()
        self._row_lower, self._row_upper = model.row_lower.copy(), model.row_upper.copy()
        self._cost = np.zeros(self.n_cols)
        self._sense = Sense.MINIMIZE
        self._constant = 0.0
        h = new_highs()
        h.setOptionValue("presolve", "off")  # presolve would discard the basis between re-solves
        inf = h.getInfinity()
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = self.n_cols, self.n_rows
        lp.col_cost_ = self._cost
        lp.col_lower_ = np.where(np.isfinite(self._lb), self._lb, -inf)
        lp.col_upper_ = np.where(np.isfinite(self._ub), self._ub, inf)
        lp.row_lower_ = np.where(np.isfinite(self._row_lower), self._row_lower, -inf)
        lp.row_upper_ = np.where(np.isfinite(self._row_upper), self._row_upper, inf)
        csc = self._matrix
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = csc.indptr.astype(np.int32)
        lp.a_matrix_.index_ = csc.indices.astype(np.int32)
        lp.a_matrix_.value_ = csc.data
        lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = self.n_cols, self.n_rows
        status = h.passModel(lp)
        if status == highspy.HighsStatus.kError:
            raise SolverError(f"{NAME}: HiGHS rejected model {model.name!r}")
        self._h, self._inf = h, inf
        self.build_time = time.monotonic() - t0

    # -- changes ------------------------------------------------------------------------------
    def _finite(self, v: Array) -> Array:
        return np.minimum(np.maximum(v, -self._inf), self._inf)  # np.clip's dispatch costs more than this

    @staticmethod
    def _values(v, shape: tuple[int, ...]) -> Array:
        """``v`` (a scalar or one value per index) as a fresh float64 array of ``shape``."""
        v = np.asarray(v, dtype=np.float64)
        return v.reshape(shape).copy() if v.size == int(np.prod(shape)) else np.full(shape, v)

    def set_variable_bounds(self, idx: Array, lb: Array, ub: Array) -> None:
        idx = np.asarray(idx, dtype=np.int32).reshape(-1)
        lb, ub = self._values(lb, idx.shape), self._values(ub, idx.shape)
        if np.isnan(lb).any() or np.isnan(ub).any() or (lb > ub).any():
            raise SolverError(f"{NAME}: variable bounds hold NaN or lb > ub")
        self._lb[idx], self._ub[idx] = lb, ub
        self._h.changeColsBounds(idx.size, idx, self._finite(lb), self._finite(ub))

    def set_row_bounds(self, rows: Array, lo: Array, hi: Array) -> None:
        rows = np.asarray(rows, dtype=np.int32).reshape(-1)
        lo, hi = self._values(lo, rows.shape), self._values(hi, rows.shape)
        if np.isnan(lo).any() or np.isnan(hi).any():
            raise SolverError(f"{NAME}: row bounds hold NaN")
        self._row_lower[rows], self._row_upper[rows] = lo, hi
        self._h.changeRowsBounds(rows.size, rows, self._finite(lo), self._finite(hi))

    def set_coefficients(self, rows: Array, cols: Array, values: Array) -> None:
        """Set ``A[rows[k], cols[k]] = values[k]`` (an entry absent from the structure is added)."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        cols = np.asarray(cols, dtype=np.int64).reshape(-1)
        values = np.broadcast_to(np.asarray(values, dtype=np.float64), rows.shape)
        if not np.isfinite(values).all():
            raise SolverError(f"{NAME}: coefficients must be finite")
        positions = self._positions(rows, cols)
        if positions is not None:  # entries of the structure: written in place (the cascade's every change)
            self._matrix.data[positions] = values
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", sp.SparseEfficiencyWarning)
                self._matrix[rows, cols] = values
            self._keys = None  # the structure may have changed
        for r, c, v in zip(rows.tolist(), cols.tolist(), values.tolist()):
            self._h.changeCoeff(r, c, v)

    def _positions(self, rows: Array, cols: Array) -> Array | None:
        """Where entries (rows[k], cols[k]) sit in the CSC data array, or None if one is not stored."""
        m = self._matrix
        if getattr(self, "_keys", None) is None:
            m.sum_duplicates()  # canonical CSC (sorted, no duplicates): the keys col * n_rows + row increase
            column = np.repeat(np.arange(self.n_cols, dtype=np.int64), np.diff(m.indptr))
            self._keys = column * self.n_rows + m.indices.astype(np.int64)
        wanted = cols * self.n_rows + rows
        at = np.searchsorted(self._keys, wanted)
        if (at >= self._keys.size).any() or (self._keys[np.minimum(at, self._keys.size - 1)] != wanted).any():
            return None
        return at

    def set_objective(self, c: Array, *, sense: Sense = Sense.MINIMIZE, constant: float = 0.0) -> None:
        c = np.asarray(c, dtype=np.float64)
        if c.shape != (self.n_cols,) or not np.isfinite(c).all():
            raise SolverError(f"{NAME}: objective must be {self.n_cols} finite coefficients")
        # HiGHS always minimises here; a maximisation is min of -c, turned back in solve()
        internal = c if sense == Sense.MINIMIZE else -c
        changed = np.flatnonzero(internal != self._cost)
        if changed.size:
            self._h.changeColsCost(changed.size, changed.astype(np.int32), internal[changed])
        self._cost = internal.copy()
        self._sense, self._constant = sense, float(constant)

    # -- solving ------------------------------------------------------------------------------
    def solve(self, params: SolveParameters | None = None) -> SolveResult:
        """Re-solve from the current basis. ``dual_bound`` is the safe bound of the module docstring."""
        params = params or SolveParameters()
        h, hs = self._h, self._highspy
        h.setOptionValue("time_limit", float(params.time_limit) if params.time_limit is not None else self._inf)
        t0 = time.monotonic()
        h.run()
        elapsed = time.monotonic() - t0
        status = h.getModelStatus()
        termination = {
            hs.HighsModelStatus.kOptimal: Termination.OPTIMAL,
            hs.HighsModelStatus.kInfeasible: Termination.INFEASIBLE,
            hs.HighsModelStatus.kUnbounded: Termination.UNBOUNDED,
            hs.HighsModelStatus.kTimeLimit: Termination.TIME_LIMIT,
            hs.HighsModelStatus.kIterationLimit: Termination.NODE_LIMIT,
        }.get(status, Termination.ERROR)
        sign = 1.0 if self._sense == Sense.MINIMIZE else -1.0
        primal, objective, bound, tight = None, None, None, np.zeros(0, dtype=np.int64)
        if termination in (Termination.OPTIMAL, Termination.TIME_LIMIT, Termination.NODE_LIMIT):
            sol = h.getSolution()
            if sol.dual_valid:
                y = np.asarray(sol.row_dual, dtype=np.float64)
                lower = lower_bound_from_duals(self._cost, self._matrix, self._row_lower, self._row_upper,
                                               self._lb, self._ub, y)
                if np.isfinite(lower):
                    bound = sign * lower + self._constant
            if sol.value_valid:
                primal = np.asarray(sol.col_value, dtype=np.float64)
                objective = sign * float(self._cost @ primal) + self._constant
                tight = _tight_rows(self._matrix @ primal, self._row_lower, self._row_upper)
        if termination == Termination.INFEASIBLE:
            # trusted only with a Farkas certificate that checks out in the safe bound (c = 0): then the
            # Lagrangian bound of any objective is +inf, i.e. no point satisfies the rows and bounds
            bound = sign * np.inf if self._farkas_checks() else None
            if bound is None:
                termination = Termination.NUMERICAL
        if termination == Termination.OPTIMAL and bound is None:
            termination = Termination.NUMERICAL  # HiGHS claims an optimum we cannot certify
        return SolveResult(termination=termination, solver=NAME, primal=primal, objective_value=objective,
                           dual_bound=bound, tight_rows=tight, solve_time=elapsed,
                           message=h.modelStatusToString(status))


    def _farkas_checks(self) -> bool:
        """Whether HiGHS's dual ray proves infeasibility: ``min 0`` has a safe lower bound > 0."""
        try:
            _, has_ray, ray = self._h.getDualRay()
        except (TypeError, ValueError, RuntimeError):
            return False
        if not has_ray:
            return False
        ray = np.asarray(ray, dtype=np.float64)[: self.n_rows]
        zero = np.zeros(self.n_cols)
        return any(lower_bound_from_duals(zero, self._matrix, self._row_lower, self._row_upper, self._lb, self._ub,
                                          sign * ray) > 0.0 for sign in (1.0, -1.0))


def _tight_rows(activity: Array, lo: Array, hi: Array, tolerance: float = 1e-6) -> Array:
    scale = 1.0 + np.abs(activity)
    at_lo = np.isfinite(lo) & (np.abs(activity - lo) <= tolerance * scale)
    at_hi = np.isfinite(hi) & (np.abs(activity - hi) <= tolerance * scale)
    return np.flatnonzero(at_lo | at_hi)
