"""Thin Celery tasks: they take ids, open a session, and call :func:`workers.execution.run_chunk`."""

from __future__ import annotations

import logging
import random

from billiard.exceptions import TimeLimitExceeded
from celery import Task
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from polycert.db.session import get_engine, session_factory
from polycert.settings import get_settings

from .app import CHUNK_TASK, app
from .execution import give_up_chunk, record_failure, run_chunk

logger = logging.getLogger(__name__)


class ChunkTask(Task):
    """The chunk task's failure hook, for the one failure its own code cannot see: the hard time limit.

    A back-end stuck in native code ignores the soft limit; at the hard limit the pool kills the process and
    Celery acknowledges the message (no redelivery). This hook then runs in the worker's main process: the
    chunk's unanswered queries are answered ``unknown (time limit)`` and the chunk finished, so that the job
    ends instead of waiting for them forever."""

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        if isinstance(exc, TimeLimitExceeded) and args:
            try:
                give_up_chunk(get_engine(get_settings().resolved_database_url), int(args[0]),
                              f"the chunk reached its hard time limit ({exc.args[0] if exc.args else '?'} s): "
                              f"its process was killed")
            except SQLAlchemyError as error:  # the database is away too: said loudly, the chunk stays running
                logger.error("chunk %s reached its hard time limit and could not be given up: %s", args[0], error)


def retry_countdown(retries: int) -> float:
    """Seconds before retry ``retries + 1`` of a chunk whose database went away: exponential back-off with
    full jitter (2, 4, 8, ... s, at most ``task_retry_backoff_max``) for the first ``task_max_retries``,
    then every ``task_retry_backoff_max`` seconds for as long as the database stays away. A chunk never
    gives up on its database: a task that did would be acknowledged with its chunk left running, and its
    job would never end (no one could record the failure either: the database is the one that is away)."""
    settings = get_settings()
    cap = settings.task_retry_backoff_max
    if retries >= settings.task_max_retries:
        return cap
    return random.uniform(0, min(cap, 2.0 * 2**retries))


@app.task(name=CHUNK_TASK, base=ChunkTask, bind=True, acks_late=True, max_retries=None)
def run_chunk_task(self, chunk_id: int) -> str:
    engine = get_engine(get_settings().resolved_database_url)
    with session_factory(engine)() as session:
        try:
            return run_chunk(session, int(chunk_id), retries=int(self.request.retries or 0)).status
        except OperationalError as exc:  # the database went away or was locked: transient, wait for it
            raise self.retry(exc=exc, countdown=retry_countdown(int(self.request.retries or 0))) from None
        except Exception as exc:  # a bug or a broken install: fail the job visibly instead of hanging it
            record_failure(session, int(chunk_id), exc)
            raise
