"""Small random models with a known feasible point, for the back-end tests."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import strategies as st

from polycert.formulations.backends import available_solvers
from polycert.formulations.model import Model, Sense

AVAILABLE = available_solvers()
LP_SOLVERS = [s for s in ("scip", "ortools-glop", "ortools-pdlp", "ortools-scip", "ortools-highs", "highs", "gurobi")
              if AVAILABLE[s]]
MIP_SOLVERS = [s for s in ("scip", "ortools-scip", "ortools-highs", "highs", "gurobi") if AVAILABLE[s]]
GUROBI_SKIP = pytest.mark.skipif(not AVAILABLE["gurobi"],
                                 reason="gurobi is not usable here (gurobipy missing or its licence cannot solve a tiny model)")


def random_model(seed: int, n: int, m: int, *, integer: bool | np.ndarray = False, box: int = 3,
                 sense: Sense = Sense.MAXIMIZE) -> tuple[Model, np.ndarray]:
    """A bounded model with integer data whose rows hold at an integer point ``x0`` (so it is feasible)."""
    rng = np.random.default_rng(seed)
    lb = rng.integers(-box, 1, n).astype(float)
    ub = lb + rng.integers(1, box + 1, n)
    x0 = rng.integers(lb, ub + 1).astype(float)
    A = rng.integers(-4, 5, (m, n)).astype(float)
    ax0 = A @ x0
    lo = np.where(rng.random(m) < 0.3, -np.inf, ax0 - rng.integers(0, 4, m))
    hi = np.where(rng.random(m) < 0.3, np.inf, ax0 + rng.integers(0, 4, m))
    model = Model(f"random-{seed}")
    integrality = np.broadcast_to(np.asarray(integer), (n,))
    x = np.array([model.add_variable(lb[j], ub[j], integer=bool(integrality[j])) for j in range(n)])
    model.add_constraints(A, x, lo, hi)
    model.set_objective(rng.integers(-5, 6, n).astype(float), constant=float(rng.integers(-3, 4)), sense=sense)
    return model, x0


seeds = st.integers(0, 2**31 - 1)
senses = st.sampled_from([Sense.MAXIMIZE, Sense.MINIMIZE])


def brute_force_optimum(model: Model) -> float:
    """Optimum of a small pure-integer model by enumerating every integer point of its box."""
    grids = np.meshgrid(*[np.arange(lo, hi + 1) for lo, hi in zip(model.lb, model.ub)], indexing="ij")
    points = np.stack([g.ravel() for g in grids], axis=1)
    ax = points @ model.matrix().T.toarray()
    feasible = ((ax >= model.row_lower - 1e-9) & (ax <= model.row_upper + 1e-9)).all(axis=1)
    values = points[feasible] @ model.objective_vector() + model.objective_constant
    return float(values.max() if model.sense == Sense.MAXIMIZE else values.min())
