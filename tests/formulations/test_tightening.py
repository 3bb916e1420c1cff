"""Progressive LP / MIP bound tightening (formulations/tightening.py).

Soundness is cross-checked against points the real network attains: random samples of the box and PGD
attack points must lie inside the tightened bounds; the MIP bounds must lie inside the LP ones.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polycert.formulations.attack import pgd_attack
from polycert.formulations.bounds import LayerBounds, symbolic_bounds, unstable
from polycert.formulations.errors import InvalidInputError
from polycert.formulations.input_sets import InputSet
from polycert.formulations.network import Network
from polycert.formulations.backends import available_solvers
from polycert.formulations.tightening import mip_order, tighten_bounds


def relu_net(seed: int, sizes=(6, 16, 16, 12, 4)) -> Network:
    rng = np.random.default_rng(seed)
    weights = [rng.normal(size=(b, a)) / np.sqrt(a) for a, b in zip(sizes, sizes[1:])]
    biases = [rng.normal(size=b) * 0.1 for b in sizes[1:]]
    return Network.from_arrays(weights, biases, "relu")


def attained_pre_activations(net: Network, iset: InputSet, seed: int) -> list[np.ndarray]:
    """Pre-activations at random points of the box, its corners' neighbourhood and attack points."""
    points = [iset.sample(300, seed)]
    for k in range(net.output_size):  # attack points push the margins, hence the neurons, to extremes
        res = pgd_attack(net, iset.center, k, iset.eps, domain=iset.domain, steps=20, restarts=2, seed=seed)
        points.append(res.points)
    return net.pre_activations(np.concatenate(points))


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), eps=st.sampled_from([0.1, 0.3, 0.6]))
def test_lp_tightened_bounds_contain_every_attained_pre_activation_and_never_widen(seed, eps):
    net = relu_net(seed)
    iset = InputSet(np.random.default_rng(seed).uniform(0.2, 0.8, net.input_size), eps)
    sym = symbolic_bounds(net, *iset.box())
    tight = tighten_bounds(net, iset, sym, method="lp")
    for k, (b, s, z) in enumerate(zip(tight, sym, attained_pre_activations(net, iset, seed))):
        assert b.contains(z).all(), f"layer {k}: an attained pre-activation lies outside the tightened bounds"
        assert (b.lower >= s.lower).all() and (b.upper <= s.upper).all()


def test_lp_tightening_shrinks_unstable_intervals_of_a_deeper_layer():
    net = relu_net(3)
    iset = InputSet(np.full(net.input_size, 0.5), 0.4)
    sym = symbolic_bounds(net, *iset.box())
    stats = {}
    tight = tighten_bounds(net, iset, sym, method="lp", stats=stats)
    assert unstable(sym[1]).size > 0
    assert tight[2].width.sum() < sym[2].width.sum()
    assert [s["layer"] for s in stats["layers"]] == [1, 2]  # progressive: layer by layer, the first is exact
    assert all(s["unstable_after"] <= s["unstable_before"] for s in stats["layers"])


@pytest.mark.parametrize("solver", [s for s in ("scip", "gurobi") if available_solvers().get(s)])
@pytest.mark.parametrize("seed", [11, 12])
def test_mip_tightening_is_inside_lp_tightening_and_still_contains_attained_values(seed, solver):
    net = relu_net(seed, sizes=(4, 10, 10, 10, 3))
    iset = InputSet(np.full(4, 0.5), 0.5)
    sym = symbolic_bounds(net, *iset.box())
    lp = tighten_bounds(net, iset, sym, method="lp")
    mip = tighten_bounds(net, iset, lp, method="mip", solver=solver, per_neuron_limit=5.0)
    narrower = 0
    for b_lp, b_mip, z in zip(lp, mip, attained_pre_activations(net, iset, 0)):
        assert (b_mip.lower >= b_lp.lower).all() and (b_mip.upper <= b_lp.upper).all()
        assert b_mip.contains(z).all()
        narrower += int(np.sum(b_mip.width < b_lp.width - 1e-6))
    assert narrower > 0  # the exact encoding cuts what the triangle relaxation cannot


def test_mip_tightening_goes_nearest_to_stable_first():
    bounds = LayerBounds(np.array([-1.0, -0.1, -3.0, -2.0]), np.array([1.0, 2.0, 0.2, 2.5]))
    assert list(mip_order(bounds, np.array([0, 1, 2, 3]))) == [1, 2, 3, 0]


def test_a_probe_stops_a_layer_whose_bounds_the_lp_does_not_narrow_and_keeps_one_it_does():
    net = relu_net(3)
    iset = InputSet(np.full(net.input_size, 0.5), 0.4)
    sym = symbolic_bounds(net, *iset.box())
    full = tighten_bounds(net, iset, sym, method="lp")
    stats = {}
    probed = tighten_bounds(net, iset, sym, method="lp", probe=2, stats=stats)
    for a, b in zip(full, probed):  # loose (symbolic) bounds: the probe pays, the layers go on to the end
        assert np.array_equal(a.lower, b.lower) and np.array_equal(a.upper, b.upper)
    again = {}
    tighten_bounds(net, iset, full, method="lp", probe=2, stats=again)  # already LP-tight: nothing to gain
    for first, second in zip(stats["layers"], again["layers"]):
        assert first["solves"] > 4 and second["solves"] <= 4  # the probe's two neurons, two sides each


def test_zero_time_limit_returns_the_given_bounds_unchanged():
    net = relu_net(5)
    iset = InputSet(np.full(net.input_size, 0.5), 0.3)
    sym = symbolic_bounds(net, *iset.box())
    out = tighten_bounds(net, iset, sym, time_limit=0.0)
    for a, b in zip(out, sym):
        assert np.array_equal(a.lower, b.lower) and np.array_equal(a.upper, b.upper)


@pytest.mark.parametrize("kwargs, problem", [
    ({"method": "simplex"}, "method"),
    ({"layers": [7]}, "hidden layers"),
])
def test_bad_options_are_refused_naming_them(kwargs, problem):
    net = relu_net(1)
    iset = InputSet(np.full(net.input_size, 0.5), 0.1)
    with pytest.raises(InvalidInputError, match=problem):
        tighten_bounds(net, iset, symbolic_bounds(net, *iset.box()), **kwargs)


def test_smooth_hidden_layers_are_refused():
    rng = np.random.default_rng(0)
    net = Network.from_arrays([rng.normal(size=(5, 3)), rng.normal(size=(2, 5))], [np.zeros(5), np.zeros(2)], "gelu")
    iset = InputSet(np.full(3, 0.5), 0.1)
    with pytest.raises(InvalidInputError, match="gelu"):
        tighten_bounds(net, iset, symbolic_bounds(net, *iset.box()))
