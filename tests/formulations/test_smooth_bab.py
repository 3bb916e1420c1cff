"""Smooth branch and bound (GenBaB style): every line sound, every verdict the exact piecewise MIP's.

The oracle is the exact minimum-margin bracket of the piecewise MIP's branch and bound
(:func:`formulations.cascade.minimum_margin_bb`: safe LP dual bounds over segment leaves, an upper bound the
real network attains), and a PGD attack: code paths independent of the one under test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polycert.formulations.activations import get_activation
from polycert.formulations.attack import pgd_attack
from polycert.formulations.bounds import symbolic_bounds
from polycert.formulations.cascade import CascadeSettings, minimum_margin_bb, run_cascade
from polycert.formulations.envelopes import LINE_MARGIN
from polycert.formulations.errors import InvalidInputError
from polycert.formulations.relu_bab import FALSIFIED, VERIFIED
from polycert.formulations.smooth_bab import (SMOOTH, SmoothBabSettings, _Problem, certified_lines, hull_data,
                                              optimised_bounds,
                                              smooth_bab)
from tests.formulations.helpers import random_network

SMALL = SmoothBabSettings(batch=32, iterations=8, first_iterations=20)
intervals = st.tuples(st.floats(-8.0, 8.0), st.floats(1e-3, 10.0)).map(lambda t: (t[0], t[0] + t[1]))


def _search_lines(name: str, lower: float, upper: float, theta_lo: float, theta_up: float):
    """The search's (uncertified) lines of one neuron at the given parameters, float64."""
    net = random_network(np.random.default_rng(0), (1, 1, 2), name)
    problem = _Problem.margin(net, np.zeros(1), np.ones(1), 0, 1, torch.float64)
    hull = torch.from_numpy(hull_data(name, np.array([lower]), np.array([upper]))[None, :, :])  # (1, 8, 1)
    theta = torch.tensor([[[theta_lo], [theta_up]]], dtype=torch.float64)
    s_lo, c_lo, s_up, c_up = (float(v[0, 0]) for v in problem.lines(hull, theta)[0])
    return s_lo, c_lo, s_up, c_up


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(SMOOTH), interval=intervals, theta_lo=st.floats(-0.5, 1.5), theta_up=st.floats(-0.5, 1.5))
def test_every_optimisable_line_is_below_or_above_the_graph_on_its_interval_for_every_parameter(
        name, interval, theta_lo, theta_up):
    lower, upper = interval
    act = get_activation(name)
    s_lo, c_lo, s_up, c_up = _search_lines(name, lower, upper, theta_lo, theta_up)
    z = np.concatenate([np.linspace(lower, upper, 20_001), [p for p in (*act.inflections, *act.stationary)
                                                           if lower <= p <= upper]])
    f = act.value(z)
    # the hull's tangents are valid by construction; the tolerance is the bisection's and float64's rounding
    assert np.min(f - (s_lo * z + c_lo)) >= -1e-9
    assert np.min((s_up * z + c_up) - f) >= -1e-9
    # and certified: the exact residual extremes keep LINE_MARGIN, on the grid as by the certificate
    cs_lo, cc_lo, cs_up, cc_up = (float(v[0]) for v in certified_lines(name, np.array([s_lo]), np.array([s_up]),
                                                                    np.array([lower]), np.array([upper])))
    assert np.min(f - (cs_lo * z + cc_lo)) >= LINE_MARGIN * (1 - 1e-6)
    assert np.min((cs_up * z + cc_up) - f) >= LINE_MARGIN * (1 - 1e-6)
    r_min, _ = act.residual_extremes(cs_lo, cc_lo, lower, upper)
    _, r_max = act.residual_extremes(cs_up, cc_up, lower, upper)
    assert r_min >= LINE_MARGIN * (1 - 1e-9) and r_max <= -LINE_MARGIN * (1 - 1e-9)


@settings(max_examples=100, deadline=None)
@given(name=st.sampled_from(SMOOTH), interval=intervals, slope=st.floats(-2.0, 2.0))
def test_any_slope_is_certified_into_a_valid_line(name, interval, slope):
    """The float64 proof does not rely on the family: any slope at all gets a certified intercept."""
    lower, upper = interval
    act = get_activation(name)
    s_lo, c_lo, s_up, c_up = (float(v[0]) for v in certified_lines(name, np.array([slope]), np.array([slope]),
                                                                np.array([lower]), np.array([upper])))
    z = np.linspace(lower, upper, 20_001)
    assert np.min(act.value(z) - (s_lo * z + c_lo)) >= LINE_MARGIN * (1 - 1e-6)
    assert np.min((s_up * z + c_up) - act.value(z)) >= LINE_MARGIN * (1 - 1e-6)


def _instance(seed: int, name: str):
    rng = np.random.default_rng(seed)
    net = random_network(rng, (3, 5, 4, 3), name)
    x = rng.uniform(0.3, 0.7, size=3)
    y = net.forward(x)
    label = int(np.argmax(y))
    target = int(np.argsort(y)[-2])  # the runner-up: the hardest target
    eps = float(rng.uniform(0.1, 1.0))
    return net, x, label, target, eps, np.clip(x - eps, 0, 1), np.clip(x + eps, 0, 1)


@settings(max_examples=24, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 100_000), name=st.sampled_from(SMOOTH))
def test_verdicts_and_brackets_agree_with_the_exact_piecewise_mip_and_the_attack(seed, name):
    net, x, label, target, eps, lo, hi = _instance(seed, name)
    m_lo, m_up, _ = minimum_margin_bb(net, x, label, target, eps, tolerance=1e-4)
    bounds = symbolic_bounds(net, lo, hi)
    res = smooth_bab(net, lo, hi, bounds, label, target, time_limit=15.0, settings=SMALL)
    tol = 1e-6
    assert res.lower <= m_up + tol  # a proven bound never above a margin the real network attains
    assert res.stats["upper"] >= m_lo - tol  # an attained margin never below the MIP's proven bound
    attack = pgd_attack(net, x, label, eps, steps=50, restarts=5, targets=[target])
    if res.status == VERIFIED:
        assert m_up > 0 and res.lower > 0
        assert attack.per_target_margins[0, target] > 0  # never certifies what an attack falsifies
    if res.status == FALSIFIED:
        assert np.all(res.x >= lo) and np.all(res.x <= hi)
        y = net.forward(res.x)
        assert y[label] - y[target] < 0 and m_lo < 0
    if m_lo > 0.02:
        assert res.status == VERIFIED  # complete enough on a network this small
    if m_lo > 0.03 and m_up - m_lo < 1e-3:
        # a threshold 0.02 below the exact minimum is proven (measured: 0.005 below it stays open after 15 s on about
        # one instance in eight: the last few thousandths are the exact MIP's job), one just above it is not
        below = smooth_bab(net, lo, hi, bounds, label, target, time_limit=15.0, settings=SMALL, threshold=m_lo - 0.02)
        above = smooth_bab(net, lo, hi, bounds, label, target, time_limit=2.0, settings=SMALL, threshold=m_up + 1e-3)
        assert below.status == VERIFIED and below.lower > m_lo - 0.02
        assert above.status != VERIFIED and above.lower <= m_up + tol


def test_a_relu_network_is_refused_with_a_clear_error():
    net = random_network(np.random.default_rng(0), (2, 3, 2), "relu")
    lo, hi = np.zeros(2), np.ones(2)
    with pytest.raises(InvalidInputError, match="smooth"):
        smooth_bab(net, lo, hi, symbolic_bounds(net, lo, hi), 0, 1, time_limit=1.0)


def test_the_cascade_decides_smooth_networks_with_it_and_agrees_with_the_mip_path():
    rng = np.random.default_rng(3)
    net = random_network(rng, (4, 8, 8, 3), "gelu")
    xs = rng.uniform(0.3, 0.7, size=(4, 4))
    labels = net.predict(xs)
    cheap = dict(symbolic=False, lp=False, attack_steps=0, strong_attack_steps=0, query_time_limit=60.0)
    new = run_cascade(net, xs, labels, 0.1, settings=CascadeSettings(smooth_bab=True, **cheap)).certificates
    old = run_cascade(net, xs, labels, 0.1, settings=CascadeSettings(smooth_bab=False, **cheap)).certificates
    for a, b in zip(new, old):
        if "unknown" not in (a.verdict.value, b.verdict.value):
            assert a.verdict == b.verdict
        assert a.lower <= b.upper + 1e-6 and b.lower <= a.upper + 1e-6


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 100_000), name=st.sampled_from(SMOOTH))
def test_optimised_bounds_contain_every_sampled_pre_activation_and_never_loosen(seed, name):
    net, x, label, target, eps, lo, hi = _instance(seed, name)
    given_bounds = symbolic_bounds(net, lo, hi)
    tight = optimised_bounds(net, lo, hi, given_bounds, iterations=10)
    samples = np.random.default_rng(seed).uniform(lo, hi, size=(2000, lo.size))
    corners = np.where(np.random.default_rng(seed + 1).integers(0, 2, size=(200, lo.size)) == 1, hi, lo)
    for z, b, g in zip(net.pre_activations(np.vstack([samples, corners])), tight, given_bounds):
        assert np.all(z >= b.lower) and np.all(z <= b.upper)
        assert np.all(b.lower >= g.lower) and np.all(b.upper <= g.upper)


def test_each_certificate_carries_its_own_seconds_in_the_query_by_query_stages():
    rng = np.random.default_rng(5)
    net = random_network(rng, (4, 8, 8, 3), "sigmoid")
    xs = rng.uniform(0.3, 0.7, size=(3, 4))
    result = run_cascade(net, xs, net.predict(xs), 0.2, settings=CascadeSettings(query_time_limit=20.0))
    for cert in result.certificates:
        own = [cert.times.get(f"{s}_own", 0.0) for s in ("bab", "lp", "mip")]
        assert all(v >= 0.0 for v in own)
        if cert.stage == "bab":
            assert cert.times["bab_own"] > 0.0
    assert sum(c.times.get("bab_own", 0.0) for c in result.certificates) <= result.stage_times["bab"] + 1e-6
