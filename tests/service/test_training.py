"""Training is deterministic and the shipped network is what its sidecar says it is."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest
import torch

from polycert.formulations.errors import InvalidInputError
from polycert.formulations.loaders import load_npz
from polycert.training import save_trained, train_tiny_network

QUICK = dict(epochs=2, n_train=3000, batch_size=500)


def shipped_metrics() -> dict:
    return json.loads(resources.files("polycert").joinpath("assets", "polycert_tiny_gelu.json").read_text())


def test_two_runs_with_the_same_seed_give_identical_weights_and_another_seed_does_not():
    threads = torch.get_num_threads()
    first, metrics = train_tiny_network(seed=3, **QUICK)
    second, _ = train_tiny_network(seed=3, **QUICK)
    other, _ = train_tiny_network(seed=4, **QUICK)
    for a, b in zip(first.layers, second.layers):
        np.testing.assert_array_equal(a.weight, b.weight)
        np.testing.assert_array_equal(a.bias, b.bias)
    assert first.digest() == second.digest() != other.digest()
    assert metrics["n_train"] == 3000 and metrics["epochs"] == 2 and metrics["seed"] == 3
    assert first.architecture == "49-3-3-10 gelu,gelu,identity"
    assert torch.get_num_threads() == threads  # global torch settings restored


def test_saved_network_and_sidecar_round_trip(tmp_path):
    network, metrics = train_tiny_network(seed=0, hidden=(4,), activation="relu", **QUICK)
    npz, sidecar = save_trained(network, metrics, tmp_path / "net")
    back = load_npz(npz)
    assert back.digest() == network.digest() == json.loads(sidecar.read_text())["digest"]
    assert back.architecture == "49-4-10 relu,identity"
    assert back.metadata["preprocessing"] == "mnist7-area"


def test_shipped_sidecar_matches_the_shipped_weights_and_records_a_decent_accuracy():
    metrics = shipped_metrics()
    with resources.as_file(resources.files("polycert").joinpath("assets", "polycert_tiny_gelu.npz")) as path:
        network = load_npz(path)
    assert network.digest() == metrics["digest"]
    assert metrics["architecture"] == network.architecture == "49-3-3-10 gelu,gelu,identity"
    assert metrics["test_accuracy"] >= 0.75 and metrics["n_train"] == 60_000


@pytest.mark.parametrize("bad", [dict(epochs=0), dict(hidden=(3, 0)), dict(activation="softplus")])
def test_bad_training_options_raise(bad):
    with pytest.raises(InvalidInputError):
        train_tiny_network(**{**QUICK, **bad})


@pytest.mark.slow
def test_retraining_with_the_recorded_seed_reproduces_the_recorded_accuracy():
    metrics = shipped_metrics()
    _, again = train_tiny_network(seed=metrics["seed"], epochs=metrics["epochs"])
    # bit-identical on the machine that trained it; other CPUs may round matrix products differently
    assert abs(again["test_accuracy"] - metrics["test_accuracy"]) <= 0.005
