"""The engine answers the question asked: the ball clipped to the input domain it is given, whatever that
domain is (scalar or per-coordinate, bounded or not), and nothing outside it.

The key network's margin (class 0 against class 1) is 0.5 on [-0.02, 1] and falls below zero left of
-0.0300 (a ReLU that switches on at -0.02 with slope 50): the ball of radius 0.1 around 0.05 holds a
counterexample on [-1, 1] (it reaches -0.05) and none on [0, 1] (it stops at 0).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polycert.formulations.cascade import CascadeSettings, certify_batch
from polycert.formulations.input_sets import InputSet
from polycert.formulations.network import Network
from polycert.formulations.robustness import certify
from tests.formulations.helpers import random_network, relu_enumeration_min_margin

INF = math.inf


def key_network(scale: float = 1.0) -> Network:
    """margin(x) = 0.5 - relu(-50 x - 1) + 0.1 relu(x); ``scale`` rescales the hidden layer (the same function)."""
    w1, b1 = np.array([[-50.0], [1.0]]) * scale, np.array([-1.0, 0.0]) * scale
    w2, b2 = np.array([[-1.0, 0.1], [0.0, 0.0]]) / scale, np.array([0.5, 0.0])
    return Network.from_arrays([w1, w2], [b1, b2], "relu", name="key")


def exact_min_margin_1d(net: Network, lo: float, hi: float) -> float:
    """The exact minimum over [lo, hi] of a one-input ReLU network's margin: it is piecewise linear, so the
    minimum is at an end or at a kink (where a hidden neuron's pre-activation is zero)."""
    layer = net.layers[0]
    kinks = [-b / w for w, b in zip(layer.weight[:, 0], layer.bias) if w != 0]
    points = np.array([lo, hi] + [k for k in kinks if lo < k < hi])[:, None]
    out = net.forward(points)
    return float((out[:, 0] - out[:, 1]).min())


@pytest.mark.parametrize("method", ["lp", "mip"])
@pytest.mark.parametrize("engine", ["cascade", "certify"])
def test_the_same_ball_on_minus_one_to_one_and_on_zero_to_one_gets_different_answers_each_exact(method, engine):
    net, centre, eps = key_network(), np.array([0.05]), 0.1
    answers = {}
    for domain in ((-1.0, 1.0), (0.0, 1.0)):
        if engine == "cascade":
            cert = certify_batch(net, centre[None, :], [0], [eps], method=method, domain=domain)[0]
        else:
            cert = certify(net, centre, 0, eps, method=method, domain=domain)
        lo, hi = max(centre[0] - eps, domain[0]), min(centre[0] + eps, domain[1])
        exact = exact_min_margin_1d(net, lo, hi)
        assert cert.lower <= exact + 1e-9 and cert.upper >= exact - 1e-9  # the bracket holds the true minimum
        answers[domain] = cert.verdict.value
        if cert.verdict.value == "falsified":
            cex = np.asarray(cert.counterexample)
            assert lo <= cex[0] <= hi and cex[0] < 0  # in ball ∩ [-1, 1], left of the domain [0, 1]
            assert net.forward(cex)[0] - net.forward(cex)[1] < 0
    assert exact_min_margin_1d(net, -0.05, 0.15) < 0 < exact_min_margin_1d(net, 0.0, 0.15)
    assert answers == {(-1.0, 1.0): "falsified", (0.0, 1.0): "verified"}


@pytest.mark.parametrize("norm", ["linf", "l1", "l2"])
def test_an_unbounded_domain_is_the_plain_ball(norm):
    net = key_network()
    cert = certify_batch(net, np.array([[0.05]]), [0], [0.1], method="mip", norm=norm, domain=(-INF, INF))[0]
    assert cert.verdict.value == "falsified" and -0.05 - 1e-12 <= cert.counterexample[0] < -0.03


def test_a_raw_pixel_domain_takes_a_radius_above_one():
    key = key_network()
    pixels = Network.from_arrays([key.layers[0].weight / 255, key.layers[1].weight], [key.layers[0].bias, key.layers[1].bias],
                                 "relu")  # key(x / 255): the same question with inputs in [0, 255]
    for domain, verdict in (((0.0, 255.0), "verified"), ((-255.0, 255.0), "falsified")):
        cert = certify_batch(pixels, np.array([[0.05 * 255]]), [0], [0.1 * 255], method="mip", domain=domain)[0]
        assert cert.verdict.value == verdict


def test_a_per_coordinate_domain_is_respected_coordinate_by_coordinate():
    rng = np.random.default_rng(7)
    net = random_network(rng, (3, 6, 3), "relu")
    centre = np.array([0.0, 0.5, 2.0])
    label = int(net.predict(centre))
    lo_d, hi_d = np.array([-INF, 0.4, 1.9]), np.array([0.05, INF, 2.0])
    for eps in (0.1, 0.3, 0.8):
        cert = certify_batch(net, centre[None, :], [label], [eps], method="mip", domain=(lo_d, hi_d))[0]
        lo, hi = np.clip(centre - eps, lo_d, hi_d), np.clip(centre + eps, lo_d, hi_d)
        exact = min(relu_enumeration_min_margin(net, lo, hi, label, k) for k in range(3) if k != label)
        assert cert.lower <= exact + 1e-7 and cert.upper >= exact - 1e-7
        assert cert.verdict.value == ("verified" if exact > 0 else "falsified")
        if cert.counterexample is not None:
            assert ((cert.counterexample >= lo_d) & (cert.counterexample <= hi_d)).all()


# -- property: counterexamples inside ball ∩ domain, verified never contradicted by a point of it -----------
@st.composite
def balls_and_domains(draw):
    d = draw(st.integers(1, 3))
    lo = np.array([draw(st.one_of(st.just(-INF), st.floats(-2.0, 1.0))) for _ in range(d)])
    hi = np.array([INF if draw(st.booleans()) else (lo[i] if math.isfinite(lo[i]) else -1.0) + draw(st.floats(0.05, 3.0))
                   for i in range(d)])
    anchor = np.where(np.isfinite(lo), lo, np.where(np.isfinite(hi), hi - 1.0, 0.0))
    width = np.where(np.isfinite(hi - lo), hi - lo, 2.0)
    centre = anchor + np.array([draw(st.floats(-0.1, 1.1)) for _ in range(d)]) * width  # maybe just outside
    eps = draw(st.floats(0.0, 1.5))
    norm = draw(st.sampled_from(["linf", "l1", "l2"]))
    dist = {"linf": np.abs(centre - np.clip(centre, lo, hi)).max(),
            "l1": np.abs(centre - np.clip(centre, lo, hi)).sum(),
            "l2": np.linalg.norm(centre - np.clip(centre, lo, hi))}[norm]
    eps = max(eps, float(dist) * 1.01 + 1e-9)  # the ball must meet the domain (else the query is refused)
    return (d, centre, eps, norm, (lo, hi), draw(st.integers(0, 10_000)), draw(st.sampled_from(["relu", "gelu"])),
            draw(st.sampled_from(["cascade", "certify"])))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=balls_and_domains())
def test_counterexamples_lie_in_ball_and_domain_and_verified_is_never_contradicted_by_a_sample(case):
    d, centre, eps, norm, domain, seed, activation, engine = case
    rng = np.random.default_rng(seed)
    net = random_network(rng, (d, 5, 3), activation)
    label = int(net.predict(centre))
    if engine == "cascade":  # the worker's batched path
        fast = CascadeSettings(attack_steps=10, strong_attack_steps=0)
        cert = certify_batch(net, centre[None, :], [label], [eps], method="mip", norm=norm, domain=domain, settings=fast)[0]
    else:  # the per-query path (single targets, and a group whose cascade call failed)
        cert = certify(net, centre, label, eps, method="mip", norm=norm, domain=domain, time_limit=20)
    the_set = InputSet(centre, eps, norm=norm, domain=domain)
    if cert.counterexample is not None:
        cex = np.asarray(cert.counterexample)
        assert the_set.contains(cex, tol=1e-9), (cex, domain)
        out = net.forward(cex)
        assert min(out[label] - out[k] for k in range(3) if k != label) <= cert.upper + 1e-9
    points = the_set.sample(400, rng)
    out = net.forward(points)
    margins = np.min(np.delete(out[:, [label]] - out, label, axis=1), axis=1)
    assert (margins >= cert.lower - 1e-7).all()  # the lower bound holds at every sampled point of ball ∩ domain
    if cert.verdict.value == "verified":
        assert (margins > 0).all()


# -- VNN-LIB boxes are taken as given ----------------------------------------------------------------------
_PROPERTY = """(declare-const X_0 Real)
(declare-const Y_0 Real)
(declare-const Y_1 Real)
(assert (>= X_0 {lo}))
(assert (<= X_0 {hi}))
(assert (<= Y_0 Y_1))
"""


@pytest.mark.parametrize("lo, hi, word", [(-0.05, 0.15, "violated"), (0.0, 0.15, "holds")])
def test_a_vnnlib_box_outside_the_unit_interval_is_decided_as_written(lo, hi, word):
    from polycert.formulations.vnncomp import property_input_set, vnncomp_answer
    from polycert.formulations.vnnlib import read_vnnlib

    prop = read_vnnlib(_PROPERTY.format(lo=lo, hi=hi), n_inputs=1, n_outputs=2)
    assert prop.lower.tolist() == [lo] and prop.upper.tolist() == [hi]
    box_lo, box_hi = property_input_set(prop).box()
    assert box_lo[0] == pytest.approx(lo, abs=1e-15) and box_hi[0] == pytest.approx(hi, abs=1e-15)
    answer = vnncomp_answer(key_network(), prop, timeout=10)
    assert answer.word == word
    if word == "violated":
        assert lo <= answer.x[0] < -0.03 and answer.y[0] <= answer.y[1]


def test_a_raw_pixel_vnnlib_box_is_not_clipped_to_the_unit_interval():
    from polycert.formulations.vnnlib import read_vnnlib

    prop = read_vnnlib(_PROPERTY.format(lo=100, hi=200), n_inputs=1, n_outputs=2)
    assert prop.lower.tolist() == [100.0] and prop.upper.tolist() == [200.0]
