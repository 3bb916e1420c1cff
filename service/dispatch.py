"""Where a job's chunks go: Celery by task name (the API never imports worker code), or the embedded
in-process pool when no broker is configured."""

from __future__ import annotations

import threading

from celery import Celery

from service.settings import Settings

CHUNK_TASK = "polycert.run_chunk"  # the name workers.tasks registers


class CeleryDispatcher:
    def __init__(self, settings: Settings) -> None:
        self.queue = settings.queue_name
        self.client = Celery("polycert-client", broker=settings.broker_url)
        self.client.conf.update(
            broker_transport_options={"visibility_timeout": settings.visibility_timeout},
            broker_connection_retry=False, broker_connection_max_retries=1, task_serializer="json",
        )

    def enqueue(self, chunk_ids: list[int]) -> None:
        with self.client.producer_or_acquire() as producer:
            for chunk_id in chunk_ids:
                self.client.send_task(CHUNK_TASK, args=[int(chunk_id)], queue=self.queue, producer=producer,
                                      retry=True, retry_policy={"max_retries": 2, "interval_start": 0.2})


_lock = threading.Lock()
_dispatchers: dict[tuple[str | None, str], object] = {}


def get_dispatcher(settings: Settings):
    """One dispatcher per (broker, database) and process; the embedded pool is created on first use."""
    key = (settings.broker_url, settings.resolved_database_url)
    with _lock:
        if key not in _dispatchers:
            if settings.embedded:
                from workers.embedded import EmbeddedPool

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
