"""The LP-versus-MIP comparison's arithmetic on rows built here (service/reports.py): per-row fields, the
summary's counts, the relaxation gap's median / 90th percentile / maximum, filters. The same report through a
real server process is in test_comparison_live.py."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from polycert import reports


def cert(verdict: str, lower: float, upper: float = math.inf, stage: str = "mip", extra=None) -> SimpleNamespace:
    return SimpleNamespace(verdict=verdict, lower=lower, upper=upper, gap=upper - lower, stage=stage, extra=extra)


def pair(lp=("verified", 0.5), mip=("verified", 0.5, 0.9), *, eps=0.01, label=0, item=0, lp_stage="lp", mip_stage="mip"):
    """A comparison row through reports.comparison_row, from (verdict, lower) of each method (None: pending)."""
    query = SimpleNamespace(item=item, source_index=item, label=label, eps=eps)
    lp_cert = None if lp is None else cert(*lp, stage=lp_stage)
    mip_cert = None if mip is None else cert(*mip, stage=mip_stage)
    return reports.comparison_row(query, lp_cert, mip_cert)


def test_a_row_carries_the_lp_bound_the_mip_bracket_and_their_difference():
    row = pair(("unknown", -0.25), ("verified", 0.5, 0.75))
    assert (row.lp_verdict, row.lp_lower, row.mip_verdict, row.mip_lower, row.mip_upper) == ("unknown", -0.25, "verified", 0.5, 0.75)
    assert row.relaxation_gap == pytest.approx(0.75)
    assert row.agreement == "lp_inconclusive" and row.differ and not row.misclassified and not row.negative_gap


def test_an_infinite_or_missing_bound_gives_no_gap():
    assert pair(("falsified", -math.inf), ("falsified", -2.0)).relaxation_gap is None
    assert pair(("falsified", -1.0), ("falsified", -math.inf)).relaxation_gap is None
    pending = pair(("verified", 0.3), None)
    assert pending.relaxation_gap is None and pending.agreement == "pending" and not pending.differ


def test_a_falsification_at_the_centre_marks_the_input_misclassified():
    assert pair(("falsified", -math.inf), ("falsified", -math.inf), lp_stage="center", mip_stage="center").misclassified
    assert not pair(("falsified", -1.0), ("falsified", -1.0), lp_stage="attack", mip_stage="attack").misclassified


def test_the_median_90th_percentile_and_maximum_are_over_the_pairs_with_a_gap():
    gaps = [0.0, 0.1, 0.2, 0.5, 1.0, 0.05, 0.3]
    rows = [pair(("unknown", -g), ("verified", 0.0), item=i) for i, g in enumerate(gaps)]
    rows.append(pair(("falsified", -math.inf), ("falsified", -math.inf), item=99))  # no gap: left out
    total = reports.summarise(rows)["total"]
    assert total["gaps"] == len(gaps)
    assert total["gap_median"] == pytest.approx(float(np.median(gaps)))
    assert total["gap_p90"] == pytest.approx(float(np.percentile(gaps, 90)))
    assert total["gap_max"] == pytest.approx(1.0)


@pytest.mark.parametrize("values", [[3.0], [1.0, 2.0], [5.0, -1.0, 2.5, 7.0], list(np.linspace(-3, 8, 11))])
@pytest.mark.parametrize("q", [0, 37.5, 50, 90, 100])
def test_percentile_interpolates_between_order_statistics_as_numpy_does(values, q):
    assert reports.percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_no_gap_at_all_gives_no_statistics():
    total = reports.tally([pair(("falsified", -math.inf), ("falsified", -math.inf))])
    assert (total["gaps"], total["gap_median"], total["gap_p90"], total["gap_max"]) == (0, None, None, None)


def test_misclassified_inputs_are_counted_apart_from_falsified_ones():
    rows = [
        pair(("falsified", -math.inf), ("falsified", -math.inf), lp_stage="center", mip_stage="center"),
        pair(("falsified", -math.inf), ("falsified", -math.inf), lp_stage="center", mip_stage="center", eps=0.03),
        pair(("falsified", -2.0), ("falsified", -1.5), lp_stage="attack", mip_stage="attack"),
        pair(("verified", 0.4), ("verified", 0.4)),
    ]
    total = reports.tally(rows)
    assert total["misclassified"] == 2 and total["falsified"] == 1 and total["verified"] == 1
    assert total["mip_falsified"] == 3  # the per-method count still sees every MIP falsification


def test_the_outcomes_partition_the_pairs_and_the_per_method_counts_say_who_proved_what():
    rows = [
        pair(("verified", 0.4), ("verified", 0.45)),
        pair(("unknown", -0.1), ("verified", 0.2)),
        pair(("unknown", -0.1), ("unknown", -0.05)),
        pair(("unknown", -0.3), ("falsified", -0.2)),
        pair(("falsified", -1.0), ("falsified", -1.0), lp_stage="center", mip_stage="center"),
        pair(("verified", 0.1), None),
    ]
    t = reports.tally(rows)
    assert (t["pairs"], t["answered"], t["pending"]) == (6, 5, 1)
    assert (t["verified"], t["falsified"], t["unknown"], t["misclassified"], t["conflicts"]) == (2, 1, 1, 1, 0)
    assert sum(t[k] for k in ("pending", "misclassified", "verified", "falsified", "unknown", "conflicts")) == t["pairs"]
    assert (t["lp_verified"], t["mip_verified"], t["mip_only_verified"], t["lp_only_verified"]) == (2, 2, 1, 0)


def test_a_conflict_and_a_negative_gap_beyond_the_tolerance_are_flagged():
    conflict = pair(("verified", 0.2), ("falsified", -0.5))
    below = pair(("verified", 1.0), ("verified", 1.0 - 3e-4))  # 3e-4 > 1e-4 * (1 + 1.0)
    within = pair(("verified", 1.0), ("verified", 1.0 - 1.5e-4))  # inside the exact bracket's tolerance
    assert conflict.agreement == "conflict" and conflict.differ
    assert conflict.negative_gap  # a falsified MIP's lower bound is below a verified LP's: both flags
    assert below.negative_gap and not within.negative_gap
    total = reports.tally([conflict, below, within])
    assert total["conflicts"] == 1 and total["negative_gaps"] == 2


def test_the_summary_per_eps_and_per_digit_adds_up_to_the_total():
    rows = [pair(("unknown", -0.1 * i), ("verified", 0.01 * i), eps=eps, label=i % 3, item=i)
            for i, eps in enumerate([0.01, 0.03, 0.01, 0.03, 0.05, 0.01, 0.03])]
    summary = reports.summarise(rows)
    assert [g["eps"] for g in summary["by_eps"]] == [0.01, 0.03, 0.05]
    assert [g["digit"] for g in summary["by_digit"]] == [0, 1, 2]
    for key in ("pairs", "verified", "mip_only_verified", "gaps"):
        assert sum(g[key] for g in summary["by_eps"]) == summary["total"][key]
        assert sum(g[key] for g in summary["by_digit"]) == summary["total"][key]
    eps_01 = [r.relaxation_gap for r in rows if r.eps == 0.01]
    assert summary["by_eps"][0]["gap_max"] == pytest.approx(max(eps_01))
    assert summary["tolerance"] == reports.GAP_TOLERANCE


def test_rows_are_selected_by_difference_eps_and_digit():
    rows = [pair(("verified", 0.3), ("verified", 0.3), eps=0.01, label=1),
            pair(("unknown", -0.2), ("verified", 0.1), eps=0.03, label=1),
            pair(("unknown", -0.2), ("unknown", -0.1), eps=0.03, label=2)]
    assert reports.select_rows(rows, differ=True) == [rows[1]]
    assert reports.select_rows(rows, differ=False) == [rows[0], rows[2]]
    assert reports.select_rows(rows, eps=0.03 + 1e-12) == rows[1:]  # eps read back from a URL's text
    assert reports.select_rows(rows, digit=1, eps=0.03) == [rows[1]]
    assert reports.select_rows(rows) == rows


def test_methods_words_and_lists_name_the_methods_in_canonical_order():
    from polycert.batches import BatchRequest, method_list

    assert method_list("both") == ("lp", "mip") and method_list("all") == ("lp", "klp", "mip")
    assert method_list(["mip", "klp"]) == ("klp", "mip") and method_list("klp") == ("klp",)
    base = dict(network="polycert-tiny", dataset={"stop": 2}, eps=[0.01])
    assert BatchRequest(**base, methods=["mip", "lp", "klp"]).methods == "all"
    assert BatchRequest(**base, methods=["lp", "mip"]).methods == "both"
    assert BatchRequest(**base, methods=["mip", "klp"]).method_list == ("klp", "mip")
    with pytest.raises(ValueError):
        BatchRequest(**base, methods="kpoly")
