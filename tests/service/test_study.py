"""polycert study: Wilson intervals, per-digit samples, rate tables, and a small end-to-end report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from polycert.formulations.errors import InvalidInputError
from polycert.cli import app
from polycert.study import QueryOutcome, StudyOptions, first_per_digit, rate_rows, run_study, wilson_interval


def test_wilson_interval_matches_the_closed_form_values():
    lo, hi = wilson_interval(5, 10)
    assert (float(lo), float(hi)) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    lo, hi = wilson_interval(0, 10)
    assert float(lo) == 0.0 and float(hi) == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_interval(0, 0)
    assert (float(lo), float(hi)) == (0.0, 1.0)


@pytest.mark.parametrize("k,n", [(1, 3), (17, 600), (599, 600), (600, 600)])
def test_wilson_interval_contains_the_estimate_and_stays_in_unit_range(k, n):
    lo, hi = wilson_interval(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_first_per_digit_takes_the_first_images_of_each_digit_in_order():
    y = np.array([3, 1, 3, 0, 1, 3, 0, 2, 2, 1])
    idx = first_per_digit(y, 2, 4)
    assert list(idx) == [3, 6, 1, 4, 7, 8, 0, 2]
    with pytest.raises(InvalidInputError):
        first_per_digit(y, 0)


def test_rate_rows_count_verdicts_per_digit_and_flag_refuted_flawed_claims():
    out = QueryOutcome(
        index=np.arange(4), label=np.array([0, 0, 1, 1]), eps=0.1,
        symbolic=np.array([True, False, False, False]), lp_verified=np.array([True, True, False, False]),
        status=np.array(["verified", "verified", "falsified", "unknown"], dtype=object),
        attack_found=np.array([False, False, True, False]), flawed_checked=np.ones(4, bool),
        flawed_verified=np.array([True, True, True, False]), flawed_infeasible=np.zeros(4, bool))
    rows = {r["digit"]: r for r in rate_rows([out], 2)}
    assert rows[0]["lp_verified"] == 2 and rows[0]["mip_verified"] == 2 and rows[0]["falsified"] == 0
    assert rows[1]["falsified"] == 1 and rows[1]["unknown"] == 1 and rows[1]["flawed_refuted"] == 1
    assert rows["all"]["n"] == 4 and rows["all"]["flawed_verified"] == 3 and rows["all"]["flawed_refuted"] == 1
    assert rows["all"]["lp_verified_rate"] == 0.5
    lo, hi = rows["all"]["lp_verified_ci"]
    assert lo < 0.5 < hi


@pytest.mark.slow
def test_study_command_writes_a_report_with_tables_and_figures(tmp_path):
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["study", "--network", "polycert-tiny", "--out", str(out), "--per-digit", "2",
                                      "--eps", "0.01", "--eps", "0.05", "--signature-per-digit", "1",
                                      "--classifier-per-digit", "1", "--lam", "0.1", "--mip-time-limit", "2",
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    text = (out / "README.md").read_text()
    for heading in ("Robustness rates", "published rates", "Signatures", "LP as a classifier", "system-level", "Neuron patterns"):
        assert heading in text
    for png in ("robustness.png", "signatures.png", "activity.png", "ideal.png", "neurons.png"):
        assert (out / png).stat().st_size > 1000
    results = json.loads((out / "results.json").read_text())
    everything = [r for r in results["rates"] if r["digit"] == "all"]
    assert [r["n"] for r in everything] == [20, 20]
    for r in everything:
        assert r["mip_verified"] + r["falsified"] + r["unknown"] + r["errors"] == r["n"]
        assert r["lp_verified"] <= r["mip_verified"]


def test_study_command_rejects_an_unknown_network(tmp_path):
    result = CliRunner().invoke(app, ["study", "--network", "no-such-net", "--out", str(tmp_path), "--no-progress"])
    assert result.exit_code == 4
