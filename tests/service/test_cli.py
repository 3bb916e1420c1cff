"""The command line on the embedded default (SQLite + in-process pool; stand-in engine)."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from polycert.workers import execution as worker_execution
from polycert.formulations.network import Network
from polycert.batches import register_network
from polycert.cli import app
from polycert.dispatch import reset_dispatchers
from tests.service.factories import interval_certify

runner = CliRunner()


@pytest.fixture
def toy49(session, monkeypatch):
    monkeypatch.setattr(worker_execution, "default_certify", lambda: interval_certify)
    rng = np.random.default_rng(5)
    net = Network.from_arrays([rng.normal(size=(5, 49)) * 0.2, rng.normal(size=(10, 5))], [np.zeros(5), np.zeros(10)],
                              "relu", name="toy49")
    register_network(session, net, "npz")
    session.commit()
    yield net
    reset_dispatchers()


def test_submit_status_compare_and_signatures_on_the_embedded_default(toy49):
    result = runner.invoke(app, ["submit", "--network", "toy49", "--stop", "3", "--eps", "0.01", "--eps", "0.2"])
    assert result.exit_code == 0, result.output
    assert "job 1: 12 queries submitted" in result.output and "job 1: done" in result.output
    status = runner.invoke(app, ["status", "1"])
    assert status.exit_code == 0 and "12/12 answered" in status.output
    compare = runner.invoke(app, ["compare", "1"])
    assert compare.exit_code == 0 and "LP versus MIP" in compare.output
    signatures = runner.invoke(app, ["signatures", "--digit", "0", "--job", "1"])
    assert signatures.exit_code == 0 and "certificates" in signatures.output


@pytest.mark.parametrize("argv, code, message", [
    (["status", "999"], 3, "no job with id 999"),
    (["compare", "999"], 3, "no job with id 999"),
    (["submit", "--network", "toy49", "--eps", "nan"], 4, "eps.0: Input should be a finite number"),
    (["submit", "--network", "no-such-net"], 3, "no built-in network 'no-such-net'"),
    (["worker"], 2, "POLYCERT_BROKER_URL is not set"),
])
def test_errors_have_exit_codes_and_messages(toy49, argv, code, message):
    result = runner.invoke(app, argv)
    assert result.exit_code == code, result.output
    assert message in " ".join(result.output.split())


def test_an_unmigrated_database_is_refused_and_db_upgrade_fixes_it(tmp_path, monkeypatch, settings):
    from polycert.settings import get_settings

    monkeypatch.setenv("POLYCERT_DATABASE_URL", f"sqlite:///{tmp_path / 'other.db'}")
    get_settings.cache_clear()
    for argv in (["db", "check"], ["serve"], ["status", "1"]):
        refused = runner.invoke(app, argv)
        assert refused.exit_code == 2 and "polycert db upgrade" in " ".join(refused.output.split()), argv
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    assert runner.invoke(app, ["db", "check"]).exit_code == 0


def test_results_and_networks_work_on_the_embedded_default_too(toy49):
    import csv
    import io
    import json

    assert runner.invoke(app, ["submit", "--network", "toy49", "--stop", "2", "--eps", "0.01"]).exit_code == 0
    table = runner.invoke(app, ["results", "1", "--format", "csv"])
    assert table.exit_code == 0, table.output
    rows = list(csv.DictReader(io.StringIO(table.stdout)))
    assert [(r["item"], r["method"]) for r in rows] == [("0", "lp"), ("0", "mip"), ("1", "lp"), ("1", "mip")]
    assert {r["verdict"] for r in rows} <= {"verified", "falsified", "unknown"} and rows[0]["eps"] == "0.01"
    certificates = json.loads(runner.invoke(app, ["results", "1", "--format", "json"]).stdout)
    assert [c["verdict"] for c in certificates] == [r["verdict"] for r in rows]
    assert runner.invoke(app, ["results", "1", "--format", "xml"]).exit_code == 4
    listing = runner.invoke(app, ["networks", "list"])
    assert listing.exit_code == 0 and "toy49" in listing.output and "49-5-10 relu,identity" in listing.output
    shown = runner.invoke(app, ["networks", "show", "toy49"])
    assert shown.exit_code == 0 and "layers: 49 -> 5 relu -> 10 identity" in shown.output, shown.output
    assert runner.invoke(app, ["networks", "show", "nothing"]).exit_code == 3


def test_server_side_commands_refuse_an_explicit_url_and_ignore_the_environments(settings):
    refused = runner.invoke(app, ["--url", "http://127.0.0.1:9", "db", "check"])
    assert refused.exit_code == 4 and "db check runs on this machine and does not take --url" in refused.output
    assert runner.invoke(app, ["db", "check"], env={"POLYCERT_URL": "http://127.0.0.1:9"}).exit_code == 0
