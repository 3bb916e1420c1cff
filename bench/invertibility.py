"""Certified invertibility, the experiment of Cui et al. (L4DC 2023, §5) in kind: a 2-32-32-2 ReLU network A
learns one RK4 step of the Van der Pol oscillator; B is A with 50 % of its weights pruned (magnitude, per
layer). For a few centres and the paper's three norms (L-inf, L1, and L2: a quadratic ball and the non-convex
objective s^2 <= ||t||_2^2, solved globally by SCIP or Gurobi) the table gives the certified radii

* ``r_AB``: the largest ball on which B is a function of A (Problem 3, p_AB <= tol), and
* ``r_BA``: the same with the roles swapped,

each with the radius just above it (refuted by a witness pair, or only not certified), the number of MILPs
and the wall time; then the certified injectivity radius of A alone (Problem 1). Optionally (``--mnist``) the
decision invariance of the shipped 49-3-3-10 GELU network (its 49 -> 3 first layer has a 46-dimensional null
space): how far an input can move in L-inf / L1 within [0, 1]^49 while its class stays, with the farthest
input printed as a 7x7 image.

Usage::

    .venv/bin/python bench/invertibility.py [--centers "0.5,0.5;-1,1"] [--norms linf,l1,l2] [--mnist]

| argument | default | meaning |
|---|---|---|
| ``--centers`` | ``0.5,0.5;-1,1;1.5,0`` | ball centres, ``x,y`` separated by ``;`` |
| ``--norms`` | ``linf,l1,l2`` | norms of ball and objective (l2 needs ``--solver`` scip or gurobi) |
| ``--prune`` | 0.5 | fraction of weights pruned (per layer) |
| ``--dt`` | 0.1 | RK4 step of the Van der Pol map (mu = 1) |
| ``--epochs`` | 3000 | full-batch Adam steps (deterministic, seed ``--seed``) |
| ``--tolerance`` | 1e-4 | p <= tolerance counts as certified |
| ``--gap`` | 1e-3 | bisection stops at this radius gap (the paper's) |
| ``--max-radius`` | 4.0 | growth stops here |
| ``--query-time-limit`` | 60 | seconds per MILP (a timeout counts as not certified) |
| ``--solver`` | scip | MIP back-end |
| ``--mnist`` | off | also run the decision-invariance demonstration on ``polycert-tiny`` |

Timings are wall-clock on the machine that runs it (single thread).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# bench/ itself must not be on the path: a bench script named like a standard module (queue.py) would shadow it
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

from polycert.formulations.invertibility import (  # noqa: E402
    as_image,
    decision_invariance,
    dependence_radius,
    injectivity_radius,
)
from polycert.formulations.network import Network  # noqa: E402
from polycert.formulations.transforms import prune  # noqa: E402


# -- the dynamical system ---------------------------------------------------------------------------------


def van_der_pol(state: np.ndarray, mu: float = 1.0) -> np.ndarray:
    x, y = state[..., 0], state[..., 1]
    return np.stack([y, mu * (1.0 - x**2) * y - x], axis=-1)


def rk4_step(state: np.ndarray, dt: float) -> np.ndarray:
    """One classical Runge-Kutta step of the Van der Pol vector field."""
    k1 = van_der_pol(state)
    k2 = van_der_pol(state + 0.5 * dt * k1)
    k3 = van_der_pol(state + 0.5 * dt * k2)
    k4 = van_der_pol(state + dt * k3)
    return state + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)


def train_map(dt: float, epochs: int, seed: int, n: int = 2000) -> tuple[Network, float]:
    """A 2-32-32-2 ReLU network fitted to the RK4 map on [-3, 3]^2 (full-batch Adam in float32; the network is then float64)."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3.0, 3.0, (n, 2))
    y = rk4_step(x, dt)
    torch.set_num_threads(1)
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    model = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 2))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    for _ in range(epochs):
        opt.zero_grad()
        loss = torch.mean((model(xt) - yt) ** 2)
        loss.backward()
        opt.step()
        sched.step()
    layers = [m for m in model if isinstance(m, torch.nn.Linear)]
    net = Network.from_arrays([m.weight.detach().double().numpy() for m in layers], [m.bias.detach().double().numpy() for m in layers],
                              "relu", name="vdp-rk4")
    test = rng.uniform(-3.0, 3.0, (2000, 2))
    rmse = float(np.sqrt(np.mean((net.forward(test) - rk4_step(test, dt)) ** 2)))
    return net, rmse


# -- the table --------------------------------------------------------------------------------------------


def fmt_radius(cert) -> str:
    up = cert.upper
    above = "inf" if not np.isfinite(up) else f"{up:.4f}{'' if cert.extra['upper_falsified'] else '?'}"
    return f"{cert.lower:.4f} ({above})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--centers", default="0.5,0.5;-1,1;1.5,0")
    ap.add_argument("--norms", default="linf,l1,l2")
    ap.add_argument("--prune", type=float, default=0.5)
    ap.add_argument("--dt", type=float, default=0.1)
    ap.add_argument("--epochs", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tolerance", type=float, default=1e-4)
    ap.add_argument("--gap", type=float, default=1e-3)
    ap.add_argument("--max-radius", type=float, default=4.0)
    ap.add_argument("--query-time-limit", type=float, default=60.0)
    ap.add_argument("--solver", default="scip")
    ap.add_argument("--mnist", action="store_true")
    args = ap.parse_args(argv)

    centers = [np.array([float(v) for v in c.split(",")]) for c in args.centers.split(";")]
    norms = args.norms.split(",")
    t0 = time.monotonic()
    a, rmse = train_map(args.dt, args.epochs, args.seed)
    b = prune(a, args.prune, name="vdp-rk4-pruned")
    test = np.random.default_rng(1).uniform(-3, 3, (2000, 2))
    rmse_b = float(np.sqrt(np.mean((b.forward(test) - rk4_step(test, args.dt)) ** 2)))
    print(f"A = {a.architecture}, RK4 dt={args.dt}, test RMSE {rmse:.2e}; B = A pruned {100 * args.prune:.0f}% "
          f"per layer ({b.metadata['transform']['removed']} weights), RMSE {rmse_b:.2e}; trained in {time.monotonic() - t0:.1f} s")
    print(f"tolerance {args.tolerance}, bisection gap {args.gap}, growth x5 from 0.1 up to {args.max_radius}, "
          f"{args.query_time_limit:.0f} s per MILP, solver {args.solver}")
    print("radius (next radius tried: refuted by a witness pair, or '?' = only not certified)\n")
    header = f"{'centre':>12} {'norm':>5} | {'r_AB (above)':>22} {'MILPs':>5} {'time s':>7} | {'r_BA (above)':>22} {'MILPs':>5} {'time s':>7} | {'r_inj(A) (above)':>22} {'time s':>7}"
    print(header)
    print("-" * len(header))
    common = dict(tolerance=args.tolerance, gap=args.gap, max_radius=args.max_radius, solver=args.solver,
                  query_time_limit=args.query_time_limit)
    for c in centers:
        for norm in norms:
            ab = dependence_radius(a, b, c, norm=norm, **common)
            ba = dependence_radius(b, a, c, norm=norm, **common)
            inj = injectivity_radius(a, c, norm=norm, **common)
            print(f"{np.array2string(c, precision=2, separator=','):>12} {norm:>5} | "
                  f"{fmt_radius(ab):>22} {len(ab.extra['evaluations']):>5} {ab.times['total']:>7.1f} | "
                  f"{fmt_radius(ba):>22} {len(ba.extra['evaluations']):>5} {ba.times['total']:>7.1f} | "
                  f"{fmt_radius(inj):>22} {inj.times['total']:>7.1f}", flush=True)
    if args.mnist:
        mnist_invariance(args)
    return 0


def mnist_invariance(args) -> None:
    """Decision invariance of the shipped 49-3-3-10 GELU network on the first test image of each of 3 digits."""
    from polycert.datasets import load_preprocessed
    from polycert.zoo import load_builtin

    net = load_builtin("polycert-tiny")
    x, y = load_preprocessed(net.metadata["preprocessing"], split="test")
    w1 = net.layers[0].weight
    print(f"\ndecision invariance of {net.name} ({net.architecture}); first layer rank {np.linalg.matrix_rank(w1)}, "
          f"null space of dimension {w1.shape[1] - np.linalg.matrix_rank(w1)}")
    shades = " .:-=+*#%@"
    for i in range(3):
        c = x[i]
        for norm in ("linf", "l1"):
            t0 = time.monotonic()
            cert = decision_invariance(net, c, norm=norm, solver=args.solver, time_limit=args.query_time_limit,
                                       gap=1e-2)
            w = cert.extra["witness"]
            print(f"image {i} (digit {y[i]}, class {cert.label}) {norm}: farthest input with the same class at "
                  f"distance [{cert.lower:.4f}, {cert.upper:.4f}] ({cert.reason.value if cert.reason else 'closed'}), "
                  f"margin {w['margin']:.3g}, {cert.extra['refinement_rounds']} rounds, {time.monotonic() - t0:.1f} s")
        rows_c = as_image(c)
        rows_w = as_image(w["x"])
        for rc, rw in zip(rows_c, rows_w):
            print("   " + "".join(shades[min(int(v * 10), 9)] * 2 for v in rc) + "   ->   "
                  + "".join(shades[min(int(v * 10), 9)] * 2 for v in rw))


if __name__ == "__main__":
    raise SystemExit(main())
