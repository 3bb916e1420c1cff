"""Signature jobs and signatures by digit through a real ``polycert serve`` process (SQLite + its
embedded worker): a job of ten test images of the shipped network at eps 0.05 with LP and MIP, its
certificates re-checked on the network, the per-digit maps, the errors, and the command line."""

from __future__ import annotations

import re

import pytest

from tests import signature_checks as checks
from tests.live import live_server

pytestmark = pytest.mark.slow

SHADES = " .:-=+*#%@"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with live_server(tmp_path_factory.mktemp("signatures")) as live:
        yield live


@pytest.fixture(scope="module")
def job(server):
    with server.client() as client:
        created = client.post("/jobs", json=checks.JOB)
        assert created.status_code == 202, created.text
        assert created.json()["kind"] == "signature"
    body = server.wait_job(created.json()["id"], timeout=900)
    assert body["status"] == "done", server.tail()
    return body


@pytest.fixture(scope="module")
def certs(server, job):
    with server.client() as client:
        return checks.check_job(client, job["id"], n_images=10)


def test_every_signature_certificate_is_sound_and_each_closed_mip_bracket_is_an_optimum_the_network_attains(certs):
    assert len(certs) == 20  # check_job did the checks; here: they ran over the whole job


def test_signatures_by_digit_count_the_tight_rows_of_every_digit_with_inputs(server, certs):
    with server.client() as client:
        checks.check_digit_maps(client, certs)
        mip_only = client.get("/signatures", params={"network": checks.NETWORK, "digit": certs[0]["label"],
                                                     "method": "mip"}).json()
    assert mip_only["n"] == sum(c["label"] == certs[0]["label"] and c["method"] == "mip" for c in certs)
    assert {r["kind"] for r in mip_only["neurons"]} == {"region"}  # exact optima: regions, no relaxation lines


def test_the_individual_signatures_of_a_digit_come_paged_with_their_tight_sets(server, certs):
    digit = certs[0]["label"]
    with server.client() as client:
        page = client.get("/signatures/certificates", params={"network": checks.NETWORK, "digit": digit,
                                                              "limit": 1}).json()
    assert page["count"] == sum(c["label"] == digit for c in certs)
    assert len(page["data"]) == 1 and page["data"][0]["tight"]


def test_an_unknown_job_or_network_is_a_404_and_a_job_of_another_network_a_422(server, job, certs):
    with server.client() as client:
        unknown_job = client.get("/signatures", params={"digit": 1, "job": 9999})
        unknown_net = client.get("/signatures", params={"digit": 1, "network": "no-such-net"})
        assert unknown_job.status_code == 404 and "no job with id 9999" in unknown_job.json()["detail"]
        assert unknown_net.status_code == 404 and "no-such-net" in unknown_net.json()["detail"]
        # a second network with certificates of its own: a pruned copy, one LP signature query
        first = client.get(f"/jobs/{job['id']}").json()["network_id"]
        pruned = client.post(f"/networks/{first}/prune", json={"percent": 50, "name": "tiny-pruned"})
        assert pruned.status_code in (200, 201), pruned.text
        other = client.post("/jobs", json=dict(checks.JOB, network="tiny-pruned", methods="lp",
                                               dataset=dict(checks.DATASET, stop=1)))
        assert other.status_code == 202, other.text
    assert server.wait_job(other.json()["id"])["status"] == "done"
    with server.client() as client:
        ambiguous = client.get("/signatures", params={"digit": 7})
        assert ambiguous.status_code == 422
        assert "polycert-tiny" in ambiguous.json()["detail"] and "tiny-pruned" in ambiguous.json()["detail"]
        mismatch = client.get("/signatures", params={"digit": 7, "network": "tiny-pruned", "job": job["id"]})
        assert mismatch.status_code == 422 and f"job {job['id']}" in mismatch.json()["detail"]
        pruned_only = client.get("/signatures", params={"digit": 7, "network": "tiny-pruned"}).json()
        assert pruned_only["n"] == 1 and pruned_only["network"]["name"] == "tiny-pruned"
        by_job = client.get("/signatures", params={"digit": 7, "job": job["id"]}).json()  # the job names its network
        assert by_job["n"] == sum(c["label"] == 7 for c in certs)


def test_the_command_line_prints_the_digit_heatmaps_the_api_serves(server, certs):
    digit = certs[0]["label"]
    out = server.cli("signatures", "--network", checks.NETWORK, "--digit", str(digit))
    assert out.returncode == 0, out.stderr
    with server.client() as client:
        body = client.get("/signatures", params={"network": checks.NETWORK, "digit": digit}).json()
    assert f"n = {body['n']} certificates" in out.stdout
    rows = re.findall(r"^  \|(.{14})\|$", out.stdout, flags=re.M)
    assert len(rows) == 14  # 7 rows at the lower bound, then 7 at the upper bound
    for shares, drawn in ((body["pixel_lower"], rows[:7]), (body["pixel_upper"], rows[7:])):
        expected = ["".join(SHADES[min(9, int(f * 9.999))] * 2 for f in shares[r * 7:(r + 1) * 7]) for r in range(7)]
        assert drawn == expected
    assert re.search(r"tail \d\.\d\d  dip \d\.\d\d  rise \d\.\d\d  linear \d\.\d\d", out.stdout)


@pytest.mark.parametrize("digit", ["-1", "10"])
def test_the_command_line_refuses_a_digit_that_is_not_a_class_in_one_line(server, certs, digit):
    out = server.cli("signatures", "--network", checks.NETWORK, "--digit", digit)
    assert out.returncode != 0
    assert len(out.stderr.strip().splitlines()) == 1 and "digit" in out.stderr and "Traceback" not in out.stderr


def test_a_signature_job_can_be_submitted_from_the_command_line(server, certs):
    out = server.cli("signature-job", "--network", checks.NETWORK, "--start", "3", "--stop", "4", "--methods", "lp")
    assert out.returncode == 0, out.stderr
    job_id = int(re.search(r"job id: (\d+)", out.stdout).group(1))
    with server.client() as client:
        job = client.get(f"/jobs/{job_id}").json()
        (cert,) = checks.results(client, job_id)
    assert job["kind"] == "signature" and job["status"] == "done"
    assert cert["source_index"] == 3 and cert["verdict"] == "verified"
    bound = re.escape(f"{cert['upper']:.7g}")
    assert re.search(rf"lp .* verified .* bound .* {bound} ", out.stdout)


def test_a_study_report_re_renders_its_signature_section_from_a_stored_signature_job(server, job, certs, tmp_path):
    import json
    import shutil

    from tests.live import ROOT, one_line_error

    report = tmp_path / "report"
    shutil.copytree(ROOT / "docs" / "study" / "polycert-tiny", report)
    before = (report / "README.md").read_text()
    out = server.cli("study", "--out", str(report), "--from-job", str(job["id"]))
    assert out.returncode == 0, out.stderr
    text = (report / "README.md").read_text()
    section = text[text.index("## Signatures (item 3)"):text.index("## The LP as a classifier (item 5)")]
    assert f"certificates of signature job {job['id']}" in section
    # the other sections are kept as they were
    assert text[:text.index("## Signatures (item 3)")] == before[:before.index("## Signatures (item 3)")]
    assert text[text.index("## The LP as a classifier"):] == before[before.index("## The LP as a classifier"):]
    results = json.loads((report / "results.json").read_text())
    assert results["signatures_source"]["job"] == job["id"]
    with server.client() as client:
        for digit in sorted({c["label"] for c in certs}):
            for method in ("lp", "mip"):
                body = client.get("/signatures", params={"network": checks.NETWORK, "digit": digit, "job": job["id"],
                                                         "method": method}).json()
                stored = results["signatures"][method][str(digit)]
                assert stored["n"] == body["n"] == sum(c["label"] == digit and c["method"] == method for c in certs)
                # the report counts the same tight pixels the API serves
                assert [round(v / stored["n"], 9) for v in stored["pixel_lower"]] == [round(v, 9) for v in body["pixel_lower"]]
                assert [round(v / stored["n"], 9) for v in stored["pixel_upper"]] == [round(v, 9) for v in body["pixel_upper"]]
                row = re.search(rf"^\| {digit} \| (\d+) \|", section, flags=re.M)
                assert row and int(row.group(1)) == sum(c["label"] == digit and c["method"] == "lp" for c in certs)
    assert "no job with id 9999" in one_line_error(server.cli("study", "--out", str(report), "--from-job", "9999"), 3)
    assert "run polycert study first" in one_line_error(
        server.cli("study", "--out", str(tmp_path / "empty"), "--from-job", str(job["id"])), 4)
    other = tmp_path / "verianet"
    shutil.copytree(ROOT / "docs" / "study" / "verianet", other)
    assert "digest" in one_line_error(server.cli("study", "--out", str(other), "--from-job", str(job["id"])), 4)
