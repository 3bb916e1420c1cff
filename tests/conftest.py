"""Fixtures shared by the service and worker tests: embedded settings on a fresh, migrated SQLite file."""

from __future__ import annotations

import pytest

from service.db.migrate import upgrade
from service.db.session import make_engine, session_factory
from service.settings import get_settings


@pytest.fixture
def settings(tmp_path, monkeypatch):
    """Embedded default settings on a fresh, migrated SQLite file."""
    for var in ("POLYCERT_DATABASE_URL", "POLYCERT_BROKER_URL", "POLYCERT_ENVIRONMENT", "POLYCERT_API_TOKEN"):
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
