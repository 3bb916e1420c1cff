import pytest
from pydantic import ValidationError

from service.settings import DEVELOPMENT_TOKEN, Settings


def test_with_nothing_set_it_is_sqlite_in_the_data_dir_with_an_embedded_worker(tmp_path, monkeypatch):
    for var in ("POLYCERT_DATABASE_URL", "POLYCERT_BROKER_URL", "POLYCERT_ENVIRONMENT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("POLYCERT_DATA_DIR", str(tmp_path))
    s = Settings()
    assert s.resolved_database_url == f"sqlite:///{tmp_path / 'polycert.db'}"
    assert s.embedded


def test_production_refuses_the_development_token(monkeypatch):
    monkeypatch.setenv("POLYCERT_ENVIRONMENT", "production")
    monkeypatch.setenv("POLYCERT_DATABASE_URL", "postgresql+psycopg://db/polycert")
    monkeypatch.delenv("POLYCERT_API_TOKEN", raising=False)
    with pytest.raises(ValidationError, match="POLYCERT_API_TOKEN"):
        Settings()
    monkeypatch.setenv("POLYCERT_API_TOKEN", "a-real-secret-of-some-length")
    assert Settings().api_token != DEVELOPMENT_TOKEN


def test_chunk_limits_leave_every_query_its_own_time_limit():
    s = Settings(chunk_size=10, query_time_limit=5.0, task_time_slack=20.0)
    soft, hard = s.chunk_time_limits()
    assert soft == 10 * 5.0 + 20.0 and hard > soft
