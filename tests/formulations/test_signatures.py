"""Signatures: a hand-made network whose optimum is known in closed form; aggregation and the tests."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from polycert.formulations.activations import get_activation
from polycert.formulations.errors import InvalidInputError
from polycert.formulations.network import Network
from polycert.formulations.signatures import (
    Signature,
    activation_regions,
    aggregate,
    benjamini_hochberg,
    binomial_pvalues,
    maximize_logit,
    region_of,
    significant,
)

GELU = get_activation("gelu")

# 4 pixels -> 2 GELU neurons -> 3 logits. Both neurons increase with pixels 0, 1, 3 and decrease with
# pixel 2, and their pre-activations stay above GELU's minimum (-0.75) on the ball, where GELU increases;
# logit 0 = 2 a0 + 0.5 a1 is therefore maximised at the box corner x = (hi, hi, lo, hi).
W1 = np.array([[1.0, 1.0, -1.0, 0.5], [0.5, 0.5, -0.5, 0.25]])
B1 = np.array([1.0, 0.5])
W2 = np.array([[2.0, 0.5], [0.0, 1.0], [-1.0, 0.0]])
B2 = np.zeros(3)
X0 = np.full(4, 0.5)
EPS = 0.2


def hand_network() -> Network:
    return Network.from_arrays([W1, W2], [B1, B2], ["gelu", "identity"])


def closed_form() -> tuple[np.ndarray, float]:
    corner = np.array([0.7, 0.7, 0.3, 0.7])
    z = W1 @ corner + B1
    return z, float(2.0 * GELU(z[0]) + 0.5 * GELU(z[1]))


@pytest.mark.parametrize("method", ["lp", "mip"])
def test_signature_of_hand_made_network_lists_exactly_the_corner_pixels_and_upper_lines(method):
    sig = maximize_logit(hand_network(), X0, 0, EPS, method=method)
    assert set(np.flatnonzero(sig.pixels_upper)) == {0, 1, 3}
    assert set(np.flatnonzero(sig.pixels_lower)) == {2}
    z, best = closed_form()
    # both neurons sit at their largest pre-activation: z0 = 2.45 > sqrt(2) (near-linear region),
    # z1 = 1.225 between the minimum and sqrt(2) (the convex rise)
    assert z == pytest.approx([2.45, 1.225])
    _, names = activation_regions(GELU)
    assert [names[r] for r in sig.regions] == ["linear", "rise"]
    assert sig.bound >= best - 1e-9
    assert sig.bound - best <= 1e-4
    assert best - 1e-4 <= sig.achieved <= best + 1e-12
    if method == "lp":
        # the active lines are upper lines (or the image's upper bound) of both neurons: the objective pushes
        # a0 and a1 up, nothing else
        assert {(layer, neuron) for layer, neuron, side, _ in sig.lines} == {(0, 0), (0, 1)}
        assert {side for *_, side, _ in sig.lines} == {"upper"}
        assert list(sig.line_sides([2])) == [2, 2]
    else:
        # the active segment of each neuron is the one holding its largest pre-activation
        for j in range(2):
            lo, hi = sig.segment_bounds[(0, j)]
            assert lo <= z[j] <= hi + 1e-12
            assert hi == pytest.approx(z[j], abs=1e-9)


def test_signature_rejects_a_class_out_of_range_and_an_unknown_method():
    with pytest.raises(InvalidInputError):
        maximize_logit(hand_network(), X0, 3, EPS)
    with pytest.raises(InvalidInputError):
        maximize_logit(hand_network(), X0, 0, EPS, method="sdp")


def test_gelu_regions_split_at_inflections_and_minimum():
    edges, names = activation_regions(GELU)
    assert names == ("tail", "dip", "rise", "linear")
    assert edges[0] == pytest.approx(-np.sqrt(2)) and edges[2] == pytest.approx(np.sqrt(2))
    assert edges[1] == pytest.approx(-0.75179, abs=1e-4)
    assert list(region_of(GELU, [-3.0, -1.0, 0.0, 3.0])) == [0, 1, 2, 3]


def _sig(low, up, lines, regions) -> Signature:
    return Signature(cls=0, eps=0.1, method="lp", bound=0.0, achieved=0.0, point=np.zeros(len(low)),
                     pixels_lower=np.array(low, bool), pixels_upper=np.array(up, bool), lines=tuple(lines),
                     regions=np.array(regions))


def test_aggregate_counts_pixels_sides_and_regions():
    sigs = [
        _sig([1, 0, 0], [0, 1, 1], [(0, 0, "upper", 1), (1, 0, "lower", 0)], [0, 3, 2]),
        _sig([1, 1, 0], [0, 0, 1], [(0, 0, "upper", 0), (0, 0, "lower", 2)], [0, 3, 3]),
    ]
    s = aggregate(sigs, [2, 1], 4)
    assert s.n == 2
    assert list(s.pixel_lower) == [2, 1, 0] and list(s.pixel_upper) == [0, 1, 2]
    # neuron (0,0): upper then both; (0,1): none twice; (1,0): lower then none
    assert s.sides.tolist() == [[0, 0, 1, 1], [2, 0, 0, 0], [1, 1, 0, 0]]
    assert s.regions.tolist() == [[2, 0, 0, 0], [0, 0, 0, 2], [0, 0, 1, 1]]
    with pytest.raises(InvalidInputError):
        aggregate([], [2], 4)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 60), data=st.data(), p0=st.floats(0.01, 0.99))
def test_binomial_pvalues_are_twice_the_smaller_exact_tail(n, data, p0):
    k = data.draw(st.integers(0, n))
    ours = float(binomial_pvalues(k, n, p0))
    less = stats.binomtest(k, n, p0, alternative="less").pvalue
    greater = stats.binomtest(k, n, p0, alternative="greater").pvalue
    assert ours == pytest.approx(min(1.0, 2 * min(less, greater)), rel=1e-9, abs=1e-12)


def test_benjamini_hochberg_matches_scipy():
    rng = np.random.default_rng(3)
    p = rng.uniform(size=40) ** 3
    assert np.allclose(benjamini_hochberg(p), stats.false_discovery_control(p, method="bh"))


def test_significant_flags_only_the_feature_far_from_its_baseline():
    counts = np.array([50, 52, 95])
    q, mask = significant(counts, 100, np.array([0.5, 0.5, 0.5]))
    assert list(mask) == [False, False, True]
    assert q[2] < 1e-10
    with pytest.raises(InvalidInputError):
        binomial_pvalues(np.array([5]), 3, 0.5)


# -- the batched entry and the known-point check of signature jobs ----------------------------------------


@pytest.mark.parametrize("method", ["lp", "mip"])
def test_maximize_logit_batch_answers_each_row_soundly_in_row_order_and_its_mip_matches_maximize_logit(method):
    from polycert.formulations.signatures import maximize_logit_batch

    net = hand_network()
    xs = np.array([X0, X0 + 0.1, X0 - 0.1])
    classes, eps = np.array([0, 1, 2]), np.array([EPS, 0.1, 0.0])
    sigs = maximize_logit_batch(net, xs, classes, eps, method=method, domain=(0.0, 1.0))
    assert [s.cls for s in sigs] == [0, 1, 2] and [s.eps for s in sigs] == [EPS, 0.1, 0.0]
    rng = np.random.default_rng(0)
    for x, c, e, sig in zip(xs, classes, eps, sigs):
        assert np.all(np.abs(sig.point - x) <= e + 1e-12) and sig.achieved == float(net.forward(sig.point)[c])
        samples = np.clip(x + rng.uniform(-e, e, size=(500, x.size)), 0.0, 1.0)
        assert sig.bound >= net.forward(samples)[:, c].max() and sig.bound >= sig.achieved
        one = maximize_logit(net, x, int(c), float(e), method=method, domain=(0.0, 1.0))
        if method == "mip":  # both exact to the tolerance: the same maximum
            assert abs(sig.achieved - one.achieved) <= 2e-4 and sig.bound - sig.achieved <= 1e-4 + 1e-9
        assert sig.tags and (sig.pixels_lower | sig.pixels_upper).any() == (e > 0)


def test_maximize_logit_batch_refuses_rows_without_a_class_and_a_radius_each():
    from polycert.formulations.signatures import maximize_logit_batch

    with pytest.raises(InvalidInputError, match="2 inputs need 2 classes"):
        maximize_logit_batch(hand_network(), np.array([X0, X0]), np.array([0]), np.array([EPS, EPS]),
                             method="lp", domain=(0.0, 1.0))
    with pytest.raises(InvalidInputError):
        maximize_logit_batch(hand_network(), X0, np.array([0]), np.array([EPS]), method="lp", domain=(0.0, 1.0))


def test_the_logit_attack_finds_the_closed_form_maximum_inside_the_ball():
    from polycert.formulations.signatures import logit_attack

    points, values = logit_attack(hand_network(), X0[None, :], np.array([0]), np.array([EPS]), domain=(0.0, 1.0))
    _, best = closed_form()
    assert np.all(np.abs(points[0] - X0) <= EPS) and values[0] == pytest.approx(best, abs=1e-9)
    assert values[0] == pytest.approx(float(hand_network().forward(points[0])[0]), abs=0)


def test_a_bound_below_a_known_value_is_rejected_and_one_above_it_kept():
    from polycert.formulations.errors import UnsoundAnswerError
    from polycert.formulations.signatures import reject_below_known

    sig = maximize_logit(hand_network(), X0, 0, EPS, method="lp")
    reject_below_known(sig, sig.achieved)  # no error: the bound is above what the network attains
    with pytest.raises(UnsoundAnswerError, match="answer rejected"):
        reject_below_known(sig, sig.bound + 1e-3)
