"""PolyCert's version: the installed distribution's, else pyproject.toml's (a checkout run without installing)."""

from __future__ import annotations

import functools
import re
from pathlib import Path


@functools.cache
def polycert_version() -> str:
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    if pyproject.exists():  # a checkout: its own pyproject, even if another version is installed
        match = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(), re.MULTILINE)
        if match:
            return match.group(1)
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("polycert")
    except PackageNotFoundError:
        return "unknown"
