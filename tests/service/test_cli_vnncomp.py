"""``polycert vnncomp ONNX VNNLIB``: the answer word on stdout and the competition's result file."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from polycert.formulations.loaders import load_onnx
from polycert.formulations.vnnlib import check_counterexample, parse_result, read_vnnlib
from polycert.cli import EXIT_BAD_INPUT, app

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ONNX = str(FIXTURES / "mnist-net_256x2.onnx")
runner = CliRunner()


def test_violated_instance_prints_violated_and_writes_a_checked_counterexample_file(tmp_path):
    prop_path = FIXTURES / "vnnlib" / "prop_12_0.03.vnnlib.gz"
    out = tmp_path / "result.txt"
    result = runner.invoke(app, ["vnncomp", ONNX, str(prop_path), "--timeout", "30", "--result", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == "violated"
    word, x, y = parse_result(out.read_text())
    assert word == "sat" and out.read_text().startswith("sat\n((X_0 ")
    assert check_counterexample(read_vnnlib(prop_path), load_onnx(ONNX).forward, x)


def test_robust_instance_prints_holds_and_writes_unsat(tmp_path):
    out = tmp_path / "result.txt"
    result = runner.invoke(app, ["vnncomp", ONNX, str(FIXTURES / "vnnlib" / "prop_0_0.03.vnnlib.gz"),
                                 "--timeout", "30", "--result", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == "holds"
    assert out.read_text() == "unsat\n"


def test_a_property_that_does_not_fit_the_network_is_bad_input(tmp_path):
    prop = tmp_path / "p.vnnlib"
    prop.write_text("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (>= X_0 0))\n(assert (<= X_0 1))\n")
    result = runner.invoke(app, ["vnncomp", ONNX, str(prop)])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "inputs" in result.output


def test_a_batch_over_an_instances_csv_goes_through_the_queue_and_prints_the_table(tmp_path, session, settings):
    from sqlalchemy import select

    from polycert.db.models import CertificateRow, JobRow, QueryRow
    from polycert.dispatch import reset_dispatchers

    csv = tmp_path / "instances.csv"
    csv.write_text(f"{ONNX},{FIXTURES / 'vnnlib' / 'prop_0_0.03.vnnlib.gz'},60\n"
                   f"{ONNX},{FIXTURES / 'vnnlib' / 'prop_12_0.03.vnnlib.gz'},60\n")
    try:
        result = runner.invoke(app, ["vnncomp-batch", str(csv), "--timeout-scale", "0.5"], env={"COLUMNS": "160"})
    finally:
        reset_dispatchers()
    assert result.exit_code == 0, result.output
    assert "prop_0_0.03.vnnlib.gz" in result.output and "holds 1, violated 1 of 2 instances" in result.output
    job = session.scalars(select(JobRow)).one()
    assert job.kind == "vnncomp" and job.status == "done" and job.total == 2
    rows = session.execute(select(QueryRow, CertificateRow).join(CertificateRow, CertificateRow.query_id == QueryRow.id)
                           .order_by(QueryRow.item)).all()
    assert [(c.answer, c.verdict) for _, c in rows] == [("holds", "verified"), ("violated", "falsified")]
    assert all(q.parameters["timeout"] == 30.0 and "declare-const X_0" in q.parameters["vnnlib"] for q, _ in rows)
    violated = rows[1][1]
    prop = read_vnnlib(FIXTURES / "vnnlib" / "prop_12_0.03.vnnlib.gz")
    assert check_counterexample(prop, load_onnx(ONNX).forward, violated.counterexample)


def test_a_batch_csv_with_a_missing_file_names_it(tmp_path, settings):
    csv = tmp_path / "instances.csv"
    csv.write_text("missing.onnx,prop.vnnlib,10\n")
    result = runner.invoke(app, ["vnncomp-batch", str(csv)])
    assert result.exit_code in (3, 4) and "missing.onnx" in " ".join(result.output.split())
