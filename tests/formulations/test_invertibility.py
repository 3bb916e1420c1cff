import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from polycert.formulations.certificate import Verdict
from polycert.formulations.errors import InvalidInputError
from polycert.formulations.input_sets import distance
from polycert.formulations.invertibility import (
    as_image,
    certified_radius,
    decision_invariance,
    dependence,
    injectivity,
    injectivity_radius,
    preimage,
    shared_prefix,
)
from polycert.formulations.network import Layer, Network
from polycert.formulations.transforms import prune

NORMS = ("linf", "l1")


def relu_net(weights, biases, name="net") -> Network:
    return Network.from_arrays(weights, biases, "relu", name=name)


def random_relu(seed: int, sizes=(2, 6, 2)) -> Network:
    rng = np.random.default_rng(seed)
    return relu_net([rng.standard_normal((m, n)) for n, m in zip(sizes, sizes[1:])],
                    [0.3 * rng.standard_normal(m) for m in sizes[1:]])


def injective_relu() -> Network:
    """f(x) = B g(A x + a) with g(t) = 1.5 relu(t) - 0.5 relu(-t) strictly increasing: injective, not affine."""
    A = np.array([[1.0, 2.0], [-1.0, 1.0]])
    B = np.array([[0.5, 1.0], [2.0, -1.0]])
    a = np.array([0.1, -0.2])
    W1 = np.vstack([A, -A])
    b1 = np.concatenate([a, -a])
    W2 = B @ np.hstack([1.5 * np.eye(2), -0.5 * np.eye(2)])
    return relu_net([W1, W2], [b1, np.zeros(2)])


def check_witness(cert, f: Network, radius: float, *, g: Network | None = None, y_is_center=False, tol=1e-6):
    """The witness pair lies in the ball, matches on f, and attains the certificate's lower bound."""
    w = cert.extra["witness"]
    x, y, c = w["x"], w["y"], cert.extra["center"]
    assert distance(x, c, cert.norm) <= radius + 1e-9 and distance(y, c, cert.norm) <= radius + 1e-9
    if y_is_center:
        np.testing.assert_array_equal(y, c)
    assert np.abs(f.forward(x) - f.forward(y)).max() <= cert.extra["delta"] + tol
    value = distance(x, y, cert.norm) if g is None else distance(g.forward(x), g.forward(y), cert.norm)
    assert value == pytest.approx(cert.lower, abs=1e-12)
    assert cert.lower <= cert.upper


@pytest.mark.parametrize("norm", NORMS)
def test_invertible_affine_map_is_certified_injective(norm):
    A = np.array([[2.0, 1.0, 0.0], [0.5, 3.0, -1.0], [0.0, 1.0, 1.0]])
    net = Network.from_arrays([A], [np.ones(3)], ["identity"])
    cert = injectivity(net, np.array([0.3, -0.2, 0.1]), 0.5, norm=norm)
    assert cert.kind == "injectivity"
    assert cert.verdict == Verdict.VERIFIED
    assert 0.0 <= cert.lower <= cert.upper <= 1e-4


@pytest.mark.parametrize("norm", NORMS)
def test_relu_network_built_injective_has_p_star_zero(norm):
    net = injective_relu()
    cert = injectivity(net, np.array([0.05, 0.1]), 1.0, norm=norm)
    assert cert.verdict == Verdict.VERIFIED
    assert cert.upper <= 1e-4
    # the ball holds several linear pieces: the network really is non-linear there
    z = net.pre_activations(np.array([[0.05 - 1, 0.1], [0.05 + 1, 0.1]]))[0]
    assert (np.sign(z[0]) != np.sign(z[1])).any()


@pytest.mark.parametrize("norm", NORMS)
def test_identical_hidden_neurons_give_the_diameter_along_the_ignored_coordinate(norm):
    # hidden relu(x1) twice; the outputs never see x2, so p* = 2r, reached moving x2 alone
    net = relu_net([np.array([[1.0, 0.0], [1.0, 0.0]]), np.eye(2)], [np.zeros(2), np.zeros(2)])
    r = 0.4
    cert = injectivity(net, np.array([0.3, -0.2]), r, norm=norm)
    assert cert.verdict == Verdict.FALSIFIED
    assert cert.lower == pytest.approx(2 * r, abs=1e-6)
    assert cert.upper == pytest.approx(2 * r, abs=1e-5)
    check_witness(cert, net, r)
    w = cert.extra["witness"]
    assert abs(w["x"][1] - w["y"][1]) == pytest.approx(2 * r, abs=1e-6)
    np.testing.assert_array_equal(cert.counterexample, w["x"])


@pytest.mark.parametrize("norm", NORMS)
def test_zero_output_row_gives_the_diameter_along_the_null_direction(norm):
    # f(x) = (relu(s) - relu(-s), 0) with s = x1 + x2: only s is seen, so pairs move along (1, -1)
    net = relu_net([np.array([[1.0, 1.0], [-1.0, -1.0]]), np.array([[1.0, -1.0], [0.0, 0.0]])],
                   [np.zeros(2), np.zeros(2)])
    r = 0.25
    cert = injectivity(net, np.array([0.1, 0.2]), r, norm=norm)
    assert cert.lower == pytest.approx(2 * r, abs=1e-6)
    assert cert.upper == pytest.approx(2 * r, abs=1e-5)
    check_witness(cert, net, r)
    d = cert.extra["witness"]["x"] - cert.extra["witness"]["y"]
    assert d[0] == pytest.approx(-d[1], abs=1e-6)


@given(st.integers(0, 10_000), st.sampled_from(NORMS), st.floats(0.05, 0.6))
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_preimage_of_f_c_is_bounded_by_injectivity(seed, norm, radius):
    net = random_relu(seed, (2, 5, 2))
    c = np.random.default_rng(seed).uniform(-0.5, 0.5, 2)
    inj = injectivity(net, c, radius, norm=norm)
    pre = preimage(net, c, radius, norm=norm)
    assert pre.kind == "preimage"
    # y = c is one choice of y in Problem 1: its optimum cannot exceed Problem 1's
    assert pre.lower <= inj.upper + 1e-6
    assert pre.upper <= inj.upper + 1e-5
    check_witness(pre, net, radius, y_is_center=True)
    check_witness(inj, net, radius)


@given(st.integers(0, 10_000), st.sampled_from(NORMS))
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_preimage_upper_bound_holds_for_sampled_points_within_delta(seed, norm):
    # soundness against sampling: every sampled x with ||f(x) - f(c)|| <= delta is at most `upper` from c
    net = random_relu(seed, (2, 6, 2))
    c, r, delta = np.zeros(2), 0.5, 0.05
    cert = preimage(net, c, r, norm=norm, delta=delta)
    pts = np.random.default_rng(seed).uniform(-r, r, (4000, 2))
    pts = pts[distance(pts, c, norm) <= r]
    ok = np.abs(net.forward(pts) - net.forward(c)).max(axis=1) <= delta
    assert ok.any()  # c's neighbourhood itself qualifies
    assert distance(pts[ok], c, norm).max() <= cert.upper + 1e-9
    check_witness(cert, net, r, y_is_center=True)


def test_dependence_of_a_network_on_itself_is_zero():
    f = random_relu(0, (2, 8, 8, 2))
    for norm in NORMS:
        cert = dependence(f, f, np.array([0.1, 0.2]), 1.0, norm=norm)
        assert cert.kind == "dependence"
        assert cert.verdict == Verdict.VERIFIED and cert.upper <= 1e-4


def test_a_linear_function_of_f1_depends_on_f1_through_the_full_mip():
    f = random_relu(0, (2, 8, 8, 2))
    M = np.array([[1.0, 2.0], [-3.0, 0.5]])
    last = f.layers[-1]
    g = f.with_layers([*f.layers[:-1], Layer(M @ last.weight, M @ last.bias + 1.0, "identity")])
    assert shared_prefix(f, g) == 2  # the last layers differ: g's copies encode its last layer
    cert = dependence(f, g, np.array([0.1, 0.2]), 0.5)
    assert cert.verdict == Verdict.VERIFIED and cert.upper <= 1e-4


def test_pruned_network_is_not_a_function_of_the_original_and_the_witness_checks_out():
    f = random_relu(0, (2, 8, 8, 2))
    g = prune(f, 0.5)
    r = 0.5
    for norm in NORMS:
        cert = dependence(f, g, np.array([0.1, 0.2]), r, norm=norm)
        assert cert.verdict == Verdict.FALSIFIED and cert.lower > 1e-3
        assert cert.upper - cert.lower <= 1e-4
        check_witness(cert, f, r, g=g)
        assert cert.extra["network2"] == g.digest()


def test_dependence_is_asymmetric_when_one_network_drops_an_output():
    f1 = random_relu(3, (2, 6, 2))
    last = f1.layers[-1]
    f2 = f1.with_layers([f1.layers[0], Layer(np.vstack([last.weight[:1], np.zeros((1, 6))]),
                                             np.array([last.bias[0], 0.0]), "identity")])
    c, r = np.zeros(2), 1.0
    assert dependence(f1, f2, c, r).verdict == Verdict.VERIFIED  # f2 is a function of f1
    back = dependence(f2, f1, c, r)  # f1 is not a function of f2 (one output forgotten)
    assert back.verdict == Verdict.FALSIFIED
    check_witness(back, f2, r, g=f1)


def test_certified_radius_of_a_fold_at_one_is_one():
    # f(x) = x - 2 relu(x - 1) increases up to 1 and decreases after: injective on [-r, r] iff r <= 1
    # (beyond, x = 1 - e and y = 1 + e collide, at distance 2e)
    net = relu_net([np.array([[1.0], [-1.0], [1.0]]), np.array([[1.0, -1.0, -2.0]])],
                   [np.array([0.0, 0.0, -1.0]), np.zeros(1)])
    assert net.forward(np.array([1.5]))[0] == pytest.approx(0.5)
    cert = injectivity_radius(net, np.zeros(1), tolerance=1e-4, gap=1e-3)
    assert cert.kind == "injectivity-radius"
    assert cert.verdict == Verdict.VERIFIED
    assert 1.0 - 1e-3 <= cert.lower <= 1.0 + 1e-4
    assert cert.upper - cert.lower <= 1e-3 and cert.extra["upper_falsified"]
    radii = [e["radius"] for e in cert.extra["evaluations"]]
    assert radii[:3] == pytest.approx([0.1, 0.5, 2.5])  # the paper's growth by 5 from 0.1


def test_certified_radius_stops_at_max_radius_when_always_certified():
    A = np.array([[1.0, 1.0], [0.0, 1.0]])
    net = Network.from_arrays([A], [np.zeros(2)], ["identity"])
    cert = injectivity_radius(net, np.zeros(2), max_radius=3.0)
    assert cert.lower == 3.0 and cert.upper == np.inf and cert.verdict == Verdict.VERIFIED


def test_certified_radius_rejects_bad_growth():
    with pytest.raises(InvalidInputError):
        certified_radius(lambda r: None, growth=1.0)


def linear_decision_net() -> Network:
    # logits (x1 - 0.3, 0) through relu(s) - relu(-s): class 0 iff x1 > 0.3; x2, x3 are ignored
    W1 = np.array([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    b1 = np.array([-0.3, 0.3])
    W2 = np.array([[1.0, -1.0], [0.0, 0.0]])
    return relu_net([W1, W2], [b1, np.zeros(2)])


@pytest.mark.parametrize("norm, expected", [("linf", 0.8), ("l1", 0.6 + 0.8 + 0.5)])
def test_decision_invariance_reaches_the_far_corner_of_the_decision_region(norm, expected):
    net = linear_decision_net()
    c = np.array([0.9, 0.2, 0.5])
    cert = decision_invariance(net, c, norm=norm)
    assert cert.kind == "invariance" and cert.label == 0
    assert cert.lower == pytest.approx(expected, abs=1e-4)
    assert cert.upper == pytest.approx(expected, abs=1e-4)
    w = cert.extra["witness"]
    assert net.predict(w["x"]) == 0 and w["margin"] > 0
    assert ((w["x"] >= 0) & (w["x"] <= 1)).all()


@given(st.integers(0, 10_000))
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_decision_invariance_bounds_every_sampled_input_of_the_same_class(seed):
    rng = np.random.default_rng(seed)
    net = relu_net([rng.standard_normal((3, 4)), rng.standard_normal((3, 3))], [rng.standard_normal(3) * 0.3, np.zeros(3)])
    c = rng.uniform(0, 1, 4)
    logits = np.sort(net.forward(c))
    if logits[-1] == logits[-2]:  # a tie at the centre: no decision to keep (tested below)
        with pytest.raises(InvalidInputError, match="strictly first"):
            decision_invariance(net, c, norm="linf")
        return
    cert = decision_invariance(net, c, norm="linf")
    pts = rng.uniform(0, 1, (5000, 4))
    same = net.predict(pts) == net.predict(c)
    if same.any():
        assert distance(pts[same], c, "linf").max() <= cert.upper + 1e-9
    assert cert.lower <= cert.upper


def test_logits_within_delta_invariance_is_a_preimage_with_tolerance():
    net = linear_decision_net()
    c = np.array([0.9, 0.2, 0.5])
    cert = decision_invariance(net, c, norm="linf", delta=0.05)
    # logit 0 = x1 - 0.3 may move by 0.05: x1 in [0.85, 0.95], x2 to 1 gives 0.8 still
    assert cert.lower == pytest.approx(0.8, abs=1e-6)
    narrow = decision_invariance(net, np.array([0.5, 0.5, 0.5]), norm="l1", delta=0.05)
    assert narrow.lower == pytest.approx(0.05 + 0.5 + 0.5, abs=1e-5)


def test_smooth_injectivity_brackets_the_grid_answer_around_the_gelu_minimum():
    # f = gelu on [-1.25, -0.25]: it falls to its minimum at -0.75179 and rises again
    net = Network.from_arrays([np.ones((1, 1)), np.ones((1, 1))], [np.zeros(1), np.zeros(1)], ["gelu", "identity"])
    c, r, delta = np.array([-0.75]), 0.5, 1e-3
    cert = injectivity(net, c, r, delta=delta, gap=1e-3)
    grid = np.linspace(-1.25, -0.25, 2001)[:, None]
    vals = net.forward(grid)[:, 0]
    close = np.abs(vals[:, None] - vals[None, :]) <= delta
    grid_best = np.abs(grid[:, 0][:, None] - grid[:, 0][None, :])[close].max()
    assert cert.lower <= grid_best + 1e-3 and grid_best <= cert.upper + 1e-9
    assert cert.upper - cert.lower <= 1e-3 + 1e-9
    check_witness(cert, net, r, tol=0.0)
    assert cert.extra["delta"] == delta


def test_certificate_is_json_ready():
    cert = injectivity(injective_relu(), np.zeros(2), 0.3)
    text = json.dumps(cert.to_dict())
    assert '"kind": "injectivity"' in text and '"witness"' in text


@pytest.mark.parametrize("call, message", [
    (lambda n: injectivity(n, np.zeros(2), 0.1, norm="l2", solver="highs"), "L2"),  # not a quadratic back-end
    (lambda n: injectivity(n, np.zeros(2), -0.1), "radius"),
    (lambda n: injectivity(n, np.zeros(3), 0.1), "expects 2"),
    (lambda n: injectivity(Network.from_arrays([np.eye(2), np.eye(2)], [np.zeros(2)] * 2, "gelu"), np.zeros(2), 0.1),
     "delta"),
    (lambda n: dependence(n, Network.from_arrays([np.eye(3)], [np.zeros(3)], ["identity"]), np.zeros(2), 0.1), "inputs"),
    (lambda n: decision_invariance(n, np.zeros(2), domain=None), "radius"),
])
def test_bad_queries_raise_invalid_input_naming_the_problem(call, message):
    with pytest.raises(InvalidInputError, match=message):
        call(random_relu(0))


def test_as_image_reshapes_square_inputs():
    assert as_image(np.arange(49.0)).shape == (7, 7)
    with pytest.raises(InvalidInputError):
        as_image(np.arange(5.0))
