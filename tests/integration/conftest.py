"""Real PostgreSQL, Redis and Celery worker processes for the integration tests.

Under CI=true an unreachable server is a failure; locally the tests skip with the reason.
Each run creates its own PostgreSQL database (dropped at the end) and uses its own Redis database
and queue name, so it never touches anything else on the machine.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

PG_ADMIN = os.environ.get("POLYCERT_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("POLYCERT_TEST_REDIS", "redis://127.0.0.1:6379/11")
ROOT = Path(__file__).resolve().parents[2]


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_servers() -> None:
    missing = [name for name, port in (("PostgreSQL", 5432), ("Redis", 6379)) if not reachable("127.0.0.1", port)]
    if missing:
        message = f"{' and '.join(missing)} not reachable on 127.0.0.1 (run deploy/ensure-services.sh)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_url():
    require_servers()
    import psycopg

    name = f"polycert_it_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    from polycert.db.migrate import upgrade

    upgrade(url)
    yield url
    from polycert.db.session import get_engine

    get_engine.cache_clear()
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_url():
    require_servers()
    import redis

    client = redis.Redis.from_url(REDIS)
    client.flushdb()
    yield REDIS
    client.flushdb()


class Workers:
    """Celery worker processes started by a test, each in its own process group (killed as a whole)."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env, self.log_dir, self.procs = env, log_dir, []

    def start(self, concurrency: int = 1) -> subprocess.Popen:
        log = open(self.log_dir / f"worker-{len(self.procs)}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "polycert.workers.app", "worker", "--pool", "prefork",
             f"--concurrency={concurrency}", "-Q", self.env["POLYCERT_QUEUE_NAME"], "--loglevel", "warning",
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


def service_env(database_url: str, broker_url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYCERT_")}
    env.update(POLYCERT_DATABASE_URL=database_url, POLYCERT_ENVIRONMENT="test", POLYCERT_CHUNK_SIZE="4",
               POLYCERT_QUEUE_NAME=f"polycert-it-{uuid.uuid4().hex[:6]}", PYTHONPATH=str(ROOT))
    env.update(extra)
    if broker_url:
        env["POLYCERT_BROKER_URL"] = broker_url
    return env


@pytest.fixture
def workers(tmp_path):
    pool = None

    def make(env):
        nonlocal pool
        pool = Workers(env, tmp_path)
        return pool

    yield make
    if pool is not None:
        pool.stop_all()
