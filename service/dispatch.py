"""Where a job's chunks go: Celery by task name (the API never imports worker code), or the embedded
in-process pool when no broker is configured."""

from __future__ import annotations

import threading
from typing import Sequence

from celery import Celery

from polycert.settings import Settings

CHUNK_TASK = "polycert.run_chunk"  # the name workers.tasks registers


class CeleryDispatcher:
    def __init__(self, settings: Settings) -> None:
        self.queue = settings.queue_name
        self.client = Celery("polycert-client", broker=settings.broker_url)
        self.client.conf.update(
            broker_transport_options={"visibility_timeout": settings.visibility_timeout},
            broker_connection_retry=False, broker_connection_max_retries=1, task_serializer="json",
        )

    def connect(self) -> None:
        """Import the transport and open the producer's connection now, so that the first submission
        costs what every later one does (the first ``send_task`` otherwise pays ~70 ms of imports)."""
        with self.client.producer_or_acquire() as producer:
            producer.connection.ensure_connection(max_retries=1)

    def enqueue(self, chunk_ids: list[int], time_limits: Sequence[tuple[float, float]] | None = None) -> None:
        """One task per chunk; ``time_limits`` are each chunk's (soft, hard) seconds (the workers' defaults
        when not given)."""
        with self.client.producer_or_acquire() as producer:
            for i, chunk_id in enumerate(chunk_ids):
                limits = {} if time_limits is None else dict(soft_time_limit=time_limits[i][0], time_limit=time_limits[i][1])
                self.client.send_task(CHUNK_TASK, args=[int(chunk_id)], queue=self.queue, producer=producer,
                                      retry=True, retry_policy={"max_retries": 2, "interval_start": 0.2}, **limits)


_lock = threading.Lock()
_dispatchers: dict[tuple[str | None, str], object] = {}


def get_dispatcher(settings: Settings):
    """One dispatcher per (broker, database) and process; the embedded pool is created on first use."""
    key = (settings.broker_url, settings.resolved_database_url)
    with _lock:
        if key not in _dispatchers:
            if settings.embedded:
                from polycert.workers.embedded import EmbeddedPool

                _dispatchers[key] = EmbeddedPool(settings.resolved_database_url, settings.embedded_workers)
            else:
                _dispatchers[key] = CeleryDispatcher(settings)
        return _dispatchers[key]


def reset_dispatchers() -> None:
    """Shut down embedded pools (tests, and the CLI on exit)."""
    with _lock:
        for dispatcher in _dispatchers.values():
            shutdown = getattr(dispatcher, "shutdown", None)
            if shutdown:
                shutdown()
        _dispatchers.clear()
