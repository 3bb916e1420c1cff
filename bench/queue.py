"""Queue overhead and scaling: the same batch in-process serially, and through Celery + Redis with 1 and
2 worker processes (PostgreSQL store). Prints a table; asserts nothing.

    .venv/bin/python bench/queue.py [--images 200] [--eps 0.005 0.01 0.02] [--method lp] [--chunk-size 20]

Default: the first 600 test images at eps 0.05, exact (mip), on the shipped ``polycert-tiny`` network, cut
into chunks as the service cuts them (guided sizes from the network's history, :mod:`service.chunking`;
``--chunk-size N`` for fixed chunks). The in-process serial run replays the very chunks of the one-worker
job through the very engine call a worker makes (the batched cascade answers a chunk in one call).

Each Celery run starts on a warm service, as a running one is: fresh PostgreSQL database, workers started,
a small warm-up job (one chunk per worker, other images) answered, then the clock starts at submission.
Figures: wall time, throughput, per-task overhead (wall x workers - solve time, per chunk), overhead
as a share of solve time, the same against the serial run's wall, speed-up of 2 workers over 1.
Needs PostgreSQL and Redis on 127.0.0.1.
"""

from __future__ import annotations

import sys
from pathlib import Path

# this file is named queue.py: keep its folder off the import path, or it shadows the standard `queue`
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import contextlib
import datetime
import gc
import os
import platform
import tempfile
import time
import uuid

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.live import Workers, postgres_database  # noqa: E402  (the stack's launch code, shared with the tests)

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/13"


def serial(network, chunks, time_limit) -> tuple[float, float]:
    """Every chunk in this process, one after the other, through the very engine call a worker makes for a
    chunk (``workers.execution.cascade_call``: the cascade, the service's settings, the job's time
    limit), storing nothing: (wall seconds, summed engine seconds). ``chunks``: (method, norm, inputs,
    labels, eps) per chunk."""
    from polycert.workers.execution import cascade_call, default_certify_batch

    certify_batch = default_certify_batch()
    solve = 0.0
    start = time.perf_counter()
    for method, norm, xs, ys, eps in chunks:
        t = time.perf_counter()
        cascade_call(certify_batch, network, xs, ys, eps, method=method, norm=norm, parameters={"time_limit": time_limit})
        solve += time.perf_counter() - t
    return time.perf_counter() - start, solve


def job_chunks(session, job_id: int) -> list[tuple]:
    """The queries of a job as the workers got them: (method, norm, inputs, labels, eps) per chunk (one
    method and norm per chunk, as the default requests make them)."""
    from sqlalchemy import select

    from polycert.db.models import QueryRow

    rows = session.execute(select(QueryRow.chunk_id, QueryRow.method, QueryRow.norm, QueryRow.input, QueryRow.label,
                                  QueryRow.eps).where(QueryRow.job_id == job_id).order_by(QueryRow.id)).all()
    out = []
    for chunk_id in dict.fromkeys(r.chunk_id for r in rows):
        mine = [r for r in rows if r.chunk_id == chunk_id]
        out.append((mine[0].method, mine[0].norm, np.asarray([r.input for r in mine], dtype=np.float64),
                    np.asarray([r.label for r in mine], dtype=np.int64), np.asarray([r.eps for r in mine], dtype=np.float64)))
    return out


POLL_SECONDS = 0.25  # how often the client asks whether the measured job is done
WARM_UP_CHUNK = 40  # queries per worker: one chunk each, large enough to cost per query what a job's chunks do


def warm_up(sessions, n_workers: int, args, network_name: str) -> None:
    """One small job from the end of the dataset (not the measured images), one chunk per worker, run to
    the end: every worker has answered a chunk, and the network has the history from which the service
    sizes the measured job's chunks."""
    from polycert import batches
    from polycert.datasets import load_preprocessed
    from polycert.dispatch import get_dispatcher
    from polycert.settings import get_settings

    stop = len(load_preprocessed(args.dataset)[0])
    request = batches.BatchRequest(network=network_name, dataset={"name": args.dataset, "start": stop - n_workers * WARM_UP_CHUNK,
                                                                  "stop": stop},
                                   eps=args.eps[:1], methods=args.method, time_limit=args.time_limit)
    with sessions() as session:
        job_id = batches.submit_batch(session, get_dispatcher(get_settings()), request, created_by="bench-warm-up",
                                      chunk_size=args.chunk_size or WARM_UP_CHUNK).id
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with sessions() as session:
            if batches.get_job_or_raise(session, job_id).status == "done":
                return
        time.sleep(0.05)
    raise SystemExit("the warm-up job did not finish in 120 s: are the workers running?")


def through_celery(n_workers: int, args, network_name: str, plan: list[int] | None = None
                   ) -> tuple[float, int, float, list[tuple]]:
    """Submit the batch (in the chunks of ``plan`` if given, else as the service cuts it), run ``n_workers``
    worker processes, wait: (wall seconds, chunks, summed engine time, the chunks' queries)."""
    from sqlalchemy import func, select

    stack = contextlib.ExitStack()
    url = stack.enter_context(postgres_database(PG_ADMIN, prefix="polycert_bench"))
    queue = f"bench-{uuid.uuid4().hex[:6]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYCERT_")}
    env.update(POLYCERT_DATABASE_URL=url, POLYCERT_BROKER_URL=REDIS, POLYCERT_QUEUE_NAME=queue,
               POLYCERT_ENVIRONMENT="test", PYTHONPATH=str(ROOT))
    if args.chunk_size:
        env["POLYCERT_CHUNK_SIZE"] = str(args.chunk_size)
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
    log_dir = args.worker_log / f"{n_workers}-workers" if args.worker_log else Path(tempfile.mkdtemp(prefix="polycert-queue-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    pool = Workers(env, log_dir)
    stack.callback(pool.stop_all)
    for _ in range(n_workers):
        pool.start(pool=args.pool, loglevel="info" if args.worker_log else "warning")
    sessions = session_factory(get_engine(url))
    try:
        # the clock starts on a warm service, as a running one is: the workers have imported the engine and
        # answered a chunk each (their database connections, the network's weights decoded, the server's
        # catalog caches), the client has registered the network and opened its broker connection
        get_dispatcher(get_settings()).connect()
        time.sleep(4.0)
        warm_up(sessions, n_workers, args, network_name)
        gc.collect()  # see main(): no full collection of this process' objects inside the submission
        gc.freeze()
        request = batches.BatchRequest(network=network_name, dataset={"name": args.dataset, "start": 0, "stop": args.images},
                                       eps=args.eps, methods=args.method, time_limit=args.time_limit)
        with sessions() as session:
            submitted_at = datetime.datetime.now(datetime.timezone.utc)
            job = batches.submit_batch(session, get_dispatcher(get_settings()), request, created_by="bench",
                                       chunk_size=plan or args.chunk_size)
            submit_s = (datetime.datetime.now(datetime.timezone.utc) - submitted_at).total_seconds()
            job_id = job.id
        while True:
            with sessions() as session:
                if batches.get_job_or_raise(session, job_id).status == "done":
                    solve = session.scalar(select(func.sum(CertificateRow.wall_time)).where(CertificateRow.job_id == job_id))
                    spans = session.execute(select(ChunkRow.started_at, ChunkRow.finished_at, ChunkRow.worker)
                                            .where(ChunkRow.job_id == job_id)).all()
                    in_chunks = sum((b - a).total_seconds() for a, b, _ in spans)
                    first = min(a for a, _, _ in spans)
                    # submit to the last chunk's commit, from the workers' own clock (same machine): the
                    # poll's own period does not count
                    wall = (max(b for _, b, _ in spans) - submitted_at).total_seconds()
                    between = []  # a worker's idle time from one chunk's end to its next chunk's start
                    for name in {w for _, _, w in spans}:
                        mine = sorted((a, b) for a, b, w in spans if w == name)
                        between += [(a2 - b1).total_seconds() for (_, b1), (a2, _) in zip(mine, mine[1:])]
                    replay = job_chunks(session, job_id)
                    break
            # the wall time comes from the workers' own timestamps, not from this poll: poll as a user would,
            # not so often that the poll's own work (a session, a query, ~2 ms of CPU) competes with the workers
            time.sleep(POLL_SECONDS)
        print(f"#   {n_workers} worker(s): {wall:.2f} s wall; inside chunks {in_chunks:.2f} worker-s, of which engine"
              f" {solve:.2f}; submit {submit_s:.3f} s, to first chunk start {(first - submitted_at).total_seconds():.3f} s; between"
              f" chunks {1000 * sum(between) / max(1, len(between)):.1f} ms on average; {len(replay)} chunks of"
              f" {[len(c[2]) for c in replay]}", flush=True)
        return wall, len(replay), float(solve or 0.0), replay
    finally:
        reset_dispatchers()
        get_engine.cache_clear()
        stack.close()  # the workers stopped, then the database dropped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="polycert-tiny")
    parser.add_argument("--dataset", default="mnist7-area")
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--eps", type=float, nargs="+", default=[0.05])
    parser.add_argument("--method", default="mip", choices=["lp", "mip"])
    parser.add_argument("--chunk-size", type=int, default=None, help="fixed chunk size (default: the service's guided sizes)")
    parser.add_argument("--time-limit", type=float, default=60.0)
    parser.add_argument("--skip-serial", action="store_true", help="only the Celery runs")
    parser.add_argument("--worker-log", type=Path, default=None, help="folder for the workers' INFO logs")
    parser.add_argument("--pool", default="prefork", choices=["prefork", "solo"],
                        help="Celery pool of each worker process (prefork: the deployed one, with time limits)")
    args = parser.parse_args()

    from polycert.datasets import load_preprocessed
    from polycert.zoo import load_builtin

    network = load_builtin(args.network)
    x, y = load_preprocessed(args.dataset)
    n = min(len(x), args.images) * len(args.eps)
    print(f"# bench/queue.py  {time.strftime('%Y-%m-%d %H:%M')}  python {platform.python_version()}  cores {os.cpu_count()}")
    print(f"# {n} queries: {args.network} {network.architecture}, {n // len(args.eps)} images x eps {args.eps},"
          f" method {args.method}, chunks {args.chunk_size or 'guided (service default)'}")
    serial(network, [(args.method, "linf", x[:2], y[:2], np.full(2, args.eps[0]))], args.time_limit)  # warm caches
    # this process stands in for the API server that submits the batch; having run the engine it holds
    # hundreds of thousands of long-lived objects, and a full garbage collection triggered by the
    # submission's allocations would cost ~0.1 s that a server process does not pay
    gc.collect()
    gc.freeze()
    rows, plan = [], None
    for workers in (1, 2):  # the two-worker job gets the one-worker job's chunks: the same work, side by side
        wall, chunks, solve, replay = through_celery(workers, args, args.network, plan)
        plan = [len(c[2]) for c in replay]
        rows.append((f"celery+redis, {workers} worker{'s' * (workers > 1)}", workers, wall, chunks, solve))
        if workers == 1 and not args.skip_serial:  # the one-worker job's very chunks, in this process
            wall0, solve0 = serial(network, replay, args.time_limit)
            rows.insert(0, ("in-process serial", 0, wall0, 0, solve0))
            print(f"#   serial: {wall0:.2f} s", flush=True)

    serial_wall = next((r[2] for r in rows if r[1] == 0), None)
    print(f"{'mode':<26}{'wall s':>9}{'queries/s':>11}{'engine s':>10}{'overhead/task ms':>18}{'overhead %':>12}"
          f"{'vs serial':>11}{'speed-up':>10}")
    base = next(r[2] for r in rows if r[1] == 1)
    for name, workers, wall, chunks, solve in rows:
        if workers:
            overhead = wall * workers - solve  # worker-seconds not spent in the engine
            per_task = f"{1000 * overhead / chunks:.1f}"
            share = f"{100 * overhead / solve:.1f}"
            # the same work against the in-process run: catches an engine that runs slower inside a worker
            versus = "-" if serial_wall is None else f"{100 * (wall * workers / serial_wall - 1):+.1f}%"
            speedup = f"{base / wall:.2f}x"
        else:
            per_task, share, versus, speedup = "-", "-", "-", "-"
        print(f"{name:<26}{wall:>9.2f}{n / wall:>11.1f}{solve:>10.2f}{per_task:>18}{share:>12}{versus:>11}{speedup:>10}")
    print("# overhead = wall x workers - engine time inside the workers (queue, database writes, idle tail);"
          " vs serial = wall x workers against the in-process run's wall (noisier: two runs);"
          " targets: overhead < 10 % of solve time, 2 workers >= 1.7x one worker")


if __name__ == "__main__":
    main()
