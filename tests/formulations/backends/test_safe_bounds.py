"""The Neumaier–Shcherbina bound holds for any multipliers and is tight at the solvers' duals."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polycert.formulations.backends import Termination, safe_lp_bound, solve
from polycert.formulations.errors import InvalidInputError
from polycert.formulations.model import Model, Sense

from .conftest import AVAILABLE, random_model, seeds, senses

DUAL_SOLVERS = [s for s in ("ortools-glop", "ortools-pdlp", "highs", "gurobi") if AVAILABLE[s]]


def _feasible_points(model: Model, x0: np.ndarray, primal: np.ndarray, rng) -> np.ndarray:
    """x0 (feasible by construction) and points between it and the solver's optimum, kept if feasible."""
    t = rng.uniform(0, 1, (20, 1))
    points = np.vstack([x0, x0 + t * (primal - x0)])
    return points[[model.max_violation(p) == 0.0 for p in points]]


@settings(max_examples=25, deadline=None)
@given(seed=seeds, n=st.integers(1, 6), m=st.integers(1, 5), sense=senses, noise=st.floats(0, 10))
def test_the_safe_bound_is_valid_for_any_multipliers(seed, n, m, sense, noise):
    model, x0 = random_model(seed, n, m, sense=sense)
    rng = np.random.default_rng(seed)
    y = rng.normal(0, 1 + noise, m) * (rng.random(m) < 0.8)
    bound = safe_lp_bound(model, y)
    optimum = solve(model, "scip")
    sign = 1.0 if sense == Sense.MAXIMIZE else -1.0
    for x in _feasible_points(model, x0, optimum.primal, rng):
        assert sign * (bound - model.evaluate(x)) >= 0.0


@settings(max_examples=25, deadline=None)
@given(seed=seeds, n=st.integers(1, 6), m=st.integers(1, 5), sense=senses)
def test_the_safe_bound_at_the_solvers_duals_is_valid_and_close(seed, n, m, sense):
    model, x0 = random_model(seed, n, m, sense=sense)
    sign = 1.0 if sense == Sense.MAXIMIZE else -1.0
    for solver in DUAL_SOLVERS:
        res = solve(model, solver)
        assert res.termination == Termination.OPTIMAL and res.row_duals is not None, solver
        assert sign * (res.safe_dual_bound - model.evaluate(x0)) >= 0.0, solver
        tol = (1e-4 if solver == "ortools-pdlp" else 1e-7) * (1 + abs(res.objective_value))
        assert res.safe_dual_bound == pytest.approx(res.objective_value, abs=tol), solver
        assert sign * (res.safe_dual_bound - res.objective_value) >= -tol, solver


def test_pdlp_reports_the_safe_bound_as_its_dual_bound():
    model, _ = random_model(3, 4, 3)
    res = solve(model, "ortools-pdlp")
    assert res.dual_bound == res.safe_dual_bound


def test_an_unbounded_variable_with_a_residual_gives_no_finite_bound():
    model = Model("free")
    x = model.add_variables(2, [0.0, -np.inf], [1.0, np.inf])
    model.add_constraints(np.array([[1.0, 1.0]]), x, -np.inf, 1.0)
    model.set_objective(np.array([1.0, 1.0]), sense=Sense.MINIMIZE)
    assert safe_lp_bound(model, np.array([0.0])) == -np.inf  # x1 free with cost 1: no bound from y = 0
    assert safe_lp_bound(model, np.array([-1.0])) == -np.inf  # prices the upper side, leaves residual 2 on x1


def test_the_safe_bound_is_exact_on_a_textbook_lp():
    # min x0 + x1 s.t. x0 + x1 >= 1, 0 <= x <= 1: optimum 1, dual y = 1 gives residual 0
    model = Model("textbook")
    x = model.add_variables(2, 0.0, 1.0)
    model.add_constraints(np.ones((1, 2)), x, 1.0, np.inf)
    model.set_objective(np.array([1.0, 1.0]))
    bound = safe_lp_bound(model, np.array([1.0]))
    assert bound <= 1.0 and bound == pytest.approx(1.0, abs=1e-14)


def test_row_duals_of_the_wrong_length_are_an_invalid_input_error():
    model, _ = random_model(1, 3, 2)
    with pytest.raises(InvalidInputError, match="row duals"):
        safe_lp_bound(model, np.zeros(5))
