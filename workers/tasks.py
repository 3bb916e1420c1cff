"""Thin Celery tasks: they take ids, open a session, and call :func:`workers.execution.run_chunk`."""

from __future__ import annotations

from billiard.exceptions import TimeLimitExceeded
from celery import Task
from sqlalchemy.exc import OperationalError

from polycert.db.session import get_engine, session_factory
from polycert.settings import get_settings

from .app import CHUNK_TASK, app
from .execution import give_up_chunk, record_failure, run_chunk


class ChunkTask(Task):
    """The chunk task's failure hook, for the one failure its own code cannot see: the hard time limit.

    A back-end stuck in native code ignores the soft limit; at the hard limit the pool kills the process and
    Celery acknowledges the message (no redelivery). This hook then runs in the worker's main process: the
    chunk's unanswered queries are answered ``unknown (time limit)`` and the chunk finished, so that the job
    ends instead of waiting for them forever."""

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        if isinstance(exc, TimeLimitExceeded) and args:
            give_up_chunk(get_engine(get_settings().resolved_database_url), int(args[0]),
                          f"the chunk reached its hard time limit ({exc.args[0] if exc.args else '?'} s): "
                          f"its process was killed")


@app.task(
    name=CHUNK_TASK,
    base=ChunkTask,
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
            return run_chunk(session, int(chunk_id), retries=int(self.request.retries or 0)).status
        except OperationalError:
            raise  # transient: retried with back-off
        except Exception as exc:  # a bug or a broken install: fail the job visibly instead of hanging it
            record_failure(session, int(chunk_id), exc)
            raise
