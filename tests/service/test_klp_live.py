"""The k-neuron LP through a real ``polycert serve`` process (issue 20, item 3): a job asking for every method
(``methods: "all"`` = lp + klp + mip) of 10 test images of ``polycert-tiny`` at eps 0.02; its certificates
record the relaxation; the comparison carries the k-LP column, whose bound lies between the LP's and the exact
one for every query; ``polycert compare`` prints LP / k-LP / MIP."""

from __future__ import annotations

import pytest

from tests.live import live_server

pytestmark = pytest.mark.slow

IMAGES, EPS = 10, 0.02
TOLERANCE = 1e-4  # the exact bracket's tolerance (relative + absolute)


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    with live_server(tmp_path_factory.mktemp("klp")) as server:
        with server.client() as client:
            submitted = client.post("/jobs", json={
                "network": "polycert-tiny", "dataset": {"name": "mnist7-area", "start": 0, "stop": IMAGES},
                "eps": [EPS], "methods": ["mip", "klp", "lp"], "time_limit": 60})
            assert submitted.status_code == 202, submitted.text
            assert submitted.json()["parameters"]["methods"] == "all"
            done = server.wait_job(submitted.json()["id"], timeout=600)
            assert done["status"] == "done" and done["progress"]["errors"] == 0, server.tail()
            results = client.get(f"/jobs/{done['id']}/results", params={"limit": 1000, "signatures": True}).json()["data"]
            comparison = client.get(f"/jobs/{done['id']}/comparison", params={"limit": 1000}).json()
        yield server, done, results, comparison


def test_every_query_has_an_lp_a_klp_and_a_mip_certificate_and_the_klp_ones_state_their_relaxation(job):
    _, done, results, _ = job
    assert sorted(r["method"] for r in results) == ["klp"] * IMAGES + ["lp"] * IMAGES + ["mip"] * IMAGES
    assert set(done["progress"]["verdicts"]) == {"lp", "klp", "mip"}
    klp = [r for r in results if r["method"] == "klp"]
    ran = [r for r in klp if r["stage"] == "klp" or r["verdict"] == "unknown"]
    assert ran, "no query reached the k-neuron LP"
    for r in ran:
        relaxation = r["extra"]["relaxation"]
        assert relaxation["kind"] == "k-neuron" and relaxation["k"] in (2, 3) and relaxation["groups"]
        assert r["tight"], f"k-LP certificate of query {r['query_id']} has no tight set"
    assert any("k_neuron" in str(r["tight"]) for r in ran), "no k-LP optimum rests on a k-neuron facet"


def test_the_klp_bound_lies_between_the_lp_bound_and_the_exact_one_and_the_summary_counts_it(job):
    _, _, results, comparison = job
    rows = comparison["rows"]
    assert len(rows) == IMAGES and all(r["klp_verdict"] is not None for r in rows)
    for r in rows:
        if r["lp_lower"] is not None and r["klp_lower"] is not None:
            assert r["klp_lower"] >= r["lp_lower"] - TOLERANCE * (1 + abs(r["lp_lower"]))
            assert r["klp_gain"] == pytest.approx(r["klp_lower"] - r["lp_lower"])
        if r["klp_lower"] is not None and r["mip_lower"] is not None:
            assert r["mip_lower"] >= r["klp_lower"] - TOLERANCE * (1 + abs(r["klp_lower"]))
        assert not (r["klp_verdict"] == "verified" and r["mip_verdict"] == "falsified")
    total = comparison["summary"]["total"]
    assert total["klp_pairs"] == IMAGES and total["conflicts"] == 0 and total["negative_gaps"] == 0
    assert total["klp_verified"] == sum(r["verdict"] == "verified" for r in results if r["method"] == "klp")
    assert total["klp_verified"] >= total["lp_verified"]  # the k-LP contains the LP's rows
    assert total["klp_over_lp"] == sum(r["klp_verdict"] == "verified" and r["lp_verdict"] != "verified" for r in rows)


def test_polycert_compare_prints_the_klp_table_with_its_legend(job):
    server, done, _, comparison = job
    out = server.cli("compare", str(done["id"]), "--rows")
    assert out.returncode == 0, out.stderr
    assert "k-neuron LP between them" in out.stdout and "k-LP ver." in out.stdout and "k-LP bound" in out.stdout
    total = comparison["summary"]["total"]
    line = next(l for l in out.stdout.splitlines()[out.stdout.splitlines().index(
        next(l for l in out.stdout.splitlines() if "k-neuron LP between them" in l)):] if l.strip().startswith("all"))
    assert line.split()[1:7] == [str(total[k]) for k in ("klp_pairs", "lp_verified", "klp_verified", "mip_verified",
                                                          "klp_over_lp", "mip_over_klp")]
