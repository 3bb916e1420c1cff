"""A real ``polycert serve`` process for tests that use the product through its own doors.

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
