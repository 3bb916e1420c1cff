"""Relaxations side by side (issue 20): verified counts and time per image for IBP, symbolic bounds, the
single-neuron LP, the k-neuron LP (k = 2, 3), input branch and bound with k-LP nodes, and the exact MIP.
Prints a table; asserts nothing.

    nice .venv/bin/python bench/relaxations.py [--networks polycert-tiny verianet mnist-net_256x2]
                                               [--images 600] [--eps 0.01 0.02] [--methods ...]
                                               [--mnist-images 100] [--mnist-eps 0.02] [--bab-nodes 30]

Each method runs the engine's one path (``certify_batch``, verdict mode, chunks of 150, ``--time-limit``
seconds per query): ``lp`` = method "lp"; ``klp2``/``klp3`` = method "klp" with ``klp_k`` 2/3; ``input-bab`` =
method "klp" (k = 2) with ``input_bab_nodes = --bab-nodes``; ``mip`` = method "mip" (no klp stage). IBP and
symbolic are the bounds alone (``interval_bounds_batch`` / ``margin_bounds_batch``), with no attack, so their
counts are proofs only. ``mnist-net_256x2`` is the VNN-COMP 2022 mnist_fc ONNX network on the first
``--mnist-images`` MNIST test images (``polycert.datasets.load_mnist28_test``); a method whose time per image
on a probe of 3 images exceeds ``--mnist-budget`` seconds is skipped with a message. "% of MIP" is verified /
verified by the exact MIP; "x LP time" the time per image over the single-neuron LP's.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MNIST_FC = Path("/work/shared/benchmarks/vnncomp2022_mnist_fc")
ALL = ("ibp", "symbolic", "lp", "klp2", "klp3", "input-bab", "mip")


def tiny_images(name: str):
    from polycert.datasets import load_preprocessed
    from polycert.zoo import load_builtin

    network = load_builtin(name)
    x, y = load_preprocessed(network.metadata.get("preprocessing", "mnist7-area"), "test")
    return network, np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.int64)


def mnist_images(name: str):
    from polycert.datasets import load_mnist28_test
    from polycert.formulations.loaders import load_onnx

    network = load_onnx(str(MNIST_FC / "onnx" / f"{name}.onnx"))
    x, y = load_mnist28_test()
    return network, np.asarray(x, dtype=np.float64).reshape(len(x), -1), np.asarray(y, dtype=np.int64)


def bound_only(method: str, network, x, y, eps) -> list[bool]:
    from polycert.formulations.bounds import interval_bounds_batch, margin_bounds_batch

    lo, hi = np.clip(x - eps, 0.0, 1.0), np.clip(x + eps, 0.0, 1.0)
    if method == "symbolic":
        m_lo, _ = margin_bounds_batch(network, lo, hi, y)
    else:
        last = interval_bounds_batch(network, lo, hi)[-1]
        m_lo = last.lower[np.arange(len(y)), y][:, None] - last.upper
    m_lo[np.arange(len(y)), y] = np.inf
    return list(m_lo.min(axis=1) > 0)


def cascade(method: str, network, x, y, eps, bab_nodes: int, limit: float) -> list[bool]:
    from polycert.formulations.cascade import CascadeSettings, certify_batch

    extra = {"lp": dict(method="lp", klp=False), "klp2": dict(method="klp", klp_k=2),
             "klp3": dict(method="klp", klp_k=3), "input-bab": dict(method="klp", klp_k=2, input_bab_nodes=bab_nodes),
             "mip": dict(method="mip", klp=False)}[method]
    m = extra.pop("method")
    settings = CascadeSettings(answer="verdict", query_time_limit=limit, **extra)
    out = []
    for c0 in range(0, len(x), 150):
        certs = certify_batch(network, x[c0:c0 + 150], y[c0:c0 + 150], eps, method=m, settings=settings)
        out += [c.verdict.value == "verified" for c in certs]
    return out


def run(method, network, x, y, eps, args, limit):
    start = time.perf_counter()
    ok = bound_only(method, network, x, y, eps) if method in ("ibp", "symbolic") else \
        cascade(method, network, x, y, eps, args.bab_nodes, limit)
    return int(np.sum(ok)), (time.perf_counter() - start) / len(x)


def table(name, network, x, y, eps_list, methods, args, limit, budget=None):
    for eps in eps_list:
        rows = {}
        for method in methods:
            if budget is not None:  # a probe on 3 images first: skip what would take too long
                _, per = run(method, network, x[:3], y[:3], eps, args, limit)
                if per > budget:
                    print(f"{name:<16} eps {eps:<5} {method:<10} skipped: {per:.1f} s per image on a probe of 3 "
                          f"(> --mnist-budget {budget})", flush=True)
                    continue
            rows[method] = run(method, network, x, y, eps, args, limit)
            n_ok, per = rows[method]
            print(f"{name:<16} eps {eps:<5} {method:<10} verified {n_ok:>4}/{len(x):<4} {per * 1e3:9.1f} ms/image",
                  flush=True)
        exact = rows.get("mip", (None,))[0]
        lp_time = rows.get("lp", (None, None))[1]
        print(f"\n{name} eps {eps}: {len(x)} images")
        print(f"{'method':<10} {'verified':>8} {'% of MIP':>9} {'ms/image':>9} {'x LP time':>10}")
        for method, (n_ok, per) in rows.items():
            share = f"{100.0 * n_ok / exact:8.1f}%" if exact else "      n/a"
            ratio = f"{per / lp_time:9.2f}x" if lp_time else "       n/a"
            print(f"{method:<10} {n_ok:>8} {share:>9} {per * 1e3:9.1f} {ratio:>10}")
        print(flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--networks", nargs="+", default=["polycert-tiny", "verianet", "mnist-net_256x2"])
    p.add_argument("--images", type=int, default=600)
    p.add_argument("--eps", type=float, nargs="+", default=[0.01, 0.02])
    p.add_argument("--methods", nargs="+", default=list(ALL), choices=ALL)
    p.add_argument("--mnist-images", type=int, default=100)
    p.add_argument("--mnist-eps", type=float, nargs="+", default=[0.02])
    p.add_argument("--mnist-budget", type=float, default=10.0, help="seconds per image above which a method is skipped")
    p.add_argument("--bab-nodes", type=int, default=30, help="input branch and bound nodes per target")
    p.add_argument("--time-limit", type=float, default=60.0, help="seconds per query (LP and MIP work)")
    args = p.parse_args()
    print(f"# bench/relaxations.py  pid {os.getpid()}  {time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)
    for name in args.networks:
        if name.startswith("mnist-net"):
            if not (MNIST_FC / "onnx" / f"{name}.onnx").exists():
                print(f"{name}: skipped, {MNIST_FC / 'onnx' / (name + '.onnx')} not found")
                continue
            network, x, y = mnist_images(name)
            n = args.mnist_images
            table(name, network, x[:n], y[:n], args.mnist_eps, args.methods, args, args.time_limit,
                  budget=args.mnist_budget)
        else:
            network, x, y = tiny_images(name)
            table(name, network, x[:args.images], y[:args.images], args.eps, args.methods, args, args.time_limit)


if __name__ == "__main__":
    main()
