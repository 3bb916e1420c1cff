"""VNN-LIB reader, robustness view, answer words and counterexample files (formulations/vnnlib.py).

The benchmark fixtures are copies of three VNN-COMP 2022 ``mnist_fc`` properties (tests/fixtures/vnnlib);
the network is the copied ``mnist-net_256x2.onnx``, read here with ``onnx`` and cross-checked against
onnxruntime so the label and counterexample checks rest on two independent forward passes.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polycert.formulations.certificate import Verdict
from polycert.formulations.errors import InvalidInputError, UnsupportedOperatorError
from polycert.formulations.network import Network
from polycert.formulations.vnnlib import (
    ANSWER_WORDS,
    answer_is_correct,
    answer_word,
    check_counterexample,
    expected_word,
    format_counterexample,
    format_result,
    normalise_answer_word,
    parse_result,
    read_vnnlib,
    robustness_view,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
VNNLIB = FIXTURES / "vnnlib"
BENCHMARK = ["prop_0_0.03.vnnlib.gz", "prop_7_0.05.vnnlib.gz", "prop_12_0.03.vnnlib.gz"]


def header_label(path: Path) -> int:
    """The label the benchmark's generator wrote in the file's first comment (the reader ignores comments)."""
    return int(re.search(r"label: (\d+)", gzip.open(path, "rt").readline()).group(1))


def eps_of(path: Path) -> float:
    return float(re.fullmatch(r"prop_\d+_([0-9.]+)\.vnnlib\.gz", path.name).group(1))


@pytest.fixture(scope="module")
def mnist_net() -> Network:
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    model = onnx.load(str(FIXTURES / "mnist-net_256x2.onnx"))
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    gemms = [n for n in model.graph.node if n.op_type == "Gemm"]
    weights = [init[n.input[1]] for n in gemms]  # transB = 1: stored (n_out, n_in)
    biases = [init[n.input[2]] for n in gemms]
    return Network.from_arrays(weights, biases, "relu", name="mnist-net_256x2")


# -- the benchmark's files ------------------------------------------------------------------------


@pytest.mark.parametrize("name", BENCHMARK)
def test_benchmark_property_is_a_784_pixel_box_in_unit_range_with_nine_disjuncts(name):
    path = VNNLIB / name
    prop = read_vnnlib(path, n_inputs=784, n_outputs=10)
    eps = eps_of(path)
    assert prop.n_inputs == 784 and prop.n_outputs == 10
    assert np.all(0.0 <= prop.lower) and np.all(prop.lower <= prop.upper) and np.all(prop.upper <= 1.0)
    width = prop.upper - prop.lower
    # an L-inf box of radius eps (written in float32) clipped to [0, 1]: never wider than 2 eps
    assert np.all(width <= 2 * eps + 1e-6)
    clipped = (prop.lower == 0.0) | (prop.upper == 1.0)
    assert np.allclose(width[~clipped], 2 * eps, atol=1e-6)
    assert len(prop.disjuncts) == 9
    assert all(p.n_constraints == 1 for p in prop.disjuncts)


@pytest.mark.parametrize("name", BENCHMARK)
def test_benchmark_property_is_recognised_as_robustness_of_the_header_label(name):
    path = VNNLIB / name
    label, targets = robustness_view(read_vnnlib(path))
    assert label == header_label(path)
    assert targets == tuple(j for j in range(10) if j != label)


def test_fixture_network_matches_onnxruntime(mnist_net):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(FIXTURES / "mnist-net_256x2.onnx"), providers=["CPUExecutionProvider"])
    x = read_vnnlib(VNNLIB / "prop_0_0.03.vnnlib.gz").center
    y_ort = session.run(None, {session.get_inputs()[0].name: x.astype(np.float32).reshape(1, 784, 1)})[0].ravel()
    np.testing.assert_allclose(mnist_net.forward(x), y_ort, atol=1e-4)


@pytest.mark.parametrize("name", ["prop_0_0.03.vnnlib.gz", "prop_7_0.05.vnnlib.gz"])
def test_label_is_the_network_argmax_at_the_box_centre_for_properties_that_hold(name, mnist_net):
    prop = read_vnnlib(VNNLIB / name)
    label, _ = robustness_view(prop)
    assert int(mnist_net.predict(prop.center)) == label
    assert check_counterexample(prop, mnist_net.forward, prop.center) is False


def test_box_centre_of_a_violated_property_is_a_checked_counterexample(mnist_net):
    # answers.csv: mnist-net_256x2, prop_12_0.03 is violated; its image is misclassified (9 -> 8)
    prop = read_vnnlib(VNNLIB / "prop_12_0.03.vnnlib.gz")
    label, _ = robustness_view(prop)
    y = mnist_net.forward(prop.center)
    assert y.max() - y[label] > 1e-3  # decided by a margin far above float32 noise
    assert check_counterexample(prop, mnist_net.forward, prop.center) is True


def test_counterexample_a_rounding_step_outside_the_box_is_rejected(mnist_net):
    prop = read_vnnlib(VNNLIB / "prop_12_0.03.vnnlib.gz")
    x = prop.center.copy()
    i = int(np.argmax(prop.upper < 1.0))
    x[i] = np.nextafter(prop.upper[i], np.inf)
    assert check_counterexample(prop, mnist_net.forward, x) is False
    x[i] = prop.upper[i]  # the bound itself is inside (closed box)
    assert check_counterexample(prop, mnist_net.forward, x) is True


# -- reading: sources -----------------------------------------------------------------------------


def assert_same_property(a, b):
    np.testing.assert_array_equal(a.lower, b.lower)
    np.testing.assert_array_equal(a.upper, b.upper)
    assert len(a.disjuncts) == len(b.disjuncts)
    for p, q in zip(a.disjuncts, b.disjuncts):
        np.testing.assert_array_equal(p.C, q.C)
        np.testing.assert_array_equal(p.d, q.d)


def test_gzip_plain_bytes_and_text_give_the_same_property(tmp_path):
    gz = VNNLIB / "prop_7_0.05.vnnlib.gz"
    text = gzip.decompress(gz.read_bytes()).decode()
    plain = tmp_path / "prop.vnnlib"
    plain.write_text(text)
    disguised = tmp_path / "prop.txt"  # gzip recognised by its magic bytes, not the suffix
    disguised.write_bytes(gz.read_bytes())
    reference = read_vnnlib(gz)
    for source in (plain, str(plain), disguised, gz.read_bytes(), text):
        assert_same_property(read_vnnlib(source), reference)


# -- reading: hand-made files ---------------------------------------------------------------------


def test_bounds_in_either_operand_order_and_top_level_output_asserts_conjoin():
    prop = read_vnnlib(VNNLIB / "box_and_conjunction.vnnlib", n_inputs=2, n_outputs=3)
    np.testing.assert_array_equal(prop.lower, [-0.25, 0.75])
    np.testing.assert_array_equal(prop.upper, [0.5, 1.0])
    (poly,) = prop.disjuncts
    # Y_0 <= Y_1  ->  Y_0 - Y_1 <= 0 ;  3.5 >= Y_2  ->  Y_2 <= 3.5
    np.testing.assert_array_equal(poly.C, [[1, -1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(poly.d, [0, 3.5])
    assert robustness_view(prop) is None


def test_disjunction_of_conjunctions_with_constants_and_linear_terms():
    prop = read_vnnlib(VNNLIB / "or_of_ands.vnnlib")
    first, second = prop.disjuncts
    # Y_0 >= 2 -> -Y_0 <= -2 ;  Y_1 <= Y_0 -> -Y_0 + Y_1 <= 0
    np.testing.assert_array_equal(first.C, [[-1, 0], [-1, 1]])
    np.testing.assert_array_equal(first.d, [-2, 0])
    # Y_0 + 2 Y_1 <= -1.5
    np.testing.assert_array_equal(second.C, [[1, 2]])
    np.testing.assert_array_equal(second.d, [-1.5])
    assert prop.output_violates([2.0, 2.0]) and prop.output_violates([-3.0, 0.5])
    assert not prop.output_violates([1.0, 0.0]) and not prop.output_violates([1.9, 2.0])


def test_strict_comparisons_exclude_their_boundary_and_equality_pins_an_input():
    prop = read_vnnlib(VNNLIB / "strict_and_equal.vnnlib")
    assert prop.lower[1] == prop.upper[1] == 0.5
    assert prop.contains_input([0.5, 0.5])
    assert not prop.contains_input([0.0, 0.5]) and not prop.contains_input([1.0, 0.5])
    assert not prop.contains_input([0.5, 0.5000001])
    assert prop.output_violates([0.0, 1.0]) and not prop.output_violates([1.0, 1.0])
    assert robustness_view(prop) is None  # strict rows are not the robustness form


def test_hand_made_robustness_property_gives_label_and_targets():
    prop = read_vnnlib(VNNLIB / "robustness_label2.vnnlib")
    assert robustness_view(prop) == (2, (0, 1, 3))
    assert prop.output_violates([0, 0, 0, 0])  # a tie is a counterexample: Y_j >= Y_label
    assert not prop.output_violates([0, 0, 1, 0])


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    n_out=st.integers(2, 6),
    n_in=st.integers(1, 5),
)
def test_generated_robustness_properties_read_back_exactly(data, n_out, n_in):
    label = data.draw(st.integers(0, n_out - 1))
    others = [j for j in range(n_out) if j != label]
    targets = data.draw(st.lists(st.sampled_from(others), min_size=1, unique=True))
    finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False)
    lo = np.array(data.draw(st.lists(finite, min_size=n_in, max_size=n_in)))
    hi = lo + np.array(data.draw(st.lists(st.floats(0, 5), min_size=n_in, max_size=n_in)))
    lines = [f"(declare-const X_{i} Real)" for i in range(n_in)] + [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    for i in range(n_in):  # random operand order
        lines.append(f"(assert (>= X_{i} {float(lo[i])!r}))" if i % 2 else f"(assert (<= {float(lo[i])!r} X_{i}))")
        lines.append(f"(assert (<= X_{i} {float(hi[i])!r}))")
    lines.append("(assert (or " + " ".join(f"(and (>= Y_{j} Y_{label}))" for j in targets) + "))")
    prop = read_vnnlib("\n".join(lines), n_inputs=n_in, n_outputs=n_out)
    np.testing.assert_array_equal(prop.lower, lo)
    np.testing.assert_array_equal(prop.upper, hi)
    assert robustness_view(prop) == (label, tuple(sorted(targets)))
    y = np.array(data.draw(st.lists(st.integers(-3, 3), min_size=n_out, max_size=n_out)), dtype=float)
    assert prop.output_violates(y) == any(y[j] >= y[label] for j in targets)


# -- reading: what is refused ---------------------------------------------------------------------

HEADER = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
BOX = "(assert (<= X_0 1))\n(assert (>= X_0 0))\n(assert (<= X_1 1))\n(assert (>= X_1 0))\n"


@pytest.mark.parametrize(
    "line, construct",
    [
        ("(declare-const X_2 Int)", "Int"),
        ("(declare-const Z Real)", "'Z'"),
        ("(define-fun f () Real 1.0)", "define-fun"),
        ("(assert (<= (* Y_0 Y_1) 1))", "product of variables"),
        ("(assert (<= (/ Y_0 Y_1) 1))", "division by a variable"),
        ("(assert (<= (max Y_0 Y_1) 1))", "'max'"),
        ("(assert (not (<= Y_0 Y_1)))", "'not'"),
        ("(assert (=> (<= Y_0 0) (<= Y_1 0)))", "'=>'"),
        ("(assert (forall ((a Real)) (<= a Y_0)))", "'forall'"),
        ("(assert (exists ((a Real)) (<= a Y_0)))", "'exists'"),
        ("(assert (let ((a Y_0)) (<= a 1)))", "'let'"),
        ("(assert (or (<= X_0 0.5) (>= X_1 0.5)))", "over input constraints"),
        ("(assert (or (and (<= X_0 0.5) (>= Y_0 Y_1)) (and (>= Y_1 Y_0))))", "over input constraints"),
        ("(assert (<= X_0 Y_0))", "mixing inputs X and outputs Y"),
        ("(assert (<= (+ X_0 X_1) 1))", "several inputs"),
        ("(assert (<= Y_0 Y_1 Y_0))", "only binary comparisons"),
        ("(assert (<= 0 1))", "without variables"),
        ("(assert Y_0)", "used as a formula"),
    ],
)
def test_unsupported_construct_is_refused_naming_it_and_its_line(line, construct):
    text = HEADER + BOX + line + "\n"
    with pytest.raises(UnsupportedOperatorError) as err:
        read_vnnlib(text)
    assert construct in str(err.value)
    assert "line 9" in str(err.value)


@pytest.mark.parametrize(
    "text, problem",
    [
        (HEADER + BOX + "(assert (<= Y_0 Y_1)", "never closed"),
        (HEADER + BOX + "(assert (<= Y_0 Y_1)))", "unbalanced"),
        (HEADER + "(assert (<= X_0 1))\n(assert (>= X_0 0))\n(assert (<= X_1 1))\n", "X_1"),
        (HEADER + BOX + "(assert (<= Y_0 Y_5))", "Y_5 is used but never declared"),
        (HEADER + "(declare-const X_0 Real)\n" + BOX, "declared twice"),
        ("(declare-const X_0 Real)\n(declare-const X_2 Real)\n(assert (<= X_0 1))", "X_1 is not"),
        (HEADER + BOX + "(assert (<= Y_0 1.2.3))", "'1.2.3'"),
        (HEADER + BOX + "(assert (<= Y_0 nan))", "'nan'"),
        (HEADER + BOX + "(assert (<= X_0 -1))", "empty"),
        (HEADER + BOX + "X_0", "stray token"),
        ("(declare-const Y_0 Real)\n(assert (<= Y_0 1))", "no inputs"),
    ],
)
def test_malformed_text_is_refused_naming_the_problem(text, problem):
    with pytest.raises(InvalidInputError) as err:
        read_vnnlib(text)
    assert problem in str(err.value)


def test_declared_counts_must_match_the_network():
    with pytest.raises(InvalidInputError, match="declares 784 inputs X_i, expected 49"):
        read_vnnlib(VNNLIB / "prop_0_0.03.vnnlib.gz", n_inputs=49)
    with pytest.raises(InvalidInputError, match="declares 10 outputs Y_j, expected 3"):
        read_vnnlib(VNNLIB / "prop_0_0.03.vnnlib.gz", n_outputs=3)


def test_missing_file_corrupt_gzip_and_binary_data_are_invalid_input(tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        read_vnnlib(tmp_path / "absent.vnnlib")
    corrupt = tmp_path / "corrupt.vnnlib.gz"
    corrupt.write_bytes(gzip.compress((HEADER + BOX).encode())[:40])
    with pytest.raises(InvalidInputError, match="gzip"):
        read_vnnlib(corrupt)
    with pytest.raises(InvalidInputError, match="UTF-8"):
        read_vnnlib(b"(\xff\xfe)")


# -- answers and counterexample files -------------------------------------------------------------


def test_verdicts_map_to_competition_and_answers_csv_words():
    assert answer_word(Verdict.VERIFIED) == "unsat" and expected_word("unsat") == "holds"
    assert answer_word(Verdict.FALSIFIED) == "sat" and expected_word("sat") == "violated"
    assert answer_word("unknown") == "unknown" and expected_word("timeout") == "unknown"
    assert normalise_answer_word(" Holds\n") == "unsat" and normalise_answer_word("violated") == "sat"
    assert set(ANSWER_WORDS) >= {"sat", "unsat", "timeout", "error", "unknown"}
    assert answer_is_correct("unsat", "holds") is True
    assert answer_is_correct("sat", "holds") is False
    assert answer_is_correct("timeout", "holds") is None and answer_is_correct("sat", "unknown") is None
    with pytest.raises(InvalidInputError, match="maybe"):
        normalise_answer_word("maybe")


def test_result_files_without_counterexample_are_the_word_alone():
    assert format_result("unsat") == "unsat\n" and format_result("holds") == "unsat\n"
    assert parse_result("timeout\n") == ("timeout", None, None)
    with pytest.raises(InvalidInputError, match="needs the counterexample"):
        format_result("sat")


finite64 = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=80, deadline=None)
@given(x=st.lists(finite64, min_size=1, max_size=12), y=st.lists(finite64, min_size=1, max_size=6))
def test_counterexample_file_round_trips_float64_exactly(x, y):
    word, x_back, y_back = parse_result(format_counterexample(x, y))
    assert word == "sat"
    np.testing.assert_array_equal(x_back, np.array(x))
    np.testing.assert_array_equal(y_back, np.array(y))


def test_counterexample_file_has_the_competition_layout_and_reads_like_its_checker():
    text = format_counterexample([0.125, 1e-7], [-2.5, 3.0])
    lines = text.splitlines()
    assert lines[0] == "sat"
    assert lines[1] == "((X_0 0.125)" and lines[-1] == " (Y_1 3.0))"
    # the way VNN-COMP 2022's checker reads the part after the word: newlines to spaces, outer
    # parentheses off, split on ')', each part '(NAME VALUE' with a single space
    content = " ".join(lines[1:]).strip()
    assert content[0] == "(" and content[-1] == ")"
    pairs = [part.strip()[1:].split(" ") for part in content[1:-1].split(")") if part.strip()]
    assert [(name, float(v)) for name, v in pairs] == [("X_0", 0.125), ("X_1", 1e-7), ("Y_0", -2.5), ("Y_1", 3.0)]
    # a bare counterexample (a .counterexample file) reads too
    assert parse_result("\n".join(lines[1:]))[0] == "sat"


def test_counterexample_with_nan_cannot_be_written():
    with pytest.raises(InvalidInputError, match="NaN"):
        format_counterexample([np.nan], [0.0])


def test_check_counterexample_recomputes_outputs_and_checks_the_box():
    prop = read_vnnlib(VNNLIB / "robustness_label2.vnnlib")
    # f(x) = (x, 0, 0.5 - x, 0): label 2 wins for x < 0.25, ties with Y_0 at x = 0.25
    forward = lambda x: np.array([x[0], 0.0, 0.5 - x[0], 0.0])  # noqa: E731
    assert check_counterexample(prop, forward, [0.25]) is True
    assert check_counterexample(prop, forward, [0.1]) is False
    assert check_counterexample(prop, forward, [0.3]) is False  # outputs violate, but x is outside the box
    with pytest.raises(InvalidInputError, match="1 inputs"):
        check_counterexample(prop, forward, [0.1, 0.2])
