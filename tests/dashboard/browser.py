"""Headless Chromium for the dashboard's browser tests: Debian's ``chromium`` (installed by the test set-up,
``deploy/ensure-services.sh``) driven by Playwright's Python package. A missing browser skips the tests on
a developer's machine and fails them under ``CI=true``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("POLYCERT_CHROMIUM", "/usr/bin/chromium"))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def missing(why: str) -> None:
    message = f"{why}: the dashboard's browser tests need it (tests/run installs it; apt-get install -y chromium)"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " [CI=true: a missing browser is a failure]")
    pytest.skip(message)


def chromium_executable() -> str:
    """The Chromium binary, or skip (fail under CI=true) naming what is missing."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing("the Python package playwright is not installed (pip install -e '.[dev]')")
    if not CHROMIUM.is_file() or not os.access(CHROMIUM, os.X_OK):
        missing(f"no Chromium at {CHROMIUM}")
    return str(CHROMIUM)


def launch(playwright):
    return playwright.chromium.launch(executable_path=chromium_executable(), args=ARGS)
