"""Load on the production stack (issue 19 item 2): a large batch through 2 Celery workers on PostgreSQL + Redis
while a client polls the job's status and pages its results, then many clients submitting small jobs at once.
Prints figures; asserts nothing.

    nice -n 10 .venv/bin/python bench/load.py [--queries 10000] [--small 1000] [--clients 20] [--keep]

It starts its own stack with the shared launch code of the tests (:mod:`tests.live`): a fresh PostgreSQL
database, its own Redis database and queue name, 2 worker processes (prefork, concurrency 1, as deployed) and
the API server (``polycert serve``, uvicorn) in its own process. Queries are cheap on purpose: the shipped
49-3-3-10 network ``verianet`` on ``mnist7-bilinear`` test images, method ``lp``, verdict answers, so the figures
are the service's own cost (queue, database, HTTP), not the engine's.

Figures:

* per batch (``--small`` queries, then ``--queries``): wall time from submission to the job's end, throughput,
  p50 / p99 / max latency of ``GET /jobs/{id}`` and of ``GET /jobs/{id}/results`` (pages of 100, the client walks
  them while the job runs), and each process's peak resident memory (``VmRSS`` from ``/proc``, sampled every
  0.1 s: the API server, each worker's main process and its pool child). Memory must not grow with the batch:
  the two batches' peaks are printed side by side.
  The same two requests are timed again once the job is done (idle workers, random page offsets): the endpoints'
  own cost apart from the CPU the workers take during the run (2 cores here).
* ``--clients`` clients at once, each submitting a small job (``--client-queries``) and polling it to the end:
  p50 / p99 submit latency, p50 / p99 time to done, the total wall time.

Needs PostgreSQL and Redis on 127.0.0.1 (``bash deploy/ensure-services.sh``). ``--keep`` keeps the database
(and prints its URL) and the logs folder. ``--chunk-size N``: fixed chunks (a worker's memory follows its
largest chunk, which the guided sizes take from the network's history, capped at ``chunking.LARGEST_CHUNK``).
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/ holds queue.py: keep this folder off the import path, or it shadows the standard `queue`
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import contextlib  # noqa: E402
import datetime  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.live import Workers, live_server, postgres_database  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/12"
N_WORKERS = 2
PAGE = 100


# -- resident memory from /proc ---------------------------------------------------------------------------


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class MemorySampler(threading.Thread):
    """Every ``period`` seconds, the RSS of each named process and of its children (``name/child``); keeps the
    peak per process and phase (``phase`` is set by the caller)."""

    def __init__(self, roots: dict[str, int], period: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.roots, self.period, self.phase = roots, period, "start"
        self.peaks: dict[str, dict[str, float]] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.period):
            peaks = self.peaks.setdefault(self.phase, {})
            for name, pid in self.roots.items():
                procs = [(name, pid)] + [(f"{name}/child", c) for c in children(pid)]
                for label, p in procs:
                    mib = rss_mib(p)
                    if mib is not None:
                        peaks[label] = max(peaks.get(label, 0.0), mib)


# -- the client -------------------------------------------------------------------------------------------


def percentiles(values: list[float]) -> str:
    if not values:
        return "-"
    a = 1000.0 * np.asarray(values)
    return f"p50 {np.percentile(a, 50):7.1f}  p99 {np.percentile(a, 99):7.1f}  max {a.max():7.1f} ms  (n={len(a)})"


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def submit(client, network_id: int, start: int, stop: int, eps: list[float], args) -> int:
    body = {"network_id": network_id, "dataset": {"name": args.dataset, "start": start, "stop": stop}, "eps": eps,
            "methods": args.method, "answer": args.answer, "time_limit": 30}
    r = client.post("/jobs", json=body)
    if r.status_code != 202:
        raise SystemExit(f"submission refused: {r.status_code} {r.text}")
    return int(r.json()["id"])


def wait_done(client, job_id: int, timeout: float, period: float = 0.2) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/jobs/{job_id}").json()
        if body["status"] in ("done", "failed", "cancelled"):
            return body
        if time.monotonic() > deadline:
            raise SystemExit(f"job {job_id} still {body['status']} after {timeout} s: {body.get('progress')}")
        time.sleep(period)


def batch_run(server, sampler: MemorySampler, network_id: int, queries: int, phase: str, args) -> dict:
    """One batch of ``queries`` queries; this thread polls status and walks the result pages until it is done."""
    images = max(1, queries // len(args.eps))
    sampler.phase = phase
    status_s, results_s, pages = [], [], 0
    with server.client(timeout=120) as client:
        t0 = time.perf_counter()
        job_id = submit(client, network_id, 0, images, args.eps, args)
        submit_s = time.perf_counter() - t0
        offset = 0
        while True:
            r, dt = timed(client.get, f"/jobs/{job_id}")
            status_s.append(dt)
            body = r.json()
            page, dt = timed(client.get, f"/jobs/{job_id}/results", params={"offset": offset, "limit": PAGE})
            results_s.append(dt)
            count = page.json()["count"]
            pages += 1
            offset = offset + PAGE if offset + PAGE < count else 0  # walk the pages answered so far, then again
            if body["status"] in ("done", "failed", "cancelled"):
                break
            time.sleep(args.poll)
        wall = time.perf_counter() - t0
        # the same requests once the workers are idle: the endpoints' own cost, without the run's CPU contention
        quiet_status, quiet_results = [], []
        rng = np.random.default_rng(0)
        for _ in range(20):
            quiet_status.append(timed(client.get, f"/jobs/{job_id}")[1])
            off = int(rng.integers(0, max(1, body["progress"]["done"] - PAGE + 1)))
            quiet_results.append(timed(client.get, f"/jobs/{job_id}/results", params={"offset": off, "limit": PAGE})[1])
    created = datetime.datetime.fromisoformat(body["created_at"])
    finished = datetime.datetime.fromisoformat(body["finished_at"]) if body.get("finished_at") else None
    job_wall = (finished - created).total_seconds() if finished else wall
    sampler.phase = "idle"
    return {"phase": phase, "job": job_id, "status": body["status"], "queries": body["progress"]["total"],
            "done": body["progress"]["done"], "errors": body["progress"]["errors"], "wall": job_wall,
            "submit": submit_s, "status_s": status_s, "results_s": results_s, "pages": pages,
            "chunks": body["progress"]["chunks"], "verdicts": body["progress"]["verdicts"],
            "quiet_status": quiet_status, "quiet_results": quiet_results}


def clients_run(server, network_id: int, args) -> dict:
    """``args.clients`` clients at once, each submitting one small job and polling it until done."""
    per = max(1, args.client_queries // len(args.eps))

    def one(i: int):
        with server.client(timeout=120) as client:
            start = 9000 - (i + 1) * per  # images of their own, away from the big batch's
            job_id, dt = timed(submit, client, network_id, start, start + per, args.eps, args)
            t = time.perf_counter()
            body = wait_done(client, job_id, timeout=600, period=0.2)
            return dt, time.perf_counter() - t + dt, body["status"], body["progress"]["done"]

    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        got = list(pool.map(one, range(args.clients)))
    return {"wall": time.perf_counter() - t0, "submit": [g[0] for g in got], "done_after": [g[1] for g in got],
            "statuses": [g[2] for g in got], "answered": sum(g[3] for g in got)}


# -- main -------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=10_000, help="queries of the large batch")
    parser.add_argument("--small", type=int, default=1_000, help="queries of the small batch (memory baseline)")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--client-queries", type=int, default=10, help="queries of each client's job")
    parser.add_argument("--network", default="verianet")
    parser.add_argument("--dataset", default="mnist7-bilinear")
    parser.add_argument("--eps", type=float, nargs="+", default=[0.005, 0.02])
    parser.add_argument("--method", default="lp", choices=["lp", "mip", "both"])
    parser.add_argument("--answer", default="verdict", choices=["verdict", "bounds"])
    parser.add_argument("--poll", type=float, default=0.1, help="seconds between the polling client's rounds")
    parser.add_argument("--chunk-size", type=int, default=None,
                        help="fixed queries per chunk (default: the service's guided sizes from the network's history)")
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs folder")
    args = parser.parse_args(argv)

    import redis

    logs = Path(tempfile.mkdtemp(prefix="polycert-load-"))
    print(f"# bench/load.py  {time.strftime('%Y-%m-%d %H:%M')}  python {platform.python_version()}  cores {os.cpu_count()}"
          f"  {args.network} {args.dataset} method {args.method} answer {args.answer} eps {args.eps}")
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(postgres_database(PG_ADMIN, prefix="polycert_load", keep=args.keep))
        env = {k: v for k, v in os.environ.items() if not k.startswith("POLYCERT_")}
        env.update(POLYCERT_DATABASE_URL=url, POLYCERT_BROKER_URL=REDIS, POLYCERT_ENVIRONMENT="test",
                   POLYCERT_QUEUE_NAME=f"polycert-load-{uuid.uuid4().hex[:6]}", PYTHONPATH=str(ROOT))
        if args.chunk_size:
            env["POLYCERT_CHUNK_SIZE"] = str(args.chunk_size)
        # no flushdb: the queue is this run's own; another run may share the Redis database (a flush lost its tasks)
        stack.callback(lambda: redis.Redis.from_url(REDIS).delete(env["POLYCERT_QUEUE_NAME"]))
        server = stack.enter_context(live_server(logs, **{k: v for k, v in env.items() if k.startswith("POLYCERT_")}))
        pool = Workers(server.env, logs)
        stack.callback(pool.stop_all)
        for _ in range(N_WORKERS):
            pool.start()
        sampler = MemorySampler({"api": server.process.pid, **{f"worker{i}": p.pid for i, p in enumerate(pool.procs)}})
        sampler.start()
        stack.callback(sampler.stopping.set)
        with server.client() as client:
            r = client.post("/networks", json={"builtin": args.network})
            if r.status_code not in (200, 201):
                raise SystemExit(f"registering {args.network} failed: {r.status_code} {r.text}")
            network_id = int(r.json()["id"])
            sampler.phase = "warm-up"  # every worker imports the engine and answers a chunk
            wait_done(client, submit(client, network_id, 9500, 9500 + 40, args.eps[:1], args), timeout=300)
        runs = [batch_run(server, sampler, network_id, n, f"{n} queries", args)
                for n in dict.fromkeys([args.small, args.queries]) if n > 0]
        crowd = None
        if args.clients > 0:
            sampler.phase = f"{args.clients} clients"
            crowd = clients_run(server, network_id, args)
        time.sleep(0.3)
        print(f"# logs: {logs}" + (f"; database kept: {url}" if args.keep else ""))

    for run in runs:
        print(f"\n== batch of {run['queries']} queries (job {run['job']}): {run['status']}, {run['done']} answered,"
              f" {run['errors']} errors, chunks {run['chunks']}")
        print(f"   wall {run['wall']:.1f} s (submission to the job's end) = {run['done'] / run['wall']:.1f} queries/s;"
              f" submit {1000 * run['submit']:.0f} ms; verdicts {run['verdicts']}")
        print(f"   GET /jobs/id          {percentiles(run['status_s'])}")
        print(f"   GET /jobs/id/results  {percentiles(run['results_s'])}  ({run['pages']} pages of {PAGE})")
        print(f"   after the run, idle workers: GET /jobs/id {percentiles(run['quiet_status'])}")
        print(f"   after the run, idle workers: results      {percentiles(run['quiet_results'])}  (random offsets)")
    if crowd:
        print(f"\n== {args.clients} clients at once, {args.client_queries} queries each: wall {crowd['wall']:.1f} s,"
              f" {crowd['answered']} answered, statuses {dict((s, crowd['statuses'].count(s)) for s in set(crowd['statuses']))}")
        print(f"   POST /jobs            {percentiles(crowd['submit'])}")
        print(f"   submit to done        {percentiles(crowd['done_after'])}")
    phases = [p for p in sampler.peaks if p not in ("start", "idle")]
    labels = sorted({k for p in phases for k in sampler.peaks[p]})
    print("\n== peak RSS (MiB) per process and phase")
    print(f"   {'process':<16}" + "".join(f"{p:>16}" for p in phases))
    for label in labels:
        print(f"   {label:<16}" + "".join(f"{sampler.peaks[p].get(label, float('nan')):>16.1f}" for p in phases))
    if len(runs) == 2:
        a, b = (sampler.peaks.get(r["phase"], {}) for r in runs)
        growth = {k: b[k] - a[k] for k in a if k in b}
        print(f"   growth from {runs[0]['queries']} to {runs[1]['queries']} queries (MiB): "
              + ", ".join(f"{k} {v:+.1f}" for k, v in growth.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
