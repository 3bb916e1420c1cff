"""A real ``polycert serve`` process for tests that use the product through its own doors.

Also the rest of a real stack, shared by the integration tests and the benchmarks (``bench/load.py``,
``bench/queue.py``): :func:`postgres_database` (a fresh PostgreSQL database, dropped afterwards) and
:class:`Workers` (Celery worker processes, each in its own process group).

``live_server(tmp_path)`` starts the API as a user would (``polycert db upgrade`` then ``polycert serve``) in
its own process, on a free port of 127.0.0.1, with a fresh data directory: the embedded default (SQLite and
the in-process worker) unless ``env`` names a database and a broker. It waits for ``/health`` and gives a
:class:`LiveServer` with an ``httpx`` client that carries the write token.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "live-test-token-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    url: str
    token: str
    env: dict[str, str]
    process: subprocess.Popen
    log: Path

    def client(self, *, token: bool = True, timeout: float = 30.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def cli(self, *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess:
        """``polycert ARGS`` with the server's environment (its database: the embedded default's data dir)."""
        return subprocess.run([sys.executable, "-m", "polycert.cli", *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def wait_job(self, job_id: int, *, timeout: float = 300.0) -> dict:
        """Poll ``GET /jobs/{id}`` until the job is done, failed or cancelled; returns its last body."""
        deadline = time.monotonic() + timeout
        with self.client() as c:
            while True:
                body = c.get(f"/jobs/{job_id}").json()
                if body["status"] in ("done", "failed", "cancelled"):
                    return body
                if time.monotonic() > deadline:
                    raise AssertionError(f"job {job_id} still {body['status']} after {timeout} s:\n{self.tail()}")
                time.sleep(0.2)

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def one_line_error(result: subprocess.CompletedProcess, code: int) -> str:
    """The message of a ``polycert`` command that failed as the CLI promises: exit ``code``, no traceback,
    one line ``polycert: error: MESSAGE`` on stderr."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("polycert: error: ")
    return lines[0].removeprefix("polycert: error: ")


@contextlib.contextmanager
def postgres_database(admin_url: str, *, prefix: str = "polycert", keep: bool = False) -> Iterator[str]:
    """A fresh PostgreSQL database on the server of ``admin_url`` (``postgresql://user@host:port/db``), dropped
    (connections forced out) on exit unless ``keep``; yields its SQLAlchemy URL (psycopg driver), not migrated."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    finally:
        if not keep:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Workers:
    """Celery worker processes started by a test, each in its own process group (killed as a whole)."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env, self.log_dir, self.procs = env, log_dir, []

    def start(self, concurrency: int = 1, *, pool: str = "prefork", loglevel: str = "warning") -> subprocess.Popen:
        log = open(self.log_dir / f"worker-{len(self.procs)}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "polycert.workers.app", "worker", "--pool", pool,
             f"--concurrency={concurrency}", "-Q", self.env["POLYCERT_QUEUE_NAME"], "--loglevel", loglevel,
             "--without-gossip", "--without-mingle", "--without-heartbeat", "-n", f"it{len(self.procs)}@%h"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                self.kill(proc, signal.SIGTERM)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(self.log_dir.glob("worker-*.log")))


def server_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYCERT_")}
    env.update(POLYCERT_DATA_DIR=str(data_dir), POLYCERT_API_TOKEN=TOKEN, PYTHONPATH=str(ROOT),
               POLYCERT_ENVIRONMENT="test")
    env.update(extra)
    return env


@contextlib.contextmanager
def live_server(tmp_path: Path, **env_extra: str) -> Iterator[LiveServer]:
    data = tmp_path / "data"
    env = server_env(data, **env_extra)
    log = tmp_path / "server.log"
    up = subprocess.run([sys.executable, "-m", "polycert.cli", "db", "upgrade"], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=120)
    if up.returncode != 0:
        raise RuntimeError(f"polycert db upgrade failed: {up.stdout}{up.stderr}")
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "polycert.cli", "serve", "--port", str(port)], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = LiveServer(f"http://127.0.0.1:{port}", TOKEN, env, proc, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"polycert serve exited with {proc.returncode}:\n{server.tail()}")
            try:
                if httpx.get(f"{server.url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"polycert serve did not answer /health in 60 s:\n{server.tail()}")
            time.sleep(0.2)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
