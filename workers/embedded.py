"""The embedded worker: an in-process pool that runs the same :func:`run_chunk` as the Celery task.

Used when no broker is configured (one machine, SQLite, no server). Chunks run on background threads
(the solvers release the GIL while they work); transient database errors are retried like the task's.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from sqlalchemy.exc import OperationalError

from polycert.db.session import get_engine, session_factory

from .execution import ChunkOutcome, Certify, CertifyBatch, record_failure, run_chunk

RETRIES = 5


class EmbeddedPool:
    def __init__(self, database_url: str, workers: int = 1, *, certify: Certify | None = None,
                 certify_batch: CertifyBatch | None = None) -> None:
        self.database_url = database_url
        self.certify, self.certify_batch = certify, certify_batch
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="polycert-worker")
        self._futures: list[Future] = []
        self._lock = threading.Lock()

    def enqueue(self, chunk_ids: list[int], time_limits=None) -> None:
        """Run the chunks on the pool's threads (threads cannot be interrupted: ``time_limits`` are not
        enforced here; the engine's own per-query limits still hold)."""
        with self._lock:
            self._futures.extend(self._executor.submit(self._run, cid) for cid in chunk_ids)

    def _run(self, chunk_id: int) -> ChunkOutcome:
        engine = get_engine(self.database_url)
        for attempt in range(RETRIES + 1):
            try:
                with session_factory(engine)() as session:
                    try:
                        return run_chunk(session, chunk_id, certify=self.certify, certify_batch=self.certify_batch,
                                         worker="embedded", retries=attempt)
                    except OperationalError:
                        raise
                    except Exception as exc:
                        record_failure(session, chunk_id, exc)
                        raise
            except OperationalError:
                if attempt == RETRIES:
                    raise
                time.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    def wait(self, timeout: float | None = None) -> list[ChunkOutcome]:
        """Block until every enqueued chunk has run; re-raises the first failure."""
        with self._lock:
            futures, self._futures = self._futures, []
        return [f.result(timeout=timeout) for f in futures]

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
