"""The chunk task's retry policy for a database that went away (the outage itself, against a real
PostgreSQL, is tests/integration/test_faults.py)."""

from polycert.settings import get_settings
from polycert.workers.tasks import retry_countdown


def test_a_chunk_backs_off_then_keeps_waiting_for_its_database_at_the_cap_and_never_gives_up(monkeypatch):
    monkeypatch.setenv("POLYCERT_TASK_MAX_RETRIES", "3")
    monkeypatch.setenv("POLYCERT_TASK_RETRY_BACKOFF_MAX", "5")
    get_settings.cache_clear()
    try:
        for retries, ceiling in ((0, 2.0), (1, 4.0), (2, 5.0)):  # 2, 4, 8 s with full jitter, capped at 5
            assert all(0 <= retry_countdown(retries) <= ceiling for _ in range(200))
        assert [retry_countdown(n) for n in (3, 10, 1000)] == [5.0, 5.0, 5.0]
    finally:
        get_settings.cache_clear()
    from polycert.workers.tasks import run_chunk_task

    assert run_chunk_task.max_retries is None  # Celery's own limit would acknowledge the task, its chunk left running
