"""Fixtures shared by the service and worker tests: embedded settings on a fresh, migrated SQLite file."""

from __future__ import annotations

import pytest
from hypothesis import settings as hypothesis_settings

from polycert.db.migrate import upgrade
from polycert.db.session import make_engine, session_factory
from polycert.settings import get_settings

# hypothesis' default 200 ms deadline per example is a timing assertion: on a loaded machine (CI's, or this
# one running a benchmark) pure functions took 280 ms and failed. Timings belong in bench/; tests assert
# behaviour. (Tests that set their own settings keep them.)
hypothesis_settings.register_profile("polycert", deadline=None)
hypothesis_settings.load_profile("polycert")


@pytest.fixture
def settings(tmp_path, monkeypatch):
    """Embedded default settings on a fresh, migrated SQLite file."""
    # POLYCERT_URL / POLYCERT_TOKEN too: a shell that names a server would send the CLI tests to it
    for var in ("POLYCERT_DATABASE_URL", "POLYCERT_BROKER_URL", "POLYCERT_ENVIRONMENT", "POLYCERT_API_TOKEN",
                "POLYCERT_URL", "POLYCERT_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("POLYCERT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("POLYCERT_CHUNK_SIZE", "3")
    get_settings.cache_clear()
    s = get_settings()
    upgrade(s.resolved_database_url)
    yield s
    get_settings.cache_clear()


@pytest.fixture
def engine(settings):
    engine = make_engine(settings.resolved_database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine):
    with session_factory(engine)() as session:
        yield session
