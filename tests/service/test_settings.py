import pytest
from pydantic import ValidationError

from polycert.settings import DEVELOPMENT_TOKEN, Settings


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


def test_cascade_options_mirror_the_engine_settings_and_cap_the_time_per_query(monkeypatch):
    from dataclasses import fields

    from polycert.formulations.cascade import CascadeSettings

    from polycert.settings import CascadeOptions

    from polycert.formulations.cascade import JOB_FIELDS

    engine_defaults = {f.name: f.default for f in fields(CascadeSettings) if f.name not in JOB_FIELDS}
    options = CascadeOptions()
    assert set(options.model_dump()) == set(engine_defaults)
    derived = {"mip_time_limit"}  # None here: derived from the per-query time limit
    assert {k: v for k, v in options.model_dump().items() if k not in derived} == \
        {k: v for k, v in engine_defaults.items() if k not in derived}
    monkeypatch.setenv("POLYCERT_CASCADE", '{"branch_node_limit": 5, "mip_time_limit": 2.0}')
    s = Settings()
    engine = s.cascade.engine_settings(query_time_limit=30.0, n_targets=9)
    assert engine.branch_node_limit == 5 and engine.mip_time_limit == 2.0 and engine.lp_time_limit == 10.0
    assert s.cascade.engine_settings(query_time_limit=9.0, n_targets=9).mip_time_limit == 1.0
    per_job = s.cascade.engine_settings(query_time_limit=9.0, n_targets=9, answer="verdict")
    assert per_job.query_time_limit == 9.0 and per_job.answer == "verdict"
    monkeypatch.setenv("POLYCERT_CASCADE", '{"attack_stepz": 5}')
    with pytest.raises(ValidationError, match="attack_stepz"):
        Settings()


def test_the_fault_injection_hook_is_refused_outside_the_test_environment(monkeypatch):
    monkeypatch.setenv("POLYCERT_FAULT_INJECT", "exit:3")
    for environment in ("development", "production"):
        monkeypatch.setenv("POLYCERT_ENVIRONMENT", environment)
        monkeypatch.setenv("POLYCERT_API_TOKEN", "a-real-secret-of-some-length")
        monkeypatch.setenv("POLYCERT_DATABASE_URL", "postgresql+psycopg://db/polycert")
        with pytest.raises(ValidationError, match="POLYCERT_FAULT_INJECT is a test hook"):
            Settings()
    monkeypatch.setenv("POLYCERT_ENVIRONMENT", "test")
    assert Settings().fault_inject == "exit:3"


def test_a_fault_injection_spec_names_an_action_and_items():
    from polycert.workers.faults import parse

    assert parse("hang:3,7") == ("hang", frozenset({3, 7}))
    with pytest.raises(ValueError, match="ACTION:ITEMS"):
        parse("explode:3")
