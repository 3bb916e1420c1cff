"""The browser tests' set-up: without a Chromium they skip on a developer's machine and fail under CI=true."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.live import ROOT

PROBE = "from tests.dashboard import browser\n\ndef test_probe():\n    browser.chromium_executable()\n"


@pytest.mark.parametrize("ci, outcome", [("true", "1 failed"), ("", "1 skipped")])
def test_a_missing_browser_skips_but_fails_under_ci(tmp_path, ci, outcome):
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "POLYCERT_CHROMIUM": str(tmp_path / "no-chromium"), "CI": ci}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", str(probe)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert outcome in result.stdout, result.stdout + result.stderr
    assert f"no Chromium at {tmp_path / 'no-chromium'}" in result.stdout
    assert ("[CI=true: a missing browser is a failure]" in result.stdout) == (ci == "true")
