"""The persistent HiGHS LP: re-solves after in-place changes agree with a fresh solve, bounds are safe."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from scipy.optimize import linprog

from polycert.formulations.backends.base import Termination
from polycert.formulations.backends.highs_persistent import PersistentLP
from polycert.formulations.errors import SolverError
from polycert.formulations.model import Model, Sense

pytest.importorskip("highspy")


def box_model(A: np.ndarray, lo: np.ndarray, hi: np.ndarray, lb: float, ub: float) -> Model:
    model = Model("persistent-test")
    x = model.add_variables(A.shape[1], lb, ub)
    model.add_constraints(A, x, lo, hi)
    return model


def linprog_min(c, A, lo, hi, lb, ub) -> float | None:
    keep_hi, keep_lo = np.isfinite(hi), np.isfinite(lo)
    res = linprog(c, A_ub=np.vstack([A[keep_hi], -A[keep_lo]]), b_ub=np.concatenate([hi[keep_hi], -lo[keep_lo]]),
                  bounds=[(lb, ub)] * A.shape[1], method="highs")
    return float(res.fun) if res.status == 0 else None


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 100_000))
def test_resolves_after_coefficient_bound_and_objective_changes_match_fresh_linprog(seed):
    rng = np.random.default_rng(seed)
    n, m = 5, 6
    A = rng.normal(size=(m, n))
    x0 = rng.uniform(-0.5, 0.5, n)  # a point every version of the LP keeps feasible
    lo, hi = A @ x0 - rng.uniform(0.1, 1, m), A @ x0 + rng.uniform(0.1, 1, m)
    lp = PersistentLP(box_model(A, lo, hi, -1.0, 1.0))
    for _ in range(4):
        # change some coefficients (including entries absent from the structure), rows and bounds, keeping x0 feasible
        rows, cols = rng.integers(0, m, 3), rng.integers(0, n, 3)
        vals = rng.normal(size=3)
        lp.set_coefficients(rows, cols, vals)
        for r, c_, v in zip(rows, cols, vals):
            A[r, c_] = v
        lo, hi = A @ x0 - rng.uniform(0.1, 1, m), A @ x0 + rng.uniform(0.1, 1, m)
        lp.set_row_bounds(np.arange(m), lo, hi)
        c = rng.normal(size=n)
        sense = Sense.MINIMIZE if rng.uniform() < 0.5 else Sense.MAXIMIZE
        lp.set_objective(c, sense=sense)
        res = lp.solve()
        want = linprog_min(c if sense == Sense.MINIMIZE else -c, A, lo, hi, -1.0, 1.0)
        assert res.termination == Termination.OPTIMAL and want is not None
        optimum = want if sense == Sense.MINIMIZE else -want
        # the safe bound is on the right side of the optimum, and close to it
        if sense == Sense.MINIMIZE:
            assert res.dual_bound <= optimum + 1e-9
        else:
            assert res.dual_bound >= optimum - 1e-9
        assert abs(res.dual_bound - optimum) <= 1e-6 * (1 + abs(optimum))
        assert abs(res.objective_value - optimum) <= 1e-6 * (1 + abs(optimum))


def test_bound_stays_safe_when_the_duals_are_wrong():
    A = np.array([[1.0, 1.0]])
    lp = PersistentLP(box_model(A, np.array([1.0]), np.array([np.inf]), 0.0, 1.0))
    lp.set_objective(np.array([1.0, 2.0]))
    res = lp.solve()
    assert res.dual_bound <= 1.0 + 1e-12  # min x0 + 2 x1 s.t. x0 + x1 >= 1 is 1
    assert res.dual_bound >= 1.0 - 1e-9


def test_infeasibility_is_reported_only_with_a_checked_farkas_ray():
    A = np.array([[1.0, 1.0]])
    lp = PersistentLP(box_model(A, np.array([3.0]), np.array([np.inf]), 0.0, 1.0))
    lp.set_objective(np.array([1.0, 0.0]))
    res = lp.solve()
    assert res.termination == Termination.INFEASIBLE
    assert res.dual_bound == np.inf
    lp.set_row_bounds([0], 1.5, np.inf)  # feasible again: the same model recovers
    res = lp.solve()
    assert res.termination == Termination.OPTIMAL
    assert res.dual_bound == pytest.approx(0.5, abs=1e-9)


def test_changing_bounds_moves_the_optimum_like_a_fresh_model():
    A = np.array([[1.0, -1.0]])
    model = box_model(A, np.array([-np.inf]), np.array([0.5]), -1.0, 1.0)
    lp = PersistentLP(model)
    lp.set_objective(np.array([-1.0, 0.0]))  # maximise x0 subject to x0 - x1 <= 0.5
    assert lp.solve().dual_bound == pytest.approx(-1.0, abs=1e-9)
    lp.set_variable_bounds([1], -1.0, 0.0)
    assert lp.solve().dual_bound == pytest.approx(-0.5, abs=1e-9)


def test_rejects_integer_models_and_bad_changes():
    model = Model("mip")
    model.add_variables(2, 0.0, 1.0, integer=True)
    with pytest.raises(SolverError, match="LPs only"):
        PersistentLP(model)
    lp = PersistentLP(box_model(np.eye(2), np.zeros(2), np.ones(2), 0.0, 1.0))
    with pytest.raises(SolverError, match="lb > ub"):
        lp.set_variable_bounds([0], 1.0, 0.0)
    with pytest.raises(SolverError, match="finite"):
        lp.set_coefficients([0], [0], [np.nan])
    with pytest.raises(SolverError, match="objective"):
        lp.set_objective(np.ones(3))
