"""Batched cascade (issue 7): exact verdicts for MNIST test images, per stage counts and wall times.

    .venv/bin/python bench/cascade.py            # both shipped networks, first 600 test images, eps 0.01 / 0.02
    .venv/bin/python bench/cascade.py --all      # the full 10,000 test images at eps 0.005 .. 0.1

Prints, asserts nothing. The reference figures are the issue's auto_LiRPA measurements on the study's
network (verianet, bilinear 7x7, first 600 images): CROWN 195 / 56 certified, alpha-CROWN 200 / 59 in
1.6-2.2 s, at eps 0.01 / 0.02 (incomplete: 10 and 13 left undecided).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from polycert.formulations.cascade import STAGES, CascadeSettings, run_cascade  # noqa: E402
from polycert.formulations.certificate import Verdict  # noqa: E402
from polycert.datasets import load_mnist7  # noqa: E402
from polycert.zoo import load_builtin  # noqa: E402

NETWORKS = (("verianet", "bilinear"), ("polycert-tiny", "area"))
ALPHA_CROWN = {0.01: (200, "1.7-2.2 s"), 0.02: (59, "1.6-1.9 s")}
CROWN = {0.01: 195, 0.02: 56}


def run(name: str, resize: str, count: int | None, radii: list[float], chunk: int, settings: CascadeSettings) -> float:
    network = load_builtin(name)
    xs, ys = load_mnist7(split="test", resize=resize)
    xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys)
    if count is not None:
        xs, ys = xs[:count], ys[:count]
    correct = int((network.predict(xs) == ys).sum())
    print(f"\n== {name} ({network.architecture}, {resize} 7x7), {len(xs)} test images, {correct} classified correctly")
    grand = 0.0
    for eps in radii:
        times = dict.fromkeys(STAGES, 0.0)
        decided = dict.fromkeys(STAGES, 0)
        verdicts = {v: 0 for v in Verdict}
        t0 = time.perf_counter()
        for start in range(0, len(xs), chunk):  # as the service does: one call per chunk
            result = run_cascade(network, xs[start:start + chunk], ys[start:start + chunk], eps, settings=settings)
            for s in STAGES:
                times[s] += result.stage_times[s]
            for s, n in result.decided_by().items():
                decided[s] += n
            for c in result.certificates:
                verdicts[c.verdict] += 1
        wall = time.perf_counter() - t0
        grand += wall
        print(f"eps {eps:<6} total {wall:7.2f} s   verified {verdicts[Verdict.VERIFIED]:5d}   "
              f"falsified {verdicts[Verdict.FALSIFIED]:5d}   unknown {verdicts[Verdict.UNKNOWN]}")
        for s in STAGES:
            print(f"    {s:<9} decided {decided[s]:5d}   {times[s]:7.3f} s")
        if name == "verianet" and count == 600 and eps in ALPHA_CROWN:
            print(f"    reference (auto_LiRPA): CROWN {CROWN[eps]} certified, alpha-CROWN {ALPHA_CROWN[eps][0]} in "
                  f"{ALPHA_CROWN[eps][1]}; stage 1 alone here: {decided['symbolic']}")
    return grand


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="full 10,000-image test set at eps 0.005 .. 0.1")
    parser.add_argument("--chunk", type=int, default=1000, help="inputs per certify_batch call")
    args = parser.parse_args()

    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}, "
          f"{__import__('os').cpu_count()} cores")
    settings = CascadeSettings()
    print(f"settings: {settings}")
    if args.all:
        radii, count = [0.005, 0.01, 0.02, 0.05, 0.1], None
    else:
        radii, count = [0.01, 0.02], 600
    total = sum(run(name, resize, count, radii, args.chunk, settings) for name, resize in NETWORKS)
    print(f"\ntotal wall time for exact verdicts: {total:.1f} s")


if __name__ == "__main__":
    main()
