"""Workers: the Celery app and its thin tasks, and the embedded in-process pool; both run
:func:`workers.execution.run_chunk`."""
