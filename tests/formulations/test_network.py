"""The network type: shape checks, float64 evaluation, orientation, content hash."""

from __future__ import annotations

import numpy as np
import pytest

from polycert.formulations import InvalidInputError, Layer, Network, NetworkShapeError, UnsupportedOperatorError


def small(rng=np.random.default_rng(0)) -> Network:
    return Network.from_arrays([rng.normal(size=(3, 4)), rng.normal(size=(2, 3))],
                               [rng.normal(size=3), rng.normal(size=2)], "gelu", name="small")


def test_layers_that_do_not_chain_are_refused_naming_the_layer():
    with pytest.raises(NetworkShapeError, match="layer 1 expects 5 inputs but layer 0 gives 3"):
        Network((Layer(np.zeros((3, 4)), np.zeros(3), "relu"), Layer(np.zeros((2, 5)), np.zeros(2))))


@pytest.mark.parametrize("weight, bias, message", [
    (np.zeros(3), np.zeros(3), "2-D"),
    (np.zeros((3, 4)), np.zeros(2), "bias of length 2"),
    (np.full((3, 4), np.nan), np.zeros(3), "NaN"),
])
def test_malformed_layers_raise_shape_errors(weight, bias, message):
    with pytest.raises(NetworkShapeError, match=message):
        Layer(weight, bias)


def test_unknown_activation_is_an_unsupported_operator():
    with pytest.raises(UnsupportedOperatorError, match="softplus"):
        Layer(np.zeros((2, 2)), np.zeros(2), "softplus")


def test_forward_is_float64_and_matches_a_hand_computation_for_one_input_and_a_batch():
    net = small()
    x = np.linspace(0, 1, 4)
    l0, l1 = net.layers
    z = l0.weight @ x + l0.bias
    hand = l1.weight @ (z * 0.5 * (1 + np.vectorize(__import__("math").erf)(z / np.sqrt(2)))) + l1.bias
    np.testing.assert_allclose(net.forward(x), hand, rtol=1e-14, atol=1e-14)
    assert net.forward(x).dtype == np.float64
    np.testing.assert_allclose(net.forward(np.stack([x, x]))[1], hand, rtol=1e-14, atol=1e-14)


def test_keras_orientation_transposes_the_weights():
    rng = np.random.default_rng(1)
    w, b = rng.normal(size=(4, 3)), rng.normal(size=3)
    keras = Network.from_arrays([w], [b], ["identity"], orientation="in_out")
    x = rng.normal(size=4)
    np.testing.assert_allclose(keras.forward(x), x @ w + b)


@pytest.mark.parametrize("x, message", [
    (np.zeros(5), "expects 4"), (np.array([0.0, np.nan, 0.0, 0.0]), "NaN"), ("abc", "numeric|expects"),
])
def test_bad_inputs_are_refused(x, message):
    with pytest.raises(InvalidInputError, match=message):
        small().forward(x)


def test_digest_depends_on_weights_and_activations_only():
    a, b = small(np.random.default_rng(3)), small(np.random.default_rng(3))
    assert a.digest() == b.digest()
    relu = Network.from_arrays([l.weight for l in a.layers], [l.bias for l in a.layers], "relu")
    assert relu.digest() != a.digest()
    assert a.sizes == (4, 3, 2) and a.architecture == "4-3-2 gelu,identity"
