"""Networks as bytes: how a registered network travels through the database to any worker machine.

The format is a plain ``.npz`` (no pickles: loading uses ``allow_pickle=False``) with ``W{i}``, ``b{i}``
in the engine's ``(n_out, n_in)`` orientation, the activation names and the network's name.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np

from formulations.network import Network


def network_to_bytes(network: Network) -> bytes:
    arrays: dict[str, np.ndarray] = {}
    for i, layer in enumerate(network.layers):
        arrays[f"W{i}"] = np.asarray(layer.weight, dtype=np.float64)
        arrays[f"b{i}"] = np.asarray(layer.bias, dtype=np.float64)
    arrays["activations"] = np.array([layer.activation.name for layer in network.layers])
    arrays["name"] = np.array(network.name)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def network_from_bytes(blob: bytes) -> Network:
    with np.load(io.BytesIO(blob), allow_pickle=False) as data:
        activations = [str(a) for a in data["activations"]]
        weights = [data[f"W{i}"] for i in range(len(activations))]
        biases = [data[f"b{i}"] for i in range(len(activations))]
        name = str(data["name"])
    return Network.from_arrays(weights, biases, activations, name=name)


@lru_cache(maxsize=16)
def cached_network(digest: str, blob: bytes) -> Network:
    """One decoded network per digest and process (a worker answers many chunks of one network)."""
    network = network_from_bytes(blob)
    if network.digest() != digest:
        raise ValueError(f"stored weights do not match the network's digest {digest[:12]}")
    return network
