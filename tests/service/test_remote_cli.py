"""The command line as a client (issue 17, item 6): ``polycert --url ... --token ...`` against a real
``polycert serve`` process, run as a user runs it, from an environment whose data directory is another,
empty one, so that the only way to the server's database is its HTTP API. What is checked is what a user
reads: the numbers printed match the API's JSON. Also :class:`polycert.Client` itself against the same server.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import polycert
from polycert.cli import EXIT_BAD_INPUT, EXIT_CONFIG, EXIT_NOT_FOUND, EXIT_QUEUE, _fmt, compact
from tests.live import ROOT, TOKEN, free_port, live_server, one_line_error, server_env

FIXTURES = ROOT / "tests" / "fixtures"
AGREEMENT = re.compile(r"\b(agree|lp_inconclusive|mip_inconclusive|conflict|pending)\b")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with live_server(tmp_path_factory.mktemp("remote-server")) as live:
        yield live


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory) -> Path:
    """The client's own data directory: empty, and it must stay so."""
    return tmp_path_factory.mktemp("remote-client") / "data"


def client_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = server_env(data_dir, COLUMNS="200", **extra)
    env.pop("POLYCERT_API_TOKEN")  # the server's secret; the client knows only what it is told
    return env


def cli(server, data_dir: Path, *args: str, token: str | None = TOKEN, url: str | None = None,
             timeout: float = 600) -> subprocess.CompletedProcess:
    """``polycert --url URL --token TOKEN ARGS`` in a process of its own."""
    head = ["--url", url or server.url] + ([] if token is None else ["--token", token])
    return subprocess.run([sys.executable, "-m", "polycert.cli", *head, *args], cwd=ROOT, env=client_env(data_dir),
                          capture_output=True, text=True, timeout=timeout)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stdout


def api(server, path: str, **params) -> dict:
    with server.client() as c:
        response = c.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def job(server, elsewhere) -> int:
    """A small robustness job submitted through the CLI, which follows it to the end."""
    out = ok(cli(server, elsewhere, "submit", "--network", "polycert-tiny", "--dataset", "mnist7-area",
                      "--stop", "6", "--eps", "0.02", "--methods", "both"))
    job_id = int(re.search(r"^job id: (\d+)$", out, re.MULTILINE).group(1))
    assert f"job {job_id}: 12 queries submitted" in out and f"job {job_id}: done" in out
    return job_id


def test_submit_and_status_show_the_jobs_progress(server, elsewhere, job):
    body = api(server, f"/jobs/{job}")
    assert body["status"] == "done" and body["progress"]["done"] == 12
    lines = ok(cli(server, elsewhere, "status", str(job))).splitlines()
    assert lines[0] == f"job {job}: done, 12/12 answered, {body['progress']['errors']} engine errors"
    shown = {line.split(":")[0].strip(): line.split(":", 1)[1].strip() for line in lines[1:]}
    expected = {m: ", ".join(f"{v} {n}" for v, n in sorted(c.items())) for m, c in body["progress"]["verdicts"].items()}
    assert shown == expected and set(shown) == {"lp", "mip"}


def test_results_csv_has_a_row_per_certificate_matching_the_api(server, elsewhere, job):
    api_rows = api(server, f"/jobs/{job}/results", limit=1000)["data"]
    rows = list(csv.DictReader(io.StringIO(ok(cli(server, elsewhere, "results", str(job), "--format", "csv")))))
    assert len(rows) == len(api_rows) == 12
    for row, cert in zip(rows, api_rows):
        assert (int(row["item"]), row["method"], row["verdict"]) == (cert["item"], cert["method"], cert["verdict"])
        assert int(row["label"]) == cert["label"] and float(row["eps"]) == cert["eps"] == 0.02
        assert row["solver"] == cert["solver"] and float(row["seconds"]) == cert["wall_time"]
        for key in ("lower", "upper", "gap"):
            assert (row[key] == "" and cert[key] is None) or float(row[key]) == cert[key]
        assert row["reason"] == (cert["reason"] or "")
    assert {r["method"] for r in rows} == {"lp", "mip"}


def test_results_json_is_the_apis_certificate_list_and_can_go_to_a_file(server, elsewhere, job, tmp_path):
    api_rows = api(server, f"/jobs/{job}/results", limit=1000)["data"]
    assert json.loads(ok(cli(server, elsewhere, "results", str(job), "--format", "json"))) == api_rows
    out = tmp_path / "certs.json"
    result = cli(server, elsewhere, "results", str(job), "--format", "json", "--output", str(out))
    ok(result)
    assert json.loads(out.read_text()) == api_rows and "12 certificates" in result.stderr


def test_compare_prints_the_numbers_of_the_apis_summary(server, elsewhere, job):
    total = api(server, f"/jobs/{job}/comparison")["summary"]["total"]
    out = ok(cli(server, elsewhere, "compare", str(job)))
    row = next(line.split() for line in out.splitlines() if line.strip().startswith("all "))
    # all  pairs  miscl.  LP ver.  MIP ver.  MIP only  falsified  unknown  conflicts  gap med / 90% / max  neg. gaps
    counts = [int(v) for v in row[1:9]]
    assert counts == [total[k] for k in ("pairs", "misclassified", "lp_verified", "mip_verified", "mip_only_verified",
                                         "falsified", "unknown", "conflicts")]
    assert total["pairs"] == 6 and int(row[-1]) == total["negative_gaps"]
    assert row[9:14] == [compact(total["gap_median"]), "/", compact(total["gap_p90"]), "/", compact(total["gap_max"])]
    api_rows = api(server, f"/jobs/{job}/comparison")["rows"]
    out = ok(cli(server, elsewhere, "compare", str(job), "--rows"))
    shown = [m.group(1) for m in map(AGREEMENT.search, out.splitlines()) if m]
    assert "LP versus MIP per query" in out and shown == [r["agreement"] for r in api_rows] and len(shown) == 6


def test_embedded_and_remote_print_the_same(server, elsewhere, job):
    """One formatting path: the server's own data directory read in this process (no --url) prints what the
    API gives the remote CLI."""
    for args in (["status", str(job)], ["compare", str(job), "--rows"], ["results", str(job), "--format", "csv"],
                 ["networks", "show", "polycert-tiny"]):
        local = server.cli(*args)
        assert local.returncode == 0, local.stderr
        assert ok(cli(server, elsewhere, *args)) == local.stdout, args


def test_signatures_of_a_digit_remotely(server, elsewhere, job):
    digit = api(server, f"/jobs/{job}/results")["data"][0]["label"]
    body = api(server, "/signatures", network="polycert-tiny", digit=digit)
    out = ok(cli(server, elsewhere, "signatures", "--network", "polycert-tiny", "--digit", str(digit)))
    net = body["network"]
    assert out.splitlines()[0] == (f"digit {digit}, network {net['id']} ({net['name']}), source all: "
                                   f"n = {body['n']} certificates")
    assert body["n"] > 0 and "pixels at their lower bound" in out and "region of the pre-activation" in out


@pytest.fixture(scope="module")
def uploaded(server, elsewhere, tmp_path_factory) -> dict:
    from polycert.formulations.loaders import save_npz
    from polycert.formulations.network import Network

    rng = np.random.default_rng(7)
    net = Network.from_arrays([rng.normal(size=(3, 4)), rng.normal(size=(2, 3))], [rng.normal(size=3), np.zeros(2)],
                              ["relu", "identity"], name="tiny-remote")
    path = save_npz(net, tmp_path_factory.mktemp("npz") / "tiny.npz")
    out = ok(cli(server, elsewhere, "networks", "upload", str(path), "--name", "tiny-remote", "--domain", "0,1"))
    row = next(n for n in api(server, "/networks")["data"] if n["name"] == "tiny-remote")
    assert out.splitlines()[0] == f"network {row['id']}: tiny-remote (registered; npz)"
    return row


def test_networks_upload_list_and_show(server, elsewhere, uploaded):
    assert uploaded["input_domain"] == {"lower": 0.0, "upper": 1.0} and uploaded["architecture"] == "4-3-2 relu,identity"
    listing = ok(cli(server, elsewhere, "networks", "list"))
    line = next(l for l in listing.splitlines() if "tiny-remote" in l)
    assert line.split()[0] == str(uploaded["id"]) and "[0, 1]" in line and "4-3-2 relu,identity" in line
    for key in ("tiny-remote", str(uploaded["id"])):
        shown = ok(cli(server, elsewhere, "networks", "show", key))
        assert f"network {uploaded['id']}: tiny-remote (npz)" in shown
        assert "layers: 4 -> 3 relu -> 2 identity" in shown and "activations: relu, identity" in shown
        assert "input domain [0, 1]" in shown and "aliases: none" in shown
    assert one_line_error(cli(server, elsewhere, "networks", "show", "no-such-net"), EXIT_NOT_FOUND).startswith(
        "no network 'no-such-net'; registered: ")


def test_invert_remotely_prints_the_apis_answers(server, elsewhere, uploaded):
    out = ok(cli(server, elsewhere, "invert", "invariance", "--network", "tiny-remote",
                      "--center", "0.5,0.5,0.5,0.5", "--radius", "0.05", "--domain", "0,1"))
    job_id = int(re.search(r"^job id: (\d+)$", out, re.MULTILINE).group(1))
    cert = api(server, f"/jobs/{job_id}/results")["data"][0]
    cells = [[c.strip() for c in line.strip().strip("│").split("│")] for line in out.splitlines() if "│" in line]
    row = next(c for c in cells if c[0] == "0")  # item, verdict, answer, lower, upper, ...
    assert row[1:3] == [cert["verdict"], cert["answer"]] and row[3] == _fmt(cert["lower"])


def test_prune_remotely_registers_a_copy_on_the_server(server, elsewhere, uploaded):
    out = ok(cli(server, elsewhere, "prune", "tiny-remote", "--percent", "50"))
    pruned = next(n for n in api(server, "/networks")["data"] if n["name"] == "tiny-remote-pruned50")
    assert out.strip() == (f"network {pruned['id']}: tiny-remote-pruned50 (4-3-2 relu,identity), registered; "
                           f"derived from network {uploaded['id']} (tiny-remote)")


def test_vnncomp_batch_uploads_the_onnx_and_writes_result_files(server, elsewhere, tmp_path):
    (tmp_path / "prop_0_0.03.vnnlib.gz").symlink_to(FIXTURES / "vnnlib" / "prop_0_0.03.vnnlib.gz")
    (tmp_path / "instances.csv").write_text(f"{FIXTURES / 'mnist-net_256x2.onnx'},prop_0_0.03.vnnlib,60\n")
    out = ok(cli(server, elsewhere, "vnncomp-batch", str(tmp_path / "instances.csv"), "--timeout-scale", "0.5",
                      "--results-dir", str(tmp_path / "results")))
    assert "holds 1 of 1 instances" in out and "1 result files written to" in out
    assert (tmp_path / "results" / "mnist-net_256x2_prop_0_0.03.counterexample").read_text() == "unsat\n"
    assert any(n["name"] == "mnist-net_256x2" for n in api(server, "/networks")["data"])  # uploaded, not read here


def test_demo_runs_its_three_uses_on_the_server(server, elsewhere):
    out = ok(cli(server, elsewhere, "demo", "--count", "2", "--eps", "0.02", "--signature-count", "2",
                 "--time-limit", "20"))
    assert f"the server at {server.url}" in out and "3. LP versus MIP on the robustness job:" in out
    job_id, signature_job = (int(v) for v in re.findall(r"^job (\d+): done$", out, re.MULTILINE))
    total = api(server, f"/jobs/{job_id}/comparison")["summary"]["total"]
    row = next(line.split() for line in out.splitlines() if line.strip().startswith("all "))
    assert int(row[1]) == total["pairs"] == 2
    digit, n = (int(v) for v in re.search(r"4\. digit (\d+)'s exact signature \(job \d+, n = (\d+)\)", out).groups())
    assert n == api(server, "/signatures", digit=digit, job=signature_job, method="mip", source="signature")["n"] > 0


def test_the_environment_can_name_the_server_and_token(server, elsewhere, job):
    env = client_env(elsewhere, POLYCERT_URL=server.url, POLYCERT_TOKEN=TOKEN)
    run = lambda *args: subprocess.run([sys.executable, "-m", "polycert.cli", *args], cwd=ROOT, env=env,  # noqa: E731
                                       capture_output=True, text=True, timeout=120)
    assert ok(run("status", str(job))).startswith(f"job {job}: done, 12/12 answered")
    # a write: the token came from POLYCERT_TOKEN, so the refusal is the server's about the job, not the token's
    assert one_line_error(run("cancel", str(job)), EXIT_BAD_INPUT) == f"job {job} is not queued or running"


def test_a_wrong_token_is_exit_2_in_one_line(server, elsewhere):
    for token in ("wrong-token", None):
        result = cli(server, elsewhere, "submit", "--stop", "1", token=token)
        assert one_line_error(result, EXIT_CONFIG) == "the server refused the token (set --token or POLYCERT_TOKEN)"


def test_an_unreachable_server_is_exit_5_in_one_line(server, elsewhere):
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["status", "1"], ["submit", "--stop", "1"], ["networks", "list"]):
        message = one_line_error(cli(server, elsewhere, *args, url=url), EXIT_QUEUE)
        assert message == f"cannot reach {url} (connection refused)"


def test_not_found_and_bad_input_are_exits_3_and_4_with_the_servers_message(server, elsewhere, uploaded):
    assert one_line_error(cli(server, elsewhere, "status", "99999"), EXIT_NOT_FOUND) == "no job with id 99999"
    assert one_line_error(cli(server, elsewhere, "results", "99999"), EXIT_NOT_FOUND) == "no job with id 99999"
    message = one_line_error(cli(server, elsewhere, "submit", "--stop", "1", "--eps", "-0.5"), EXIT_BAD_INPUT)
    assert "eps" in message and "-0.5" in message
    message = one_line_error(cli(server, elsewhere, "submit", "--stop", "1", "--eps", "nan"), EXIT_BAD_INPUT)
    assert message == "eps.0: Input should be a finite number"
    # checked by the server: the uploaded network has 4 inputs, the data set 49
    message = one_line_error(cli(server, elsewhere, "submit", "--network", "tiny-remote", "--stop", "1"),
                             EXIT_BAD_INPUT)
    assert message == "inputs have 49 values; network 'tiny-remote' expects 4"


def test_the_client_never_touched_a_database_of_its_own(server, elsewhere, job, uploaded):
    assert not (elsewhere / "polycert.db").exists()


# -- polycert.Client ------------------------------------------------------------------------------------
def test_the_client_reads_what_the_api_serves(server, job):
    with polycert.Client(server.url) as client:  # reads need no token
        assert client.health()["status"] == "ok"
        tiny = client.network("polycert-tiny")
        assert client.network(tiny["id"]) == tiny == api(server, f"/networks/{tiny['id']}")
        assert client.job(job) == api(server, f"/jobs/{job}")
        assert [j["id"] for j in client.jobs()] == [j["id"] for j in api(server, "/jobs", limit=500)["data"]]
        everything = api(server, f"/jobs/{job}/results", limit=1000)["data"]
        client.page_size = 5  # three pages of 5, 5 and 2: joined in order
        assert client.results(job) == everything
        assert client.results(job, method="mip") == [c for c in everything if c["method"] == "mip"]
        comparison = api(server, f"/jobs/{job}/comparison")
        assert client.comparison(job) == {**comparison, "limit": 6}
        assert client.comparison(job, rows=False)["summary"] == comparison["summary"]
        digit = everything[0]["label"]
        assert client.signatures(digit=digit, network="polycert-tiny") == api(server, "/signatures", digit=digit,
                                                                              network="polycert-tiny")
        certs = client.signature_certificates(digit=digit, network="polycert-tiny")
        assert len(certs) == client.signatures(digit=digit, network="polycert-tiny")["n"] and certs[0]["tight"] is not None


def test_the_client_submits_waits_and_refuses_in_one_line(server):
    with polycert.Client(server.url, token=TOKEN) as client:
        job = client.submit({"network": "polycert-tiny", "inputs": [[0.5] * 49], "labels": [0], "eps": [0.0],
                             "methods": "lp"})
        assert job["status"] in ("queued", "running", "done") and job["progress"]["total"] == 1
        assert client.wait(job["id"], timeout=120, poll=0.1)["status"] == "done"
        with pytest.raises(polycert.ApiError) as refused:
            client.cancel(job["id"])
        assert refused.value.status_code == 409 and refused.value.message == f"job {job['id']} is not queued or running"
        with pytest.raises(polycert.ApiError) as missing:
            client.job(99999)
        assert (missing.value.status_code, missing.value.message) == (404, "no job with id 99999")
        with pytest.raises(polycert.ApiError) as invalid:
            client.submit({"network": "polycert-tiny", "dataset": {"stop": 0}, "eps": ["x"]})
        assert invalid.value.status_code == 422 and "\n" not in invalid.value.message
        assert "eps.0: Input should be a valid number" in invalid.value.message
    with polycert.Client(server.url, token="wrong") as client, pytest.raises(polycert.ApiError) as denied:
        client.register_builtin("polycert-tiny")
    assert denied.value.status_code == 401


def test_the_client_says_when_nothing_listens():
    url = f"http://127.0.0.1:{free_port()}"
    with polycert.Client(url) as client, pytest.raises(polycert.ApiError) as down:
        client.health()
    assert (down.value.status_code, down.value.message) == (0, f"cannot reach {url} (connection refused)")
    assert polycert.Client("127.0.0.1:1").url == "http://127.0.0.1:1"
    with pytest.raises(ValueError, match="NaN"):
        polycert.Client(url).submit({"eps": [float("nan")]})


def test_jobs_lists_the_servers_jobs_with_their_progress(server, elsewhere, job):
    out = ok(cli(server, elsewhere, "jobs"))
    listed = api(server, "/jobs")
    assert f"{listed['count']} jobs" in out
    mine = next(j for j in listed["data"] if j["id"] == job)
    row = next(line for line in out.splitlines() if line.strip().startswith(str(job) + " "))
    assert mine["kind"] in row and mine["status"] in row
    assert f"{mine['progress']['done']}/{mine['progress']['total']}" in row
