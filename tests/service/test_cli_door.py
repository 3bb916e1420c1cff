"""The command line refuses bad input with one line and a non-zero exit, never a traceback (issue 17, item 5):
a real ``python -m service.cli`` process on a fresh data directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from polycert.cli import EXIT_BAD_INPUT
from tests.live import ROOT, one_line_error, server_env

FIXTURES = ROOT / "tests" / "fixtures"
ONNX = str(FIXTURES / "mnist-net_256x2.onnx")
PROP = str(FIXTURES / "vnnlib" / "prop_0_0.03.vnnlib.gz")


def polycert(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "polycert.cli", *args], cwd=ROOT, env=server_env(tmp_path / "data"),
                          capture_output=True, text=True, timeout=300)


def impossible_onnx(path: Path) -> Path:
    """A Gemm whose weight declares 10 x 784 floats and carries 12: sizes its data cannot fill."""
    from onnx import TensorProto, helper, numpy_helper

    weight = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[10, 784], raw_data=np.zeros(12, np.float32).tobytes())
    node = helper.make_node("Gemm", ["X", "W", "B"], ["Y"], transB=1)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 784])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 10])],
                              [weight, numpy_helper.from_array(np.zeros(10, np.float32), "B")])
    path.write_bytes(helper.make_model(graph).SerializeToString())
    return path


def bad_input(result: subprocess.CompletedProcess) -> str:
    return one_line_error(result, EXIT_BAD_INPUT)


def test_vnncomp_on_an_onnx_file_with_impossible_sizes_says_so_in_one_line(tmp_path):
    message = bad_input(polycert(tmp_path, "vnncomp", str(impossible_onnx(tmp_path / "bad.onnx")), PROP))
    assert "bad.onnx" in message and "cannot reshape array of size 12 into shape (10,784)" in message


def test_vnncomp_with_a_result_file_in_a_missing_folder_is_refused_before_any_work(tmp_path):
    message = bad_input(polycert(tmp_path, "vnncomp", ONNX, PROP, "--result", "/proc/nope/x"))
    assert message == "cannot write the result file /proc/nope/x: /proc/nope is not a folder"


@pytest.mark.parametrize("timeout", ["-5", "0", "nan", "inf"])
def test_vnncomp_refuses_a_timeout_that_is_not_a_positive_number(tmp_path, timeout):
    message = bad_input(polycert(tmp_path, "vnncomp", ONNX, PROP, "--timeout", timeout))
    assert message.startswith("--timeout must be a positive number of seconds, got ")


@pytest.mark.parametrize("eps", ["nan", "inf", "-inf"])
def test_submit_refuses_a_non_finite_eps_with_the_reason(tmp_path, eps):
    # (eps's range against the network's input domain is checked elsewhere; this is only about NaN and inf)
    message = bad_input(polycert(tmp_path, "submit", "--eps", eps, "--stop", "1"))
    assert message == "eps.0: Input should be a finite number"


def test_submit_refuses_an_unknown_solver_naming_the_valid_ones(tmp_path):
    message = bad_input(polycert(tmp_path, "submit", "--solver", "cplex", "--stop", "1"))
    assert "unknown solver 'cplex'; valid MIP solvers: scip" in message


def test_invert_refuses_a_nan_radius(tmp_path):
    message = bad_input(polycert(tmp_path, "invert", "injectivity", "--radius", "nan", "--delta", "0.1"))
    assert message == "radius: Input should be a finite number"


@pytest.mark.parametrize("args, option", [(["--eps", "nan"], "--eps"), (["--signature-eps", "inf"], "--signature-eps")])
def test_study_refuses_a_non_finite_radius_before_any_work(tmp_path, args, option):
    message = bad_input(polycert(tmp_path, "study", "--out", str(tmp_path / "report"), *args))
    assert message.startswith(f"{option} must be a finite number >= 0, got ")
    assert not (tmp_path / "report").exists()


def test_read_commands_work_in_a_new_data_directory_of_the_embedded_default(tmp_path):
    jobs = polycert(tmp_path, "jobs")
    assert jobs.returncode == 0 and "0 jobs" in jobs.stdout, jobs.stdout + jobs.stderr
    listed = polycert(tmp_path, "networks", "list")
    assert listed.returncode == 0 and "networks (0)" in listed.stdout, listed.stdout + listed.stderr
    missing = polycert(tmp_path, "results", "7")
    assert missing.returncode == 3 and missing.stderr.strip() == "polycert: error: no job with id 7"
