"""Networks as bytes: how a registered network travels through the database to any worker machine.

The format is :func:`formulations.loaders.network_to_bytes`'s: the ``save_npz`` archive (no pickles:
loading uses ``allow_pickle=False``), with every field of the network, its metadata (and input domain)
among them. One codec for files and storage, round-trip tested in ``tests/formulations/test_loaders.py``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from polycert.formulations.loaders import network_from_bytes, network_to_bytes
from polycert.formulations.network import Network

__all__ = ["cached_network", "network_from_bytes", "network_to_bytes", "stored_network"]

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
