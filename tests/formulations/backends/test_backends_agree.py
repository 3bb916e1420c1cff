"""Every installed back-end gives the same optimum, valid dual bounds, and the same verdict on
infeasible / unbounded models; limits give a status, not an exception."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polycert.formulations.backends import SolveParameters, Termination, solve
from polycert.formulations.model import Model, Sense

from .conftest import AVAILABLE, GUROBI_SKIP, LP_SOLVERS, MIP_SOLVERS, brute_force_optimum, random_model, seeds, senses


def _tol(value: float, solver: str) -> float:
    # PDLP is a first-order method: its optimum is accurate to its (relative) termination tolerance only
    return (1e-4 if solver == "ortools-pdlp" else 1e-6) * (1.0 + abs(value))


@settings(max_examples=20, deadline=None)
@given(seed=seeds, n=st.integers(1, 6), m=st.integers(1, 5), sense=senses)
def test_lp_solvers_agree_on_the_optimum_and_bound_it(seed, n, m, sense):
    model, x0 = random_model(seed, n, m, sense=sense)
    results = {s: solve(model, s) for s in LP_SOLVERS}
    reference = results["scip"].objective_value
    known = model.evaluate(x0)  # a feasible point: the optimum is at least as good
    sign = 1.0 if sense == Sense.MAXIMIZE else -1.0
    for solver, res in results.items():
        assert res.termination == Termination.OPTIMAL, (solver, res.message)
        assert res.objective_value == pytest.approx(reference, abs=_tol(reference, solver)), solver
        assert model.max_violation(res.primal) <= _tol(np.abs(res.primal).max(), solver), solver
        assert sign * (res.dual_bound - known) >= -_tol(known, solver), solver
        assert res.dual_bound == pytest.approx(res.objective_value, abs=_tol(reference, solver)), solver
        np.testing.assert_array_equal(res.tight_rows, model.tight_rows(res.primal))


@settings(max_examples=20, deadline=None)
@given(seed=seeds, n=st.integers(1, 5), m=st.integers(1, 4), sense=senses)
def test_mip_solvers_match_enumeration_and_their_dual_bounds_are_valid(seed, n, m, sense):
    model, _ = random_model(seed, n, m, integer=True, sense=sense)
    optimum = brute_force_optimum(model)
    sign = 1.0 if sense == Sense.MAXIMIZE else -1.0
    for solver in MIP_SOLVERS + (["ortools-cpsat"] if AVAILABLE["ortools-cpsat"] else []):
        res = solve(model, solver)
        assert res.termination == Termination.OPTIMAL, (solver, res.message)
        assert res.objective_value == pytest.approx(optimum, abs=1e-6), solver
        # the proven bound is never on the wrong side of any feasible point's value
        assert sign * (res.dual_bound - optimum) >= -1e-6, solver
        assert model.max_violation(res.primal) <= 1e-6, solver


@settings(max_examples=15, deadline=None)
@given(seed=seeds, n=st.integers(2, 6), m=st.integers(1, 4), sense=senses)
def test_mixed_integer_solvers_agree(seed, n, m, sense):
    integer = np.arange(n) % 2 == 0
    model, _ = random_model(seed, n, m, integer=integer, sense=sense)
    results = {s: solve(model, s) for s in MIP_SOLVERS}
    reference = results["scip"].objective_value
    for solver, res in results.items():
        assert res.termination == Termination.OPTIMAL, (solver, res.message)
        assert res.objective_value == pytest.approx(reference, abs=1e-6 * (1 + abs(reference))), solver


def _infeasible() -> Model:
    model = Model("infeasible")
    x = model.add_variables(2, 0.0, 1.0)
    model.add_constraints(np.ones((1, 2)), x, 3.0, np.inf)
    model.set_objective(np.array([1.0, 1.0]), sense=Sense.MAXIMIZE)
    return model


def _unbounded() -> Model:
    model = Model("unbounded")
    x = model.add_variables(2, 0.0, np.inf)
    model.add_constraints(np.array([[1.0, -1.0]]), x, -1.0, 1.0)
    model.set_objective(np.array([1.0, 1.0]), sense=Sense.MAXIMIZE)
    return model


@pytest.mark.parametrize("solver", LP_SOLVERS)
def test_an_infeasible_lp_is_reported_infeasible(solver):
    res = solve(_infeasible(), solver)
    assert res.termination == Termination.INFEASIBLE and res.primal is None


@pytest.mark.parametrize("solver", LP_SOLVERS)
def test_an_unbounded_lp_is_reported_unbounded(solver):
    assert solve(_unbounded(), solver).termination == Termination.UNBOUNDED


@pytest.mark.parametrize("solver", MIP_SOLVERS)
def test_an_infeasible_mip_is_reported_infeasible(solver):
    model = Model("infeasible-mip")
    x = model.add_binaries(3)
    model.add_constraints(np.array([[2.0, 2.0, 2.0]]), x, 3.0, 3.0)  # 2 * integer = 3 has no solution
    res = solve(model, solver)
    assert res.termination == Termination.INFEASIBLE


def _hard_knapsack() -> Model:
    rng = np.random.default_rng(7)
    n = 60
    model = Model("multi-knapsack")
    x = model.add_binaries(n)
    weights = rng.integers(1000, 2000, (5, n)).astype(float)
    model.add_constraints(weights, x, -np.inf, weights.sum(axis=1) / 2)
    model.set_objective(rng.integers(1000, 2000, n).astype(float), sense=Sense.MAXIMIZE)
    return model


@pytest.mark.parametrize("solver", MIP_SOLVERS + ["ortools-cpsat"])
def test_a_time_limit_gives_a_limit_status_with_a_valid_bound(solver):
    if not AVAILABLE[solver]:
        pytest.skip(f"{solver} is not installed")
    model = _hard_knapsack()
    res = solve(model, solver, SolveParameters(time_limit=0.05))
    # a fast machine (CP-SAT's parallel portfolio especially) may still prove optimality within the limit
    assert res.termination in (Termination.FEASIBLE, Termination.TIME_LIMIT, Termination.OPTIMAL), res.message
    if res.termination in (Termination.FEASIBLE, Termination.OPTIMAL):
        assert model.max_violation(res.primal) <= 1e-6
        assert res.dual_bound >= res.objective_value - 1e-6


@pytest.mark.parametrize("solver", ["scip", "ortools-scip", "gurobi"])
def test_a_node_limit_gives_a_limit_status(solver):
    if not AVAILABLE[solver]:
        pytest.skip(f"{solver} is not installed")
    res = solve(_hard_knapsack(), solver, node_limit=2)
    assert res.termination in (Termination.FEASIBLE, Termination.NODE_LIMIT), res.message
    assert res.dual_bound is not None and res.dual_bound >= (res.objective_value or -np.inf) - 1e-6


def _sos2_model(seed: int) -> tuple[Model, float]:
    """max y - t x over the graph of a piecewise-linear function given by SOS2 weights; the true optimum
    is attained at a breakpoint (the concave hull, reachable without SOS2, is larger in general)."""
    rng = np.random.default_rng(seed)
    k = 6
    xs = np.sort(rng.uniform(-2, 2, k))
    ys = rng.uniform(-1, 1, k)
    t = rng.uniform(-1, 1)
    model = Model("sos2")
    w = model.add_variables(k, 0.0, 1.0)
    x = model.add_variable(-10, 10)
    y = model.add_variable(-10, 10)
    model.add_constraints(np.ones((1, k)), w, 1.0, 1.0)
    model.add_constraints(np.concatenate([xs, [-1.0]])[None], np.append(w, x), 0.0, 0.0)
    model.add_constraints(np.concatenate([ys, [-1.0]])[None], np.append(w, y), 0.0, 0.0)
    model.add_sos2(w)
    model.set_objective({y: 1.0, x: -t}, sense=Sense.MAXIMIZE)
    return model, float(np.max(ys - t * xs))


@settings(max_examples=15, deadline=None)
@given(seed=seeds)
def test_scip_solves_sos2_models_exactly(seed):
    model, optimum = _sos2_model(seed)
    res = solve(model, "scip")
    assert res.termination == Termination.OPTIMAL
    assert res.objective_value == pytest.approx(optimum, abs=1e-6)
    assert res.dual_bound >= optimum - 1e-6


@GUROBI_SKIP
@settings(max_examples=15, deadline=None)
@given(seed=seeds)
def test_sos2_models_agree_between_scip_and_gurobi(seed):
    model, optimum = _sos2_model(seed)
    scip, gurobi = solve(model, "scip"), solve(model, "gurobi")
    assert gurobi.termination == Termination.OPTIMAL
    assert gurobi.objective_value == pytest.approx(scip.objective_value, abs=1e-6)
    assert gurobi.objective_value == pytest.approx(optimum, abs=1e-6)
