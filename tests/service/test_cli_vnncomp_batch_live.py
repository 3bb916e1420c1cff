"""``polycert vnncomp-batch`` on a benchmark laid out as VNN-COMP ships one (issue 17, item 7): the csv names
``.vnnlib`` files that exist only as ``.vnnlib.gz``, may start with a header, and ``--results-dir`` gets the
competition's result file per instance. A real ``python -m service.cli`` process, embedded default."""

from __future__ import annotations

import subprocess
import sys

from polycert.formulations.loaders import load_onnx
from polycert.formulations.vnnlib import check_counterexample, parse_result, read_vnnlib
from tests.live import ROOT, server_env

FIXTURES = ROOT / "tests" / "fixtures"


def benchmark(tmp_path, header: bool):
    """onnx/ and vnnlib/ folders beside instances.csv, whose property names end in .vnnlib (the files in .gz)."""
    (tmp_path / "onnx").mkdir()
    (tmp_path / "vnnlib").mkdir()
    (tmp_path / "onnx" / "mnist-net_256x2.onnx").symlink_to(FIXTURES / "mnist-net_256x2.onnx")
    for prop in ("prop_0_0.03", "prop_12_0.03"):
        (tmp_path / "vnnlib" / f"{prop}.vnnlib.gz").symlink_to(FIXTURES / "vnnlib" / f"{prop}.vnnlib.gz")
    csv = tmp_path / "instances.csv"
    csv.write_text(("onnx,vnnlib,timeout\n" if header else "")
                   + "onnx/mnist-net_256x2.onnx,vnnlib/prop_0_0.03.vnnlib,60\n"
                   + "onnx/mnist-net_256x2.onnx,vnnlib/prop_12_0.03.vnnlib,60\n")
    return csv


def run(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "polycert.cli", *args], cwd=ROOT, env=server_env(tmp_path / "data", COLUMNS="200"),
                          capture_output=True, text=True, timeout=600)


def test_a_benchmark_csv_with_a_header_and_gz_properties_writes_one_result_file_per_instance(tmp_path):
    csv = benchmark(tmp_path, header=True)
    out = tmp_path / "results"
    result = run(tmp_path, "vnncomp-batch", str(csv), "--timeout-scale", "0.5", "--results-dir", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "holds 1, violated 1 of 2 instances" in result.stdout
    assert "2 result files written to" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["mnist-net_256x2_prop_0_0.03.counterexample",
                                                     "mnist-net_256x2_prop_12_0.03.counterexample"]
    assert (out / "mnist-net_256x2_prop_0_0.03.counterexample").read_text() == "unsat\n"
    word, x, y = parse_result((out / "mnist-net_256x2_prop_12_0.03.counterexample").read_text())
    assert word == "sat"
    net = load_onnx(FIXTURES / "mnist-net_256x2.onnx")
    assert check_counterexample(read_vnnlib(FIXTURES / "vnnlib" / "prop_12_0.03.vnnlib.gz"), net.forward, x)


def test_a_property_missing_in_both_forms_is_named(tmp_path):
    csv = benchmark(tmp_path, header=False)
    csv.write_text(csv.read_text() + "onnx/mnist-net_256x2.onnx,vnnlib/prop_99.vnnlib,60\n")
    result = run(tmp_path, "vnncomp-batch", str(csv))
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert "prop_99.vnnlib" in result.stderr


def test_a_timeout_that_is_not_a_number_after_the_first_line_is_bad_input(tmp_path):
    csv = benchmark(tmp_path, header=False)
    csv.write_text(csv.read_text() + "onnx/mnist-net_256x2.onnx,vnnlib/prop_0_0.03.vnnlib,soon\n")
    result = run(tmp_path, "vnncomp-batch", str(csv))
    assert result.returncode == 4
    assert "instances.csv:3: the timeout 'soon' is not a number" in result.stderr
