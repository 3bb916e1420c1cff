"""The registry: names, capabilities, defaults, and clear errors for what cannot be solved."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from polycert.formulations.backends import (
    SOLVERS, SolveParameters, Termination, available_solvers, capabilities, default_lp_solver,
    default_mip_solver, solve,
)
from polycert.formulations.errors import InvalidInputError, SolverError, SolverNotAvailableError
from polycert.formulations.model import Model, Sense

from .conftest import AVAILABLE, GUROBI_SKIP


def _tiny_mip() -> Model:
    model = Model("tiny")
    x = model.add_binaries(2)
    model.add_constraints(np.ones((1, 2)), x, -np.inf, 1.0)
    model.set_objective(np.array([1.0, 2.0]), sense=Sense.MAXIMIZE)
    return model


def test_every_solver_name_has_capabilities_and_an_availability():
    assert set(available_solvers()) == set(SOLVERS)
    for name in SOLVERS:
        caps = capabilities(name)
        assert caps.lp or caps.mip


def test_an_unknown_solver_name_is_a_solver_not_available_error_naming_it():
    with pytest.raises(SolverNotAvailableError, match="cplex"):
        solve(_tiny_mip(), "cplex")
    with pytest.raises(SolverNotAvailableError, match="cplex"):
        capabilities("cplex")


def test_the_default_mip_solver_is_scip_and_the_default_lp_solver_is_usable():
    assert default_mip_solver() == "scip"
    assert AVAILABLE[default_lp_solver()]


def test_an_unknown_parameter_override_is_an_invalid_input_error():
    with pytest.raises(InvalidInputError, match="time_limt"):
        solve(_tiny_mip(), "scip", time_limt=3)


def test_overrides_take_precedence_over_params():
    res = solve(_tiny_mip(), "scip", SolveParameters(node_limit=0), node_limit=None)
    assert res.termination == Termination.OPTIMAL and res.objective_value == 2.0


@pytest.mark.parametrize("solver", ["ortools-glop", "ortools-pdlp"])
def test_lp_only_solvers_reject_integer_variables(solver):
    with pytest.raises(SolverError, match="LPs only"):
        solve(_tiny_mip(), solver)


def test_cpsat_rejects_continuous_variables_with_a_clear_error():
    model = Model("lp")
    x = model.add_variables(2, 0.0, 1.0)
    model.set_objective({int(x[0]): 1.0})
    with pytest.raises(SolverError, match="continuous"):
        solve(model, "ortools-cpsat")


@pytest.mark.parametrize("solver", ["highs", "ortools-glop", "ortools-scip", "ortools-highs", "ortools-cpsat"])
def test_solvers_without_sos2_reject_sos2_models(solver):
    model = _tiny_mip()
    model.add_sos2(np.arange(2))
    assert not capabilities(solver).sos2
    with pytest.raises(SolverError, match="SOS2"):
        solve(model, solver)


def test_highs_mip_answers_are_flagged_for_a_second_opinion():
    assert capabilities("highs").needs_second_opinion
    res = solve(_tiny_mip(), "highs")
    assert res.termination == Termination.OPTIMAL and "second opinion" in res.message


def test_results_carry_objective_value_at_the_primal_and_the_tight_rows():
    model = _tiny_mip()
    model.set_objective(np.array([1.0, 2.0]), constant=0.5, sense=Sense.MAXIMIZE)
    res = solve(model, "scip")
    np.testing.assert_allclose(res.primal, [0.0, 1.0])
    assert res.objective_value == 2.5 and res.dual_bound == pytest.approx(2.5)
    np.testing.assert_array_equal(res.tight_rows, [0])
    assert res.build_time > 0 and res.solve_time > 0


CUTOFF_SOLVERS = [s for s in ("scip", "ortools-scip", "gurobi") if AVAILABLE[s]]


@pytest.mark.parametrize("solver", CUTOFF_SOLVERS)
def test_a_cutoff_the_optimum_cannot_reach_proves_a_bound(solver):
    res = solve(_tiny_mip(), solver, cutoff=5.0)  # max is 2: nothing reaches 5
    assert res.termination == Termination.CUTOFF and res.dual_bound == 5.0


@pytest.mark.parametrize("solver", CUTOFF_SOLVERS)
def test_a_cutoff_at_a_known_point_keeps_that_point(solver):
    res = solve(_tiny_mip(), solver, cutoff=2.0)  # a known point attains 2 exactly
    assert res.termination == Termination.OPTIMAL and res.objective_value == 2.0


@GUROBI_SKIP
def test_gurobi_over_its_licence_size_is_a_clear_error_or_a_solution():
    model = Model("large")
    x = model.add_variables(3000, 0.0, 1.0)
    model.add_constraints(sp.random(5, 3000, density=0.2, random_state=1), x, -np.inf, 1.0)
    model.set_objective(np.ones(3000), sense=Sense.MAXIMIZE)
    try:
        res = solve(model, "gurobi")
    except SolverNotAvailableError as exc:
        assert "size-limited" in str(exc) and "large" in str(exc)
    else:  # a full licence
        assert res.termination == Termination.OPTIMAL
