"""VNN-COMP 2022 ``mnist_fc``: list the instances, read every network and property, print a table.

Skeleton of the benchmark driver (issue 6). It does not decide anything yet: the engine's answer
(``formulations/vnncomp.py``, built on ``formulations.bounds.margin_bounds`` and
``formulations.attack``) comes once those modules exist. What it checks now, per instance:

- the property reads (parse time), has the robustness form, and its label is the header comment's;
- the ONNX network loads and its prediction at the box centre; ``centre_cex`` says whether the centre
  itself is a counterexample re-checked in float64 (a falsification needing no search);
- the known answer from ``answers.csv`` (holds / violated / unknown).

Usage::

    .venv/bin/python bench/vnncomp.py [--benchmark DIR] [--limit N] [--csv OUT]

| argument | default | meaning |
|---|---|---|
| ``--benchmark`` | ``../shared/benchmarks/vnncomp2022_mnist_fc`` | folder with instances.csv, answers.csv, onnx/, vnnlib/ |
| ``--limit`` | all | only the first N instances |
| ``--csv`` | none | also write the table as CSV |

Reads ../shared (a script may; tests never do).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from formulations.loaders import load_onnx  # noqa: E402
from formulations.vnnlib import check_counterexample, read_vnnlib, robustness_view  # noqa: E402

DEFAULT_BENCHMARK = ROOT.parent / "shared" / "benchmarks" / "vnncomp2022_mnist_fc"
COLUMNS = ("network", "property", "timeout_s", "expected", "parse_ms", "label", "header_label", "centre_pred", "centre_cex")


@dataclass(frozen=True)
class Instance:
    onnx: Path
    vnnlib: Path
    timeout_s: float


def list_instances(benchmark: Path) -> list[Instance]:
    """Rows of instances.csv (``onnx,vnnlib,timeout``); a property stored gzipped is found as ``.gz``."""
    out = []
    with open(benchmark / "instances.csv", newline="") as f:
        for onnx, vnnlib, timeout in csv.reader(f):
            prop = benchmark / vnnlib
            if not prop.exists() and prop.with_name(prop.name + ".gz").exists():
                prop = prop.with_name(prop.name + ".gz")
            out.append(Instance(benchmark / onnx, prop, float(timeout)))
    return out


def read_answers(benchmark: Path) -> dict[tuple[str, str], str]:
    """``{(onnx file name, vnnlib file name): expected}`` from answers.csv (holds / violated / unknown)."""
    with open(benchmark / "answers.csv", newline="") as f:
        return {(row["onnx"], row["vnnlib"]): row["expected"] for row in csv.DictReader(f)}


def header_label(path: Path) -> int | None:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        match = re.search(r"label: (\d+)", f.readline())
    return int(match.group(1)) if match else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", type=Path, default=DEFAULT_BENCHMARK)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--csv", type=Path, default=None)
    args = parser.parse_args(argv)

    instances = list_instances(args.benchmark)[: args.limit]
    answers = read_answers(args.benchmark)
    networks = {}
    rows = []
    for inst in instances:
        if inst.onnx not in networks:
            networks[inst.onnx] = load_onnx(inst.onnx)
        net = networks[inst.onnx]
        start = time.perf_counter()
        prop = read_vnnlib(inst.vnnlib, n_inputs=net.input_size, n_outputs=net.output_size)
        parse_ms = 1000 * (time.perf_counter() - start)
        view = robustness_view(prop)
        vnnlib_name = inst.vnnlib.name.removesuffix(".gz")
        rows.append({
            "network": inst.onnx.name,
            "property": vnnlib_name,
            "timeout_s": inst.timeout_s,
            "expected": answers.get((inst.onnx.name, vnnlib_name), "?"),
            "parse_ms": round(parse_ms, 1),
            "label": view[0] if view else None,
            "header_label": header_label(inst.vnnlib),
            "centre_pred": int(net.predict(prop.center)),
            "centre_cex": check_counterexample(prop, net.forward, prop.center),
        })
        print(",".join(str(rows[-1][c]) for c in COLUMNS), flush=True)

    mismatched = [r for r in rows if r["label"] != r["header_label"]]
    wrong = [r for r in rows if r["centre_cex"] and r["expected"] == "holds"]
    print(f"# {len(rows)} instances; label != header: {len(mismatched)}; "
          f"centre counterexamples: {sum(r['centre_cex'] for r in rows)} "
          f"(on instances known to hold: {len(wrong)}, must be 0)")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    return 1 if mismatched or wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
