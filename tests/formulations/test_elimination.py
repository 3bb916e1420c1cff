"""Stable-neuron elimination (formulations/elimination.py): the compact prefix encoding holds every real point,
and its optima are those of the full encoding (formulations/encoding.py), for both solvers that can run it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from polycert.formulations.backends import available_solvers, solve
from polycert.formulations.backends.base import SolveParameters
from polycert.formulations.backends.persistent import persistent_mip
from polycert.formulations.bounds import symbolic_bounds
from polycert.formulations.elimination import encode_prefix
from polycert.formulations.encoding import LP, MIP, encode_network
from polycert.formulations.errors import InvalidInputError
from polycert.formulations.input_sets import InputSet
from polycert.formulations.model import Model, Sense
from polycert.formulations.network import Network
from polycert.formulations.tightening import _prefix

MIP_SOLVERS = [s for s in ("scip", "gurobi") if available_solvers().get(s)]


def relu_net(seed: int, sizes=(5, 12, 10, 8, 3)) -> Network:
    rng = np.random.default_rng(seed)
    return Network.from_arrays([rng.normal(size=(b, a)) / np.sqrt(a) for a, b in zip(sizes, sizes[1:])],
                               [rng.normal(size=b) * 0.2 for b in sizes[1:]], "relu")


def assignment(enc, network: Network, x: np.ndarray) -> np.ndarray:
    """The compact model's variables set from the real network at ``x``: inputs, unstable neurons, binaries."""
    v = np.zeros(enc.model.num_variables)
    v[enc.inputs] = x
    trace = network.trace(x)
    for i, (unst, zs, a, d) in enumerate(zip(enc.unstable, enc.pre, enc.post, enc.binaries)):
        z = trace[i][0][unst]
        v[zs] = z
        v[a] = np.maximum(z, 0.0)
        if d.size:
            v[d] = (z > 0).astype(float)
    return v


@settings(max_examples=15)
@given(seed=st.integers(0, 10_000), eps=st.sampled_from([0.1, 0.3, 0.8]), layer=st.integers(1, 3),
       mode=st.sampled_from([LP, MIP]))
def test_every_real_point_is_feasible_and_the_maps_give_its_pre_activations(seed, eps, layer, mode):
    net = relu_net(seed)
    iset = InputSet(np.random.default_rng(seed).uniform(0.2, 0.8, net.input_size), eps)
    bounds = symbolic_bounds(net, *iset.box())
    enc = encode_prefix(Model(), net, iset, bounds, layer, mode=mode)
    for x in iset.sample(50, seed):
        v = assignment(enc, net, x)
        assert enc.model.max_violation(v) <= 1e-9
        trace = net.trace(x)
        for i in range(layer + 1):
            M, c = enc.maps[i]
            np.testing.assert_allclose(M @ v + c, trace[i][0], atol=1e-9)


@pytest.mark.parametrize("solver", MIP_SOLVERS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_compact_mip_has_the_full_encodings_optimum_for_every_unstable_neuron(seed, solver):
    net = relu_net(seed, sizes=(4, 8, 8, 6, 3))
    iset = InputSet(np.full(net.input_size, 0.5), 0.4)
    bounds = symbolic_bounds(net, *iset.box())
    k = 2
    enc = encode_prefix(Model(), net, iset, bounds, k)
    full_model = Model()
    full = encode_network(full_model, _prefix(net, k), iset, bounds[: k + 1], mode=MIP)
    mip = persistent_mip(enc.model, solver)  # one model, re-solved per objective
    unstable = np.flatnonzero((bounds[k].lower < 0) & (bounds[k].upper > 0))
    assert unstable.size and enc.model.num_variables < full_model.num_variables
    for j in unstable[:4]:
        for sense in (Sense.MINIMIZE, Sense.MAXIMIZE):
            c, constant = enc.pre_activation(k, int(j))
            mip.set_objective(c, sense=sense, constant=constant)
            compact = mip.solve(SolveParameters())
            full_model.set_objective({int(full.pre[k][j]): 1.0}, sense=sense)
            reference = solve(full_model, "scip")
            assert compact.objective_value == pytest.approx(reference.objective_value, abs=1e-6)
            # the optimum is attained by the network itself at the solver's input
            x = compact.primal[enc.inputs]
            assert net.trace(x)[k][0][j] == pytest.approx(compact.objective_value, abs=1e-6)
    mip.close()


def test_the_lp_mode_is_the_triangle_relaxation_of_the_full_encoding():
    net = relu_net(4)
    iset = InputSet(np.full(net.input_size, 0.5), 0.5)
    bounds = symbolic_bounds(net, *iset.box())
    k = 3
    enc = encode_prefix(Model(), net, iset, bounds, k, mode=LP)
    full_model = Model()
    full = encode_network(full_model, _prefix(net, k), iset, bounds[: k + 1], mode=LP)
    for j in range(3):
        c, constant = enc.pre_activation(k, j)
        enc.model.set_objective(c, constant=constant)
        full_model.set_objective({int(full.pre[k][j]): 1.0})
        assert solve(enc.model, "scip").objective_value == pytest.approx(
            solve(full_model, "scip").objective_value, abs=1e-6)


def test_a_smooth_layer_before_the_target_is_refused():
    rng = np.random.default_rng(0)
    net = Network.from_arrays([rng.normal(size=(4, 3)), rng.normal(size=(2, 4))], [np.zeros(4), np.zeros(2)], "gelu")
    iset = InputSet(np.full(3, 0.5), 0.1)
    with pytest.raises(InvalidInputError, match="gelu"):
        encode_prefix(Model(), net, iset, symbolic_bounds(net, *iset.box()), 1)
