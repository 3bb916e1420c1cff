"""Quadratic rows and objectives in the solver-neutral model: data, capabilities, refusals, and a closed form.

The closed form: min a.x over {||x - c||_2 <= r} ∩ [lo, hi]. Its KKT point is x(μ) = clip(c - a/μ, lo, hi)
per box face (each coordinate is either on a face or at the ball's stationary value), with μ > 0 the root of
||x(μ) - c|| = r (or the box minimum if that lies inside the ball): a monotone 1-D equation, bisected here.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from polycert.formulations.backends import available_solvers, capabilities, solve
from polycert.formulations.errors import QuadraticNotSupportedError
from polycert.formulations.model import Model, Sense

QUADRATIC_SOLVERS = [s for s in ("scip", "gurobi") if available_solvers().get(s)]
needs_gurobi = pytest.mark.skipif(not available_solvers().get("gurobi"),
                                  reason="gurobi is not installed or its licence cannot run here")


def closed_form_min(a, c, r, lo, hi) -> float:
    """min a.x over the L2 ball (c, r) ∩ box [lo, hi] (c inside the box), by the face-wise KKT point."""
    box_min = np.where(a > 0, lo, hi)
    if np.linalg.norm(box_min - c) <= r:
        return float(a @ box_min)
    point = lambda mu: np.clip(c - a / mu, lo, hi)  # noqa: E731
    small, large = 1e-12, 1.0
    while np.linalg.norm(point(large) - c) > r:
        large *= 2.0
    for _ in range(200):
        mid = 0.5 * (small + large)
        if np.linalg.norm(point(mid) - c) > r:
            small = mid
        else:
            large = mid
    return float(a @ point(large))


def ball_model(a, c, r, lo, hi) -> Model:
    d = len(c)
    m = Model("ball")
    x = m.add_variables(d, lo, hi)
    s = m.add_variables(d, lo - c, hi - c)
    m.add_constraints(sp.hstack([sp.identity(d), -sp.identity(d)]), np.concatenate([x, s]), c, c)
    m.add_sum_of_squares(s, r)
    m.set_objective((x, a))
    return m


def test_capabilities_say_who_states_quadratics():
    assert capabilities("scip").quadratic and capabilities("gurobi").quadratic
    for name in ("highs", "ortools-glop", "ortools-pdlp", "ortools-scip", "ortools-highs", "ortools-cpsat"):
        assert not capabilities(name).quadratic


@pytest.mark.parametrize("solver", [s for s in ("highs", "ortools-glop", "ortools-scip") if available_solvers().get(s)])
def test_lp_only_backends_refuse_quadratic_models(solver):
    m = ball_model(np.array([1.0, -1.0]), np.zeros(2), 0.5, -np.ones(2), np.ones(2))
    with pytest.raises(QuadraticNotSupportedError, match="not linearised"):
        solve(m, solver)
    m2 = Model("quad-objective")
    x = m2.add_variables(2, -1, 1)
    m2.set_objective({}, quadratic=(x, x, [1.0, 1.0]), sense=Sense.MAXIMIZE)
    with pytest.raises(QuadraticNotSupportedError, match="quadratic objective"):
        solve(m2, solver)


def test_quadratic_data_is_evaluated_and_checked():
    m = Model()
    x = m.add_variables(2, -2, 2)
    m.add_sum_of_squares(x, 1.0)
    m.set_objective({int(x[0]): 1.0}, quadratic=([x[0]], [x[1]], [2.0]), constant=0.5)
    assert m.is_quadratic and m.has_quadratic_objective and m.summary()["quadratic"] == 2
    assert m.evaluate(np.array([1.0, 3.0])) == pytest.approx(1.0 + 6.0 + 0.5)
    assert m.max_violation(np.array([0.6, 0.8])) == pytest.approx(0.0, abs=1e-12)
    assert m.max_violation(np.array([1.0, 1.0])) == pytest.approx(1.0)
    m.set_objective({int(x[0]): 1.0})
    assert not m.has_quadratic_objective and m.is_quadratic  # the row stays
    with pytest.raises(Exception):
        m.add_sum_of_squares(np.array([7]), 1.0)  # no such variable


@pytest.mark.parametrize("solver", QUADRATIC_SOLVERS)
@pytest.mark.parametrize("case", range(6))
def test_affine_minimum_over_ball_and_box_matches_closed_form(solver, case):
    rng = np.random.default_rng(case)
    d = 2 + case % 3
    a = rng.normal(size=d)
    c = rng.uniform(0.2, 0.8, size=d)
    r = [0.1, 0.5, 1.5][case % 3]  # inside the box, cut by faces, box inside the ball
    lo, hi = np.zeros(d), np.ones(d)
    exact = closed_form_min(a, c, r, lo, hi)
    res = solve(ball_model(a, c, r, lo, hi), solver)
    assert res.termination.value == "optimal"
    # the proven bound is a lower bound (up to the solver's tolerance) and it meets the closed form
    assert res.dual_bound <= exact + 1e-6
    assert res.dual_bound == pytest.approx(exact, abs=1e-5)
    if r < 0.2:  # the ball inside the box: the textbook a.c - r ||a||
        assert exact == pytest.approx(a @ c - r * np.linalg.norm(a), abs=1e-9)


@pytest.mark.parametrize("solver", QUADRATIC_SOLVERS)
def test_nonconvex_maximisation_of_a_distance(solver):
    # max ||x||^2 over the ball (c, 0.5): (||c|| + 0.5)^2, a non-convex problem solved globally
    c = np.array([0.1, 0.2])
    m = ball_model(np.zeros(2), c, 0.5, -np.ones(2), np.ones(2))
    x = np.arange(2)
    m.set_objective({}, quadratic=(x, x, [1.0, 1.0]), sense=Sense.MAXIMIZE)
    res = solve(m, solver)
    exact = (np.linalg.norm(c) + 0.5) ** 2
    assert res.dual_bound >= exact - 1e-6  # an upper bound of a maximisation
    assert res.dual_bound == pytest.approx(exact, abs=1e-5)
    assert res.objective_value == pytest.approx(exact, abs=1e-4)


@needs_gurobi
def test_scip_and_gurobi_agree_on_a_ball_minimum():
    a, c = np.array([0.3, -1.2, 0.7]), np.array([0.5, 0.5, 0.5])
    lo, hi = np.zeros(3), np.ones(3)
    bounds = [solve(ball_model(a, c, 0.45, lo, hi), s).dual_bound for s in ("scip", "gurobi")]
    assert bounds[0] == pytest.approx(bounds[1], abs=1e-5)
