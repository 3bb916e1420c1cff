"""The named networks: they load with the right shape and preprocessing, compute what their weight files
say, and reach their recorded accuracy on the shipped test sets."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest
from scipy.special import erf

from polycert.formulations.errors import InvalidInputError
from polycert.datasets import load_preprocessed
from polycert.zoo import builtin_networks, load_builtin, network_info


def test_registry_names_both_networks_with_their_preprocessing_and_domain():
    infos = {info.name: info for info in builtin_networks()}
    assert infos["polycert-tiny"].preprocessing == "mnist7-area"
    assert infos["verianet"].preprocessing == "mnist7-bilinear"
    for info in infos.values():
        assert info.input_domain == (0.0, 1.0)
        network = load_builtin(info.name)
        assert network.architecture == "49-3-3-10 gelu,gelu,identity"
        assert network.name == info.name
        assert network.metadata["preprocessing"] == info.preprocessing


@pytest.mark.parametrize("name", ["polycert-tiny", "verianet"])
def test_shipped_network_reaches_its_recorded_accuracy_on_the_shipped_test_set(name):
    info = network_info(name)
    network = load_builtin(name)
    x, y = load_preprocessed(info.preprocessing, "test")
    assert len(y) == 10_000
    measured = float(np.mean(network.predict(x) == y))
    assert abs(measured - info.accuracy) < 0.5 / len(y)  # the same count of correct images


def test_verianet_is_read_in_keras_orientation_and_close_to_the_study_accuracy():
    with resources.as_file(resources.files("polycert").joinpath("assets", "verianet_weights.npz")) as path:
        w = dict(np.load(path))
    x, y = load_preprocessed("mnist7-bilinear")
    gelu = lambda z: 0.5 * z * (1.0 + erf(z / np.sqrt(2.0)))
    f64 = {k: v.astype(np.float64) for k, v in w.items()}
    logits = gelu(gelu(x @ f64["W1"] + f64["b1"]) @ f64["W2"] + f64["b2"]) @ f64["W3"] + f64["b3"]
    np.testing.assert_allclose(load_builtin("verianet").forward(x[:200]), logits[:200], rtol=0, atol=1e-12)
    assert abs(np.mean(logits.argmax(axis=1) == y) - 0.698) < 0.001  # the seed README's 69.8 %


def test_unknown_network_name_lists_the_known_ones():
    with pytest.raises(InvalidInputError, match="polycert-tiny"):
        load_builtin("lenet")
