"""Networks as bytes: how a registered network travels through the database to any worker machine.

The format is a plain ``.npz`` (no pickles: loading uses ``allow_pickle=False``) with ``W{i}``, ``b{i}``
in the engine's ``(n_out, n_in)`` orientation, the activation names and the network's name.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict

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


_CACHE: OrderedDict[str, Network] = OrderedDict()
_CACHE_SIZE = 16
_LOCK = threading.Lock()  # the embedded worker's threads share the cache


def cached_network(digest: str) -> Network | None:
    """The network with this digest if this process has decoded it already (no database read)."""
    with _LOCK:
        if digest in _CACHE:
            _CACHE.move_to_end(digest)
            return _CACHE[digest]
    return None


def stored_network(row) -> Network:
    """The network of a ``NetworkRow``, checked against its digest. Its (deferred) weights are read from the
    database only the first time this process meets the digest (a worker answers many chunks of one network)."""
    with _LOCK:
        if row.digest in _CACHE:
            _CACHE.move_to_end(row.digest)
            return _CACHE[row.digest]
    network = network_from_bytes(row.weights)
    if network.digest() != row.digest:
        raise ValueError(f"stored weights do not match the network's digest {row.digest[:12]}")
    with _LOCK:
        _CACHE[row.digest] = network
        if len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return network
