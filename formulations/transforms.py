"""Network transformations whose effect invertibility queries measure: magnitude pruning and quantisation.

Cui et al., "Certified Invertibility in Neural Networks via Mixed-Integer Programming" (L4DC 2023, §5)
compare a network with a pruned copy through Problem 3 (is the pruned network a function of the original on
a ball, and the other way round?). Both transformations here are pure functions from a :class:`Network` to a
new one: the weights change, the activations and shapes do not, and the new network's ``metadata`` records
where it came from (``derived_from``: the original's digest, ``transform``: the parameters), so that a service
can register it as a network of its own.

* :func:`prune` — magnitude pruning (Han et al., "Learning both weights and connections", NeurIPS 2015): the
  ``fraction`` of weights with the smallest absolute value is set to zero, per layer or globally. Biases are
  kept (they are a negligible share of the parameters and pruning them is not what the paper does).
* :func:`quantize` — uniform symmetric quantisation of each layer's weights to ``bits`` bits: the grid step is
  ``max|W| / (2^(bits-1) - 1)`` and every weight is rounded to the nearest grid point (round half to even).
  Biases are kept in float64, as in common integer inference schemes where they are stored wider.
"""

from __future__ import annotations

import numpy as np

from .errors import InvalidInputError
from .network import Layer, Network

Array = np.ndarray

SCOPES = ("layer", "global")


def _check_fraction(fraction: float) -> float:
    try:
        f = float(fraction)
    except (TypeError, ValueError):
        raise InvalidInputError(f"pruning fraction must be a number in [0, 1], got {fraction!r}") from None
    if not 0.0 <= f <= 1.0:
        raise InvalidInputError(f"pruning fraction must lie in [0, 1] (0.5 prunes half), got {fraction!r}")
    return f


def _check_layers(network: Network, layers) -> tuple[int, ...]:
    if layers is None:
        return tuple(range(len(network.layers)))
    chosen = tuple(int(i) for i in layers)
    bad = [i for i in chosen if not 0 <= i < len(network.layers)]
    if bad:
        raise InvalidInputError(f"layers {bad} do not exist; the network has {len(network.layers)} layers (0-based)")
    return chosen


def magnitude_mask(weights: Array, fraction: float) -> Array:
    """Boolean mask of the weights kept when the ``fraction`` of smallest magnitudes is removed.

    Exactly ``floor(fraction * n)`` weights are removed; ties at the threshold are broken by position (stable
    sort), so the count never depends on how many weights share a magnitude.
    """
    flat = np.abs(np.asarray(weights, dtype=np.float64)).reshape(-1)
    n_remove = int(np.floor(_check_fraction(fraction) * flat.size + 1e-9))
    keep = np.ones(flat.size, dtype=bool)
    keep[np.argsort(flat, kind="stable")[:n_remove]] = False
    return keep.reshape(np.shape(weights))


def prune(network: Network, fraction: float, *, scope: str = "layer", layers=None, name: str | None = None) -> Network:
    """Magnitude pruning: zero the ``fraction`` of smallest-magnitude weights.

    Args:
        fraction: share of weights removed, in [0, 1] (0.5 = the paper's 50 %).
        scope: ``"layer"`` removes that share in every chosen layer; ``"global"`` ranks the weights of all
            chosen layers together (layers with small weights lose more).
        layers: 0-based indices of the layers to prune (default: all).
        name: the new network's name (default ``"<name>-pruned<percent>"``).

    Returns:
        A new :class:`Network`; ``metadata["transform"]`` records the parameters and the number of weights
        removed, ``metadata["derived_from"]`` the original's digest.

    Raises:
        InvalidInputError: a fraction outside [0, 1], an unknown scope, or a layer index that does not exist.
    """
    fraction = _check_fraction(fraction)
    if scope not in SCOPES:
        raise InvalidInputError(f"pruning scope must be one of {SCOPES}, got {scope!r}")
    chosen = _check_layers(network, layers)
    weights = [layer.weight for layer in network.layers]
    if scope == "layer":
        masks = {i: magnitude_mask(weights[i], fraction) for i in chosen}
    else:
        flat = np.concatenate([weights[i].reshape(-1) for i in chosen]) if chosen else np.zeros(0)
        keep = magnitude_mask(flat, fraction)
        masks, start = {}, 0
        for i in chosen:
            size = weights[i].size
            masks[i] = keep[start:start + size].reshape(weights[i].shape)
            start += size
    new_layers = [
        Layer(np.where(masks[i], layer.weight, 0.0) if i in masks else layer.weight, layer.bias, layer.activation)
        for i, layer in enumerate(network.layers)
    ]
    removed = int(sum((~m).sum() for m in masks.values()))
    transform = {"kind": "prune", "fraction": fraction, "scope": scope, "layers": list(chosen), "removed": removed}
    return _derived(network, new_layers, transform, name or f"{network.name}-pruned{round(100 * fraction)}")


def quantize_weights(weights: Array, bits: int) -> Array:
    """Symmetric uniform quantisation of one weight matrix to ``bits`` bits (module docstring)."""
    w = np.asarray(weights, dtype=np.float64)
    levels = 2 ** (int(bits) - 1) - 1
    scale = float(np.abs(w).max(initial=0.0)) / levels
    if scale == 0.0:
        return w.copy()
    return np.clip(np.round(w / scale), -levels, levels) * scale


def quantize(network: Network, bits: int = 8, *, layers=None, name: str | None = None) -> Network:
    """Quantise the weights of the chosen layers to ``bits`` bits (symmetric, one scale per layer).

    Raises:
        InvalidInputError: ``bits`` not an integer in [2, 32], or a layer index that does not exist.
    """
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= int(bits) <= 32:
        raise InvalidInputError(f"quantisation needs an integer number of bits in [2, 32], got {bits!r}")
    chosen = _check_layers(network, layers)
    new_layers = [
        Layer(quantize_weights(layer.weight, int(bits)) if i in chosen else layer.weight, layer.bias, layer.activation)
        for i, layer in enumerate(network.layers)
    ]
    transform = {"kind": "quantize", "bits": int(bits), "layers": list(chosen)}
    return _derived(network, new_layers, transform, name or f"{network.name}-int{int(bits)}")


def _derived(network: Network, layers: list[Layer], transform: dict, name: str) -> Network:
    metadata = dict(network.metadata)
    metadata.update({"derived_from": network.digest(), "transform": transform})
    return Network(tuple(layers), name=name, metadata=metadata)
