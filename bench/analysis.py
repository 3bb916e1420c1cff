"""The analytical answers of issue 16, timed: bounds and signatures beside the verdict-only cascade.
Prints tables; asserts nothing.

    .venv/bin/python bench/analysis.py [--part a|b|both] [--networks polycert-tiny verianet] [--images 600]
                                       [--per-digit 600] [--workers 2]

(a) in process, one worker: the first ``--images`` test images x eps {0.01, 0.02}, methods LP and MIP (apart, and
    in one ``both`` call as a worker runs a ``methods="both"`` job's chunk), through
    the very engine call a worker makes for a chunk (``workers.execution.cascade_call``) in chunks of 150,
    once with ``answer="bounds"`` (LP bound of every target, exact brackets to 1e-4, tight sets) and once with
    ``answer="verdict"`` (the sign only): wall time, queries/s, the ratio, and what the bounds hold (brackets
    closed to the tolerance, certificates with a tight set, the relaxation gap's median and maximum).
(b) through the queue: the study's signature design, ``--per-digit`` test images of each digit at eps 0.05, LP
    and exact MIP (kind ``signature``), on PostgreSQL + Redis with ``--workers`` Celery worker processes:
    wall time (submission to the last chunk's commit, workers' clocks), queries/s, MIP brackets closed. With
    ``--report docs/study`` the study reports' signature sections are re-rendered from the job's certificates.
    Needs PostgreSQL and Redis on 127.0.0.1 (as bench/queue.py).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import os
import platform
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np

# bench/queue.py sits beside this file: keep the folder off the import path, or it shadows the standard `queue`
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CHUNK = 150
TOLERANCE = 1e-4


def _queue_helpers():
    """bench/queue.py's database helpers (loaded by path: its name shadows the standard ``queue``)."""
    spec = importlib.util.spec_from_file_location("bench_queue", ROOT / "bench" / "queue.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_images(network_name: str):
    from polycert.datasets import load_preprocessed
    from polycert.zoo import load_builtin

    network = load_builtin(network_name)
    name = network.metadata.get("preprocessing", "mnist7-area")
    x, y = load_preprocessed(name, "test")
    return network, name, np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.int64)


def part_a(args) -> None:
    from polycert.workers.execution import cascade_call, default_certify_batch

    certify_batch = default_certify_batch()
    print("# (a) in process, one worker: both methods, bounds beside verdicts")
    print("network        answer   method  eps    queries  seconds  queries/s  exact  tight  gap median  gap max")
    for network_name in args.networks:
        network, _, x, y = test_images(network_name)
        x, y = x[: args.images], y[: args.images]
        cascade_call(certify_batch, network, x[:4], y[:4], np.full(4, 0.01), method="mip", norm="linf",
                     parameters={"time_limit": 60.0, "answer": "bounds"})  # warm: imports, caches
        totals = {}
        for answer in ("verdict", "bounds"):
            certs_by = {}
            for method in ("lp", "mip", "both"):
                for eps in (0.01, 0.02):
                    start, certs = time.perf_counter(), []
                    for c0 in range(0, len(x), CHUNK):
                        xs, ys = x[c0:c0 + CHUNK], y[c0:c0 + CHUNK]
                        certs += cascade_call(certify_batch, network, xs, ys, np.full(len(xs), eps), method=method,
                                              norm="linf", parameters={"time_limit": 60.0, "answer": answer})
                    seconds = time.perf_counter() - start
                    key = (answer, "both" if method == "both" else "apart")
                    totals[key] = totals.get(key, 0.0) + seconds
                    if method == "both":  # one call per chunk answers both methods (as a worker runs a both job)
                        lp_certs, certs = [p[0] for p in certs], [p[1] for p in certs]
                        certs_by[("lp", eps)] = lp_certs
                    certs_by[(method, eps)] = certs
                    exact = sum(1 for c in certs if c.upper - c.lower <= TOLERANCE * (1 + 1e-9))
                    tight = sum(1 for c in certs if c.tight)
                    gap = ""
                    if method == "mip" and ("lp", eps) in certs_by:
                        gaps = np.array([m.lower - l.lower for l, m in zip(certs_by[("lp", eps)], certs)
                                         if np.isfinite(m.lower) and np.isfinite(l.lower)])
                        gap = f"{np.median(gaps):10.4f}  {gaps.max():7.4f}" if gaps.size else ""
                    print(f"{network_name:14s} {answer:8s} {method:6s} {eps:<6g} {len(certs):7d}  {seconds:7.2f}  "
                          f"{len(certs) / seconds:9.1f}  {exact:5d}  {tight:5d}  {gap}", flush=True)
        n = 4 * len(x)  # LP and MIP answers of len(x) images x 2 radii
        for how in ("apart", "both"):
            b, v = totals[("bounds", how)], totals[("verdict", how)]
            label = "lp and mip runs apart" if how == "apart" else "one 'both' run per chunk"
            print(f"{network_name:14s} total ({label}): {n} answers of {n // 2} (image, eps) queries: bounds {b:.2f} s "
                  f"({n / b:.1f} answers/s), verdict {v:.2f} s ({n / v:.1f} answers/s), ratio {b / v:.2f}", flush=True)


def per_digit_images(x, y, per_digit: int):
    """The first ``per_digit`` test images of each digit, in test-set order."""
    rows = np.concatenate([np.flatnonzero(y == d)[:per_digit] for d in range(10)])
    rows.sort()
    return x[rows], y[rows]


def part_b(args) -> None:
    from sqlalchemy import func, select

    q = _queue_helpers()
    print(f"# (b) signature jobs through the queue: {args.per_digit} images per digit, eps 0.05, LP and MIP, "
          f"{args.workers} workers, PostgreSQL + Redis")
    for network_name in args.networks:
        network, _, x, y = test_images(network_name)
        xs, ys = per_digit_images(x, y, args.per_digit)
        cleanup = contextlib.ExitStack()  # the fresh database, dropped when this network's run ends
        url = cleanup.enter_context(q.postgres_database(q.PG_ADMIN, prefix="polycert_analysis"))
        queue = f"bench-{uuid.uuid4().hex[:6]}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("POLYCERT_")}
        env.update(POLYCERT_DATABASE_URL=url, POLYCERT_BROKER_URL=q.REDIS, POLYCERT_QUEUE_NAME=queue,
                   POLYCERT_ENVIRONMENT="test", PYTHONPATH=str(ROOT))
        os.environ.update({k: v for k, v in env.items() if k.startswith("POLYCERT_")})
        from polycert import batches
        from polycert.db.migrate import upgrade
        from polycert.db.models import CertificateRow, ChunkRow
        from polycert.db.session import get_engine, session_factory
        from polycert.dispatch import get_dispatcher, reset_dispatchers
        from polycert.settings import get_settings

        get_settings.cache_clear()
        upgrade(url)
        # no flushdb: the queue name is this run's own, and the Redis database may be another run's too
        procs = [subprocess.Popen([sys.executable, "-m", "celery", "-A", "polycert.workers.app", "worker", "--pool", "solo",
                                   "-Q", queue, "-l", "warning", "--without-gossip", "--without-mingle",
                                   "--without-heartbeat", "-n", f"analysis{i}@%h"], cwd=ROOT, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT) for i in range(args.workers)]
        sessions = session_factory(get_engine(url))
        try:
            get_dispatcher(get_settings()).connect()
            with sessions() as session:
                batches.register_network(session, network, "builtin")
                session.commit()
            time.sleep(6.0)  # the workers import the engine
            request = batches.SignatureRequest(kind="signature", network=network.name, inputs=xs.tolist(),
                                               labels=ys.tolist(), eps=[0.05], methods="both")
            submitted = datetime.datetime.now(datetime.timezone.utc)
            with sessions() as session:
                job_id = batches.submit_batch(session, get_dispatcher(get_settings()), request, created_by="bench").id
            while True:
                with sessions() as session:
                    job = batches.get_job_or_raise(session, job_id)
                    if job.status in ("done", "failed", "cancelled"):
                        spans = session.execute(select(ChunkRow.finished_at).where(ChunkRow.job_id == job_id)).all()
                        wall = (max(b for (b,) in spans) - submitted).total_seconds()
                        rows = session.execute(select(CertificateRow.method, CertificateRow.verdict, func.count())
                                               .where(CertificateRow.job_id == job_id)
                                               .group_by(CertificateRow.method, CertificateRow.verdict)).all()
                        engine_s = session.scalar(select(func.sum(CertificateRow.wall_time))
                                                  .where(CertificateRow.job_id == job_id))
                        total, status = job.total, job.status
                        break
                time.sleep(0.5)
            counts = {f"{m} {v}": n for m, v, n in rows}
            print(f"{network_name}: {total} queries ({len(xs)} images x LP, MIP), job {status}, {wall:.1f} s wall, "
                  f"{total / wall:.1f} queries/s, engine {engine_s:.1f} worker-s; {counts}", flush=True)
            if args.report:  # the study report's signature section, from what the job stored
                from polycert.study import rerender_signatures

                command = (f"bench/analysis.py --part b --networks {network_name} --per-digit {args.per_digit} "
                           f"--workers {args.workers} --report {args.report}")
                with sessions() as session:
                    readme = rerender_signatures(Path(args.report) / network_name, session, job_id, command=command)
                print(f"{network_name}: signature section re-rendered in {readme}", flush=True)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(timeout=60)
            reset_dispatchers()
            get_engine.cache_clear()
            cleanup.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("a", "b", "both"), default="both")
    parser.add_argument("--networks", nargs="+", default=["polycert-tiny", "verianet"])
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--per-digit", type=int, default=600)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--report", help="(b): re-render the signature section of the study reports in REPORT/<network> "
                                         "(e.g. docs/study) from the job's stored certificates")
    args = parser.parse_args()
    import numpy, scipy, highspy  # noqa: F401

    print(f"# {datetime.date.today()} {platform.node()} {platform.processor() or platform.machine()} "
          f"{os.cpu_count()} cores; python {platform.python_version()}, numpy {numpy.__version__}, scipy {scipy.__version__}")
    if args.part in ("a", "both"):
        part_a(args)
    if args.part in ("b", "both"):
        part_b(args)


if __name__ == "__main__":
    main()
