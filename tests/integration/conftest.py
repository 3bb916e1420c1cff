"""Real PostgreSQL, Redis and Celery worker processes for the integration tests.

Under CI=true an unreachable server is a failure; locally the tests skip with the reason.
Each run creates its own PostgreSQL database (dropped at the end) and uses its own Redis database
and queue name, so it never touches anything else on the machine.
"""

from __future__ import annotations

import os
import socket
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

    client = redis.Redis.from_url(REDIS)
    client.flushdb()
    yield REDIS
    client.flushdb()


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
