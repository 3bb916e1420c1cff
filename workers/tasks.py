"""Thin Celery tasks: they take ids, open a session, and call :func:`workers.execution.run_chunk`."""

from __future__ import annotations

from sqlalchemy.exc import OperationalError

from polycert.db.session import get_engine, session_factory
from polycert.settings import get_settings

from .app import CHUNK_TASK, app
from .execution import record_failure, run_chunk


@app.task(
    name=CHUNK_TASK,
    bind=True,
    acks_late=True,
    autoretry_for=(OperationalError,),  # the database went away or was locked: transient
    retry_backoff=2,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=get_settings().task_max_retries,
)
def run_chunk_task(self, chunk_id: int) -> str:
    engine = get_engine(get_settings().resolved_database_url)
    with session_factory(engine)() as session:
        try:
            return run_chunk(session, int(chunk_id)).status
        except OperationalError:
            raise  # transient: retried with back-off
        except Exception as exc:  # a bug or a broken install: fail the job visibly instead of hanging it
            record_failure(session, int(chunk_id), exc)
            raise
