"""Build and solve times of the solver back-ends on a random LP (default 1e5 non-zeros).

    .venv/bin/python bench/backends_build.py [--nnz 100000] [--rows 5000] [--time-limit 30]

Prints one line per back-end: translation time (Model -> solver model), and the full solve()
with a time limit. Gurobi is skipped when its size-limited licence refuses the model.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse as sp

from polycert.formulations.backends import SolveParameters, available_solvers, solve
from polycert.formulations.backends.registry import backend
from polycert.formulations.errors import SolverNotAvailableError
from polycert.formulations.model import Model, Sense


def random_lp(rows: int, cols: int, nnz: int, seed: int = 0) -> Model:
    rng = np.random.default_rng(seed)
    A = sp.random(rows, cols, density=nnz / (rows * cols), format="csr", random_state=seed)
    A.data = rng.standard_normal(A.data.size)
    model = Model("random-lp")
    x = model.add_variables(cols, -1.0, 1.0)
    model.add_constraints(A, x, -1.0, 1.0)
    model.set_objective(rng.standard_normal(cols), sense=Sense.MAXIMIZE)
    return model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nnz", type=int, default=100_000)
    ap.add_argument("--rows", type=int, default=5_000)
    ap.add_argument("--cols", type=int, default=5_000)
    ap.add_argument("--time-limit", type=float, default=30.0)
    ap.add_argument("--solvers", default="scip,ortools-glop,ortools-pdlp,highs,gurobi")
    args = ap.parse_args()
    model = random_lp(args.rows, args.cols, args.nnz)
    model.matrix()  # freeze the CSR once, as the encoders do
    print(f"model: {model.summary()}")
    print(f"{'solver':<14} {'build_s':>8} {'solve_s':>8} {'termination':<12} {'objective':>14} {'dual_bound':>14} {'safe_bound':>14}")
    avail = available_solvers()
    for name in args.solvers.split(","):
        if not avail[name]:
            print(f"{name:<14} not installed")
            continue
        params = SolveParameters(time_limit=args.time_limit)
        t0 = time.perf_counter()
        try:
            backend(name)._build(model, params)
        except SolverNotAvailableError as exc:
            print(f"{name:<14} skipped: {str(exc)[:80]}")
            continue
        build = time.perf_counter() - t0
        try:
            res = solve(model, name, params)
        except SolverNotAvailableError as exc:
            print(f"{name:<14} {build:8.3f} skipped at solve: {str(exc)[:70]}")
            continue
        fmt = lambda v: f"{v:14.6f}" if v is not None else f"{'-':>14}"  # noqa: E731
        print(f"{name:<14} {build:8.3f} {res.solve_time:8.3f} {res.termination.value:<12} "
              f"{fmt(res.objective_value)} {fmt(res.dual_bound)} {fmt(res.safe_dual_bound)}")


if __name__ == "__main__":
    main()
