"""The LP-versus-MIP comparison through a real ``polycert serve`` process (embedded SQLite + in-process worker,
the real engine): a ``both`` job of 12 test images of ``polycert-tiny`` at two radii, read back over HTTP and
through ``polycert compare``, and checked against the job's own certificates (``/jobs/{id}/results``) and
against the network's own predictions."""

from __future__ import annotations

import numpy as np
import pytest

from polycert.datasets import load_mnist7
from polycert.zoo import load_builtin
from tests.live import live_server

pytestmark = pytest.mark.slow

IMAGES, EPS = 12, [0.01, 0.03]
TOLERANCE = 1e-4  # the exact bracket's tolerance (relative + absolute), as the engine states it
OUTCOMES = ("pending", "misclassified", "verified", "falsified", "unknown", "conflicts")


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """(server, job id, comparison over all rows, the job's certificates by (method, item, eps))."""
    with live_server(tmp_path_factory.mktemp("comparison")) as server:
        with server.client() as client:
            submitted = client.post("/jobs", json={
                "network": "polycert-tiny", "dataset": {"name": "mnist7-area", "start": 0, "stop": IMAGES},
                "eps": EPS, "methods": "both", "time_limit": 30})
            assert submitted.status_code == 202, submitted.text
            job_id = submitted.json()["id"]
            done = server.wait_job(job_id)
            assert done["status"] == "done" and done["progress"]["errors"] == 0, server.tail()
            comparison = client.get(f"/jobs/{job_id}/comparison", params={"limit": 1000}).json()
            results = client.get(f"/jobs/{job_id}/results", params={"limit": 1000}).json()
        assert results["count"] == 2 * IMAGES * len(EPS)
        certificates = {(r["method"], r["item"], r["eps"]): r for r in results["data"]}
        yield server, job_id, comparison, certificates


def misclassified_sources() -> set[int]:
    net = load_builtin("polycert-tiny")
    x, y = load_mnist7("test", resize="area")
    return {int(i) for i in np.flatnonzero(net.predict(x[:IMAGES]) != y[:IMAGES])}


def test_every_row_repeats_the_lp_and_mip_certificates_of_its_query(job):
    _, _, comparison, certificates = job
    assert comparison["count"] == len(comparison["rows"]) == IMAGES * len(EPS)
    for row in comparison["rows"]:
        lp, mip = certificates["lp", row["item"], row["eps"]], certificates["mip", row["item"], row["eps"]]
        assert (row["lp_verdict"], row["lp_lower"]) == (lp["verdict"], lp["lower"])
        assert (row["mip_verdict"], row["mip_lower"], row["mip_upper"]) == (mip["verdict"], mip["lower"], mip["upper"])
        assert (row["label"], row["source_index"]) == (lp["label"], lp["source_index"])
        if lp["lower"] is None or mip["lower"] is None:
            assert row["relaxation_gap"] is None
        else:
            assert row["relaxation_gap"] == pytest.approx(mip["lower"] - lp["lower"], rel=1e-12, abs=1e-12)
        assert row["differ"] == (lp["verdict"] != mip["verdict"])
        flagged = [(c["extra"] or {}).get("misclassified") for c in (lp, mip)]
        assert row["misclassified"] == any(flagged)
        assert row["agreement"] != "pending"


def test_no_exact_lower_bound_lies_below_the_lp_bound_beyond_the_tolerance(job):
    _, _, comparison, _ = job
    gaps = [(r["relaxation_gap"], r["lp_lower"]) for r in comparison["rows"] if r["relaxation_gap"] is not None]
    assert gaps  # the job has queries with both bounds finite
    for gap, lp_lower in gaps:
        assert gap >= -TOLERANCE * (1 + abs(lp_lower))
    assert not any(r["negative_gap"] for r in comparison["rows"])
    assert comparison["summary"]["total"]["negative_gaps"] == 0 and comparison["summary"]["total"]["conflicts"] == 0


def test_the_summary_adds_up_per_eps_and_counts_the_misclassified_inputs_apart(job):
    _, _, comparison, certificates = job
    summary, rows = comparison["summary"], comparison["rows"]
    wrong = misclassified_sources()
    assert wrong, "the slice should hold an input the network misclassifies"
    assert {r["source_index"] for r in rows if r["misclassified"]} == wrong
    assert [g["eps"] for g in summary["by_eps"]] == EPS
    for group in summary["by_eps"]:
        assert group["pairs"] == IMAGES and sum(group[k] for k in OUTCOMES) == IMAGES
        assert group["misclassified"] == len(wrong)
        mine = [r for r in rows if r["eps"] == group["eps"]]
        mip = [certificates["mip", r["item"], r["eps"]] for r in mine]
        assert group["mip_verified"] == sum(c["verdict"] == "verified" for c in mip)
        assert group["falsified"] == sum(c["verdict"] == "falsified" and c["source_index"] not in wrong for c in mip)
        assert group["lp_verified"] == sum(r["lp_verdict"] == "verified" for r in mine)
        gaps = [r["relaxation_gap"] for r in mine if r["relaxation_gap"] is not None]
        assert group["gaps"] == len(gaps)
        assert group["gap_median"] == pytest.approx(float(np.median(gaps)))
        assert group["gap_p90"] == pytest.approx(float(np.percentile(gaps, 90)))
        assert group["gap_max"] == pytest.approx(max(gaps))
    for key in ("pairs", "misclassified", "verified", "falsified", "unknown", "lp_verified", "mip_only_verified"):
        assert sum(g[key] for g in summary["by_eps"]) == summary["total"][key]
        assert sum(g[key] for g in summary["by_digit"]) == summary["total"][key]
    assert {g["digit"] for g in summary["by_digit"]} == {r["label"] for r in rows}


def test_rows_are_filtered_and_paged(job):
    server, job_id, comparison, _ = job
    everything = comparison["rows"]
    with server.client() as client:
        def get(**params):
            response = client.get(f"/jobs/{job_id}/comparison", params=params)
            assert response.status_code == 200, response.text
            return response.json()

        differ = get(differ="true")
        assert differ["count"] == sum(r["differ"] for r in everything)
        assert all(r["differ"] for r in differ["rows"]) and differ["summary"] == comparison["summary"]
        wide = get(eps=0.03, limit=1000)
        assert wide["count"] == IMAGES and [r for r in everything if r["eps"] == 0.03] == wide["rows"]
        digit = everything[0]["label"]
        assert get(digit=digit)["rows"] == [r for r in everything if r["label"] == digit]
        page = get(offset=5, limit=4)
        assert page["count"] == len(everything) and page["rows"] == everything[5:9]
        bad = client.get(f"/jobs/{job_id}/comparison", params={"eps": -1})
        assert bad.status_code == 422 and "greater than or equal to 0" in bad.text
        assert client.get(f"/jobs/{job_id}/comparison", params={"differ": "perhaps"}).status_code == 422
        missing = client.get("/jobs/9999/comparison")
        assert missing.status_code == 404 and "9999" in missing.json()["detail"]


def summary_lines(output: str, first_cells: list[str]) -> dict[str, list[str]]:
    """The cells of the summary table's lines whose first cell is one of ``first_cells`` (the gap column's
    three numbers joined again)."""
    out = {}
    for line in output.splitlines():
        cells = line.split()
        if cells and cells[0] in first_cells and len(cells) == 15:
            out[cells[0]] = [*cells[:9], " ".join(cells[9:14]), cells[14]]
    return out


def assert_line_shows(cells: list[str], group: dict) -> None:
    counts = ("pairs", "misclassified", "lp_verified", "mip_verified", "mip_only_verified", "falsified", "unknown", "conflicts")
    assert [int(c) for c in cells[1:9]] == [group[k] for k in counts]
    shown = cells[9].split(" / ")
    for text, key in zip(shown, ("gap_median", "gap_p90", "gap_max")):
        if group[key] is None:
            assert text == "-"
        else:
            assert float(text) == pytest.approx(group[key], rel=5e-3, abs=1e-12)  # three significant digits
    assert int(cells[10]) == group["negative_gaps"]


def test_polycert_compare_prints_the_apis_numbers_and_a_legend(job):
    server, job_id, comparison, _ = job
    summary = comparison["summary"]
    by_eps = server.cli("compare", str(job_id))
    assert by_eps.returncode == 0, by_eps.stderr
    assert "LP ver. = LP relaxation proves robustness" in by_eps.stdout
    assert "MIP only = exact MIP proves what the LP cannot" in by_eps.stdout
    assert "gap = exact lower bound minus LP bound (median / 90% / max)" in by_eps.stdout
    lines = summary_lines(by_eps.stdout, [*map(str, EPS), "all"])
    assert set(lines) == {*map(str, EPS), "all"}
    for group in summary["by_eps"]:
        assert_line_shows(lines[str(group["eps"])], group)
    assert_line_shows(lines["all"], summary["total"])

    by_digit = server.cli("compare", str(job_id), "--by", "digit")
    assert by_digit.returncode == 0, by_digit.stderr
    lines = summary_lines(by_digit.stdout, [str(g["digit"]) for g in summary["by_digit"]] + ["all"])
    assert len(lines) == len(summary["by_digit"]) + 1
    for group in summary["by_digit"]:
        assert_line_shows(lines[str(group["digit"])], group)


def test_polycert_compare_rows_lists_the_queries_and_differ_only_those_that_differ(job):
    server, job_id, comparison, _ = job

    def listed(*flags: str) -> list[tuple[int, float]]:
        result = server.cli("compare", str(job_id), *flags)
        assert result.returncode == 0, result.stderr
        assert "MIP bracket = the exact minimum margin lies in [lower, upper]" in result.stdout
        table = result.stdout.split("LP versus MIP per query", 1)[1]
        return [(int(c[0]), float(c[3])) for c in (line.split() for line in table.splitlines()) if c and c[0].isdigit()]

    assert listed("--rows") == [(r["item"], r["eps"]) for r in comparison["rows"]]
    assert listed("--rows", "--differ") == [(r["item"], r["eps"]) for r in comparison["rows"] if r["differ"]]


def test_polycert_compare_refuses_unknown_jobs_other_groupings_and_jobs_without_both_methods(job):
    server, job_id, _, _ = job
    with server.client() as client:
        lp_only = client.post("/jobs", json={"network": "polycert-tiny", "dataset": {"name": "mnist7-area", "start": 0,
                                             "stop": 1}, "eps": [0.01], "methods": "lp"}).json()["id"]
        server.wait_job(lp_only)
        refused = client.get(f"/jobs/{lp_only}/comparison")
        assert refused.status_code == 409 and "did not run both LP and MIP" in refused.json()["detail"]
    for argv, code, message in ((["compare", "9999"], 3, "no job with id 9999"),
                                (["compare", str(job_id), "--by", "colour"], 4, "--by must be one of eps, digit"),
                                (["compare", str(lp_only)], 4, f"job {lp_only} did not run both LP and MIP")):
        result = server.cli(*argv)
        assert result.returncode == code, (argv, result.stdout, result.stderr)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.stderr
