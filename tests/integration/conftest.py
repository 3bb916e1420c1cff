"""Real PostgreSQL, Redis and Celery worker processes for the integration tests.

Under CI=true an unreachable server is a failure; locally the tests skip with the reason.
Each run creates its own PostgreSQL database (dropped at the end) and uses its own Redis database
and queue name, so it never touches anything else on the machine.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.live import Workers, postgres_database  # noqa: F401  (the shared launch code)

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
    with postgres_database(PG_ADMIN, prefix=f"polycert_it_{os.getpid()}") as url:
        from polycert.db.migrate import upgrade

        upgrade(url)
        yield url
        from polycert.db.session import get_engine

        get_engine.cache_clear()


@pytest.fixture(scope="session")
def redis_url():
    require_servers()
    import redis

    redis.Redis.from_url(REDIS).ping()
    # no flushdb: every test's queue name is its own (service_env), and a flush would drop the tasks of
    # another run sharing this Redis database (it did: a benchmark's queued chunks were lost)
    yield REDIS


def service_env(database_url: str, broker_url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYCERT_")}
    env.update(POLYCERT_DATABASE_URL=database_url, POLYCERT_ENVIRONMENT="test", POLYCERT_CHUNK_SIZE="4",
               POLYCERT_QUEUE_NAME=f"polycert-it-{uuid.uuid4().hex[:6]}", PYTHONPATH=str(ROOT))
    env.update(extra)
    if broker_url:
        env["POLYCERT_BROKER_URL"] = broker_url
    return env


def use_service_env(monkeypatch, env: dict[str, str]) -> None:
    """Make ``env``'s POLYCERT_* settings this process's (and only those: any other POLYCERT_* is removed)."""
    for key in [k for k in os.environ if k.startswith("POLYCERT_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("POLYCERT_"):
            monkeypatch.setenv(key, value)


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


# -- fault injection (tests/integration/test_faults.py) -------------------------------------------------
def require_binary(name: str, *candidates: str) -> str:
    """The path of a server binary the fault tests start themselves (``deploy/ensure-services.sh`` installs
    them); under CI=true a missing one is a failure, locally a skip."""
    import glob
    import shutil

    for pattern in candidates:
        for path in sorted(glob.glob(pattern), reverse=True):
            if os.access(path, os.X_OK):
                return path
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} not found (deploy/ensure-services.sh installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, timeout: float, what, interval: float = 0.05):
    """Poll ``condition()`` until it returns a true value (returned); AssertionError naming ``what`` (a text,
    or a function that gives it then: the processes' logs at the time of the failure) after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what() if callable(what) else what}: not after {timeout} s")
        time.sleep(interval)


class RedisServer:
    """A redis-server of the test's own, on a free port, configured as deploy/compose.yaml runs it (append-only
    file on): the test may stop and restart it without touching anyone else's Redis."""

    def __init__(self, directory: Path, *, persistent: bool = True) -> None:
        self.binary = require_binary("redis-server")
        self.directory, self.port, self.proc = directory, free_port(), None
        self.persistent = persistent  # False: a restart loses every queued message (Redis's own default)
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = open(self.directory / "redis.log", "ab")
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--appendonly", "yes" if self.persistent else "no", "--save", "", "--daemonize", "no"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: reachable("127.0.0.1", self.port), 30, f"redis-server on port {self.port}")

    def stop(self) -> None:
        """SIGTERM: Redis writes its append-only file and exits, as on a restart of its container."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


class PostgresCluster:
    """A throwaway PostgreSQL cluster (initdb in a temporary directory, a free port), for a test that restarts
    its server. Run as the ``postgres`` user when the tests run as root (initdb refuses root)."""

    def __init__(self) -> None:
        import tempfile

        self.bin = Path(require_binary("pg_ctl", "/usr/lib/postgresql/*/bin/pg_ctl")).parent
        self.directory = Path(tempfile.mkdtemp(prefix="polycert-pg-"))
        self.port = free_port()
        self.data = self.directory / "data"
        if os.geteuid() == 0:
            import pwd

            user = pwd.getpwnam("postgres")
            os.chown(self.directory, user.pw_uid, user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=self.directory)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {done.stdout}{done.stderr}")

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.directory / "server.log"), "-o", options, "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        import shutil

        try:
            self.stop()
        except RuntimeError:
            pass
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def fault_seed(request) -> int:
    """The seed that draws where a fault test strikes: ``POLYCERT_FAULT_SEED`` to replay a run, else random;
    printed (pytest shows it with a failure) so any run can be replayed."""
    import random

    seed = int(os.environ.get("POLYCERT_FAULT_SEED") or random.SystemRandom().randrange(2**32))
    print(f"{request.node.nodeid}: POLYCERT_FAULT_SEED={seed}")
    return seed
