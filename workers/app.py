"""The Celery app, configured from :mod:`service.settings`.

Reliability settings (as in well-kept Celery projects): ``acks_late`` + ``task_reject_on_worker_lost``
so a task whose worker dies is delivered again; prefetch 1 so a worker holds one chunk at a time;
Redis' ``visibility_timeout`` decides how soon an unacknowledged task is redelivered; soft and hard
time limits per chunk from the per-query limit. Results are not kept in the broker: progress and
answers live in the database.

What each fault ends as (tests/integration/test_faults.py): a chunk killed at its hard time limit is
answered ``unknown (time limit)`` by the worker's main process (``workers.tasks.ChunkTask``); a query that
takes its pool process down on every delivery is answered ``unknown (solver error)`` after
``chunk_max_attempts`` lost deliveries, the rest of its chunk answered (``workers.execution.run_chunk``);
a chunk whose database went away waits for it (``workers.tasks.retry_countdown``).

Start a worker with ``polycert worker`` or ``celery -A workers.app worker``.
"""

from __future__ import annotations

import logging
import sys

from celery import Celery
from celery.signals import worker_init, worker_process_init

from polycert.settings import get_settings

CHUNK_TASK = "polycert.run_chunk"
logger = logging.getLogger(__name__)


def make_celery() -> Celery:
    settings = get_settings()
    soft, hard = settings.chunk_time_limits()
    app = Celery("polycert", broker=settings.broker_url or "memory://", include=["polycert.workers.tasks"])
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue=settings.queue_name,
        task_soft_time_limit=soft,
        task_time_limit=hard,
        # a worker SIGKILLed while it holds Redis' restore mutex would block redelivery for the mutex's
        # default 300 s: let the mutex expire with the visibility timeout instead
        # and sweep for abandoned tasks every min(60, visibility timeout) seconds, every sweep a scan: kombu's
        # defaults (interval 10 s, a scan every 10th sweep) left a dead worker's chunk waiting ~100 s
        broker_transport_options={"visibility_timeout": settings.visibility_timeout,
                                  "unacked_mutex_expire": min(300, settings.visibility_timeout),
                                  "unacked_restore_interval": max(1, min(60, settings.visibility_timeout)),
                                  "unacked_restore_throttle": 1},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_serializer="json",
        accept_content=["json"],
    )
    return app


app = make_celery()


@worker_init.connect
def _refuse_unmigrated_database(**_kwargs) -> None:
    """A worker on a database without the schema would fail every task: refuse to start instead."""
    from polycert.db.migrate import DatabaseNotMigratedError, ensure_migrated
    from polycert.db.session import get_engine

    engine = get_engine(get_settings().resolved_database_url)
    try:
        ensure_migrated(engine)
    except DatabaseNotMigratedError as exc:
        print(f"polycert worker: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    engine.dispose()  # the pool processes forked next open their own connections


@worker_process_init.connect
def _load_the_engine(**_kwargs) -> None:
    """Make a new pool process ready for its first chunk before it takes one:

    - forget the database connections inherited from the parent (which checked the schema before forking):
      two processes on one socket corrupt each other's conversations with the server; then open this
      process' own connection;
    - import the engine (seconds of imports) and run it once on a toy query, so that its lazy imports and
      caches are not paid inside the first chunk;
    - freeze what is loaded: the garbage collector's full passes stop walking Celery's, SQLAlchemy's and the
      solvers' module objects (hundreds of thousands of them, none of which will ever be garbage).
    """
    import gc

    from polycert.db.session import get_engine
    from polycert.workers.execution import default_certify, default_certify_batch, warm_up

    engine = get_engine(get_settings().resolved_database_url)
    engine.dispose(close=False)  # the parent's connections stay the parent's
    default_certify()
    try:  # a head start only: a database or solver that is not there yet fails the chunks, visibly, instead
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
        warm_up(default_certify_batch())
    except Exception as exc:  # noqa: BLE001
        logger.warning("worker warm-up skipped: %s: %s", type(exc).__name__, exc)
    gc.collect()
    gc.freeze()
