"""VNN-COMP 2022 ``mnist_fc``: decide every instance with ``formulations.vnncomp`` and print a table.

Each instance runs in its own process (``--one``) with the competition's time limit (times
``--timeout-scale``); the engine gets the limit minus the start-up it has already spent, and a process that
overruns by more than ``GRACE_S`` is killed and counted unknown; an answer after the limit counts unknown too
(stage ``late: ...``), as in the competition. The table compares each answer with
``answers.csv`` and the 2022 winner's column (alpha-beta-CROWN, GPU).

Usage::

    .venv/bin/python bench/vnncomp.py [--networks 256x2,256x4] [--limit N] [--timeout-scale 0.25] [--csv OUT]

| argument | default | meaning |
|---|---|---|
| ``--benchmark`` | ``../shared/benchmarks/vnncomp2022_mnist_fc`` | folder with instances.csv, answers.csv, onnx/, vnnlib/ |
| ``--networks`` | all | comma-separated network tags (``256x2``) to run |
| ``--properties`` | all | comma-separated property names (``prop_3_0.05``) to run |
| ``--limit`` | all | only the first N selected instances |
| ``--timeout-scale`` | 1.0 | multiply every competition time limit |
| ``--csv`` | none | also write the per-instance rows as CSV |
| ``--jobs`` | 1 | instance processes at once; each gets ``cores // jobs`` BLAS threads (the solvers use one) |
| ``--check-only`` | off | the old skeleton's checks: parse, labels, centre (no verifier) |

Reads ../shared (a script may; tests never do). Wrong answers must be 0: the exit status is 1 otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py would shadow the standard `queue` (which concurrent.futures imports): keep bench/ off the path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import csv
import gzip
import json
import os
import re
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from polycert.formulations.loaders import load_onnx  # noqa: E402
from polycert.formulations.vnnlib import check_counterexample, read_vnnlib, robustness_view  # noqa: E402

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


def check_main(args) -> int:
    """The skeleton's checks (``--check-only``): every property reads, labels match, centre answers."""
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


# -- deciding ------------------------------------------------------------------------------------

GRACE_S = 20.0  # start-up and clean-up a process may take beyond its limit before it is killed
RUN_COLUMNS = ("network", "property", "timeout_s", "expected", "answer", "verdict", "stage", "time_s",
               "winner", "winner_time_s")


def run_one(onnx: Path, vnnlib: Path, timeout: float, started: float, result: Path | None) -> dict:
    """Decide one instance in this process; the budget counts from ``started`` (process start)."""
    from polycert.formulations.vnncomp import vnncomp_answer
    from polycert.formulations.vnnlib import format_result

    net = load_onnx(onnx)
    prop = read_vnnlib(vnnlib, n_inputs=net.input_size, n_outputs=net.output_size)
    budget = max(timeout - (time.monotonic() - started) - 1.0, 1.0)
    ans = vnncomp_answer(net, prop, timeout=budget)
    if result is not None:
        word = {"holds": "unsat", "violated": "sat"}.get(ans.word, "unknown")
        result.write_text(format_result(word, ans.x, ans.y))
    return {"answer": ans.word, "stage": ans.stage, "times": {k: round(v, 3) for k, v in ans.times.items()}}


def _spawn(inst: Instance, timeout: float, threads: int) -> tuple[dict, float]:
    start = time.monotonic()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", str(inst.onnx), str(inst.vnnlib), str(timeout)]
    # processes side by side must not oversubscribe the cores through BLAS's own thread pools
    env = dict(os.environ, **{v: str(threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + GRACE_S, cwd=ROOT, env=env)
    except subprocess.TimeoutExpired:
        return {"answer": "unknown", "stage": "killed"}, time.monotonic() - start
    elapsed = time.monotonic() - start
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or "").strip().splitlines()[-1:] or ["no output"]
        return {"answer": "unknown", "stage": f"error: {tail[0][:120]}"}, elapsed
    return json.loads(lines[-1]), elapsed


def _read_winner(benchmark: Path) -> dict[tuple[str, str], tuple[str, float]]:
    with open(benchmark / "answers.csv", newline="") as f:
        return {(r["onnx"], r["vnnlib"]): (r["alpha_beta_crown_result"], float(r["alpha_beta_crown_time_s"]))
                for r in csv.DictReader(f)}


def _verdict(answer: str, expected: str) -> str:
    if answer == "unknown":
        return "unknown"
    if expected == "unknown":
        return "unchecked"
    return "correct" if answer == expected else "WRONG"


def print_table(rows: list[dict]) -> None:
    """Per network and in total: decided, correct, wrong, unknown, times; the winner beside."""
    print(f"\n{'network':<10} {'n':>3} {'decided':>7} {'correct':>7} {'wrong':>5} {'unknown':>7} "
          f"{'total_s':>8} {'median_s':>8} | {'winner_decided':>14} {'winner_median_s':>15}")
    groups = sorted({r["network"] for r in rows}) + ["total"]
    for g in groups:
        rs = rows if g == "total" else [r for r in rows if r["network"] == g]
        times = [r["time_s"] for r in rs]
        w_dec = [r for r in rs if r["winner"] in ("holds", "violated")]
        print(f"{g:<10} {len(rs):>3} {sum(r['answer'] != 'unknown' for r in rs):>7} "
              f"{sum(r['verdict'] == 'correct' for r in rs):>7} {sum(r['verdict'] == 'WRONG' for r in rs):>5} "
              f"{sum(r['answer'] == 'unknown' for r in rs):>7} {sum(times):>8.1f} {statistics.median(times):>8.1f} | "
              f"{len(w_dec):>14} {statistics.median([r['winner_time_s'] for r in rs]):>15.1f}")


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--one"]:  # the child process: one instance, one JSON line
        onnx, vnnlib, timeout = Path(argv[1]), Path(argv[2]), float(argv[3])
        result = Path(argv[4]) if len(argv) > 4 else None
        print(json.dumps(run_one(onnx, vnnlib, timeout, started, result)), flush=True)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", type=Path, default=DEFAULT_BENCHMARK)
    parser.add_argument("--networks", default=None)
    parser.add_argument("--properties", default=None)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--timeout-scale", type=float, default=1.0)
    parser.add_argument("--csv", type=Path, default=None)
    parser.add_argument("--check-only", action="store_true")
    parser.add_argument("--jobs", type=int, default=1, help="instance processes at once (default 1)")
    args = parser.parse_args(argv)
    if args.check_only:
        return check_main(args)

    instances = list_instances(args.benchmark)
    if args.networks:
        tags = [t.strip() for t in args.networks.split(",")]
        instances = [i for i in instances if any(f"_{t}." in i.onnx.name for t in tags)]
    if args.properties:
        names = {f"{t.strip()}.vnnlib" for t in args.properties.split(",")}
        instances = [i for i in instances if i.vnnlib.name.removesuffix(".gz") in names]
    instances = instances[: args.limit]
    answers, winner = read_answers(args.benchmark), _read_winner(args.benchmark)
    jobs = max(1, args.jobs)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    print(f"# {len(instances)} instances, timeout scale {args.timeout_scale}, one process each, {jobs} at once"
          f" ({os.cpu_count()} cores, {threads} BLAS thread(s) each)", flush=True)
    print(",".join(RUN_COLUMNS), flush=True)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_spawn, inst, inst.timeout_s * args.timeout_scale, threads) for inst in instances]
        rows = [_row(inst, inst.timeout_s * args.timeout_scale, *future.result(), answers, winner)
                for inst, future in zip(instances, futures)]
    print_table(rows)
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=RUN_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    return 1 if any(r["verdict"] == "WRONG" for r in rows) else 0


def _row(inst: Instance, timeout: float, out: dict, elapsed: float, answers: dict, winner: dict) -> dict:
    """One instance's table row (printed as it is made, in the instances' order)."""
    key = (inst.onnx.name, inst.vnnlib.name.removesuffix(".gz"))
    expected = answers.get(key, "unknown")
    w_word, w_time = winner.get(key, ("unknown", float("nan")))
    answer, stage = out["answer"], out.get("stage", "")
    if answer != "unknown" and elapsed > timeout:  # the competition counts an answer after its limit as a timeout
        answer, stage = "unknown", f"late: {answer} ({stage}) after the limit"
    row = {"network": inst.onnx.stem.removeprefix("mnist-net_"), "property": key[1], "timeout_s": timeout,
           "expected": expected, "answer": answer, "verdict": _verdict(answer, expected),
           "stage": stage, "time_s": round(elapsed, 2),
           "winner": w_word, "winner_time_s": w_time}
    print(",".join(str(row[c]) for c in RUN_COLUMNS), flush=True)
    return row


if __name__ == "__main__":
    raise SystemExit(main())
