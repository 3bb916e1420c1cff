"""Faults injected into the engine call, for the fault tests (``tests/integration/test_faults.py``) only.

``Settings.fault_inject`` (``POLYCERT_FAULT_INJECT``, refused unless ``POLYCERT_ENVIRONMENT=test``) is
``ACTION:ITEMS``: when the engine is about to answer a query whose ``item`` (its input's position in the
job) is one of ``ITEMS`` (comma-separated), the worker process

- ``sleep``: sleeps for an hour, as a back-end that ignores its time limit but lets Python's signals in
  (Celery's soft time limit interrupts it);
- ``hang``: sleeps for an hour with the soft time limit's signal blocked, as a back-end stuck in native
  code (only the hard time limit, which kills the process, ends it);
- ``exit``: ends at once (``os._exit``), as a process that dies under the engine;
- ``segv``: kills itself with SIGSEGV, as a solver that crashes.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Sequence

from polycert.settings import get_settings

ACTIONS = ("sleep", "hang", "exit", "segv")
HOUR = 3600.0


def parse(spec: str) -> tuple[str, frozenset[int]]:
    action, _, items = spec.partition(":")
    if action not in ACTIONS or not items:
        raise ValueError(f"POLYCERT_FAULT_INJECT={spec!r}: expected ACTION:ITEMS with ACTION one of {', '.join(ACTIONS)}")
    return action, frozenset(int(i) for i in items.split(","))


def strike(items: Sequence[int]) -> None:
    """Inject the configured fault if the engine is about to answer one of its items; else nothing."""
    spec = get_settings().fault_inject
    if not spec:
        return
    action, targets = parse(spec)
    if targets.isdisjoint(int(i) for i in items):
        return
    if action == "sleep":
        time.sleep(HOUR)
    elif action == "hang":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})  # billiard's soft time limit
        time.sleep(HOUR)
    elif action == "exit":
        os._exit(70)
    else:
        os.kill(os.getpid(), signal.SIGSEGV)
        time.sleep(HOUR)
