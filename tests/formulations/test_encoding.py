"""Encodings contain the real network: every true (input, pre-activation, activation) point is feasible."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from polycert.formulations import Model, Network
from polycert.formulations.bounds import symbolic_bounds
from polycert.formulations.encoding import LP, MIP, encode_network
from polycert.formulations.input_sets import InputSet
from polycert.formulations.refinement import initial_segments


def random_network(seed: int, activation: str) -> Network:
    rng = np.random.default_rng(seed)
    sizes = (3, 5, 4, 2)
    return Network.from_arrays([rng.normal(size=(b, a)) for a, b in zip(sizes, sizes[1:])],
                               [rng.normal(scale=0.5, size=b) for b in sizes[1:]], activation)


def true_assignment(model: Model, enc, network: Network, x: np.ndarray) -> np.ndarray:
    """The model's variables set from the real network at x (binaries and segment copies included)."""
    v = np.zeros(model.num_variables)
    v[enc.inputs] = x
    trace = network.trace(x)
    for i, (z, a) in enumerate(trace):
        v[enc.pre[i]] = z
        if i < len(enc.post):
            v[enc.post[i]] = a
    for (i, j), d in enc.relu_binaries.items():
        v[d] = float(trace[i][0][j] > 0)
    for ns in enc.smooth:
        if ns.binaries.size == 0:
            continue
        z, a = trace[ns.layer][0][ns.neuron], trace[ns.layer][1][ns.neuron]
        s = next(k for k, seg in enumerate(ns.segments) if seg.lower <= z <= seg.upper)
        v[ns.binaries[s]] = 1.0
        # the copies z_s, a_s follow the binaries in the model: the variables right after them
        first = int(ns.binaries[-1]) + 1
        n_seg = ns.binaries.size
        v[first + s] = z
        v[first + n_seg + s] = a
    return v


@pytest.mark.parametrize("activation", ["gelu", "relu", "sigmoid", "tanh", "silu"])
@pytest.mark.parametrize("mode", [LP, MIP])
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), eps=st.sampled_from([0.01, 0.1, 0.3]))
def test_points_of_the_real_network_are_feasible_in_the_encoding(activation, mode, seed, eps):
    net = random_network(seed, activation)
    rng = np.random.default_rng(seed)
    centre = rng.uniform(0.2, 0.8, size=3)
    input_set = InputSet(centre, eps)
    lo, hi = input_set.box()
    bounds = symbolic_bounds(net, lo, hi)
    model = Model()
    segments = initial_segments(net, bounds) if mode == MIP else None
    enc = encode_network(model, net, input_set, bounds, mode=mode, segments=segments)
    for x in input_set.sample(50, rng):
        assert model.max_violation(true_assignment(model, enc, net, x)) <= 1e-9


def test_relu_mip_rows_force_the_exact_activation():
    # with the binary fixed, a = max(z, 0) is the only feasible activation (Tjeng et al. 2019, eq. 5)
    net = Network.from_arrays([np.array([[1.0], [-1.0]]), np.array([[1.0, 1.0]])], [np.array([-0.5, 0.5]), np.zeros(1)],
                              "relu")
    input_set = InputSet(np.array([0.5]), 0.5, domain=(-1.0, 2.0))
    lo, hi = input_set.box()
    bounds = symbolic_bounds(net, lo, hi)
    model = Model()
    enc = encode_network(model, net, input_set, bounds, mode=MIP)
    assert len(enc.relu_binaries) == 2  # both neurons unstable on [0, 1]
    x = np.array([0.3])
    v = true_assignment(model, enc, net, x)
    assert model.max_violation(v) <= 1e-12
    v[enc.post[0][1]] += 0.05  # a above relu(z) = z on the active neuron
    assert model.max_violation(v) >= 0.05 - 1e-12
