"""Feed-forward networks: affine layers and element-wise activations, evaluated in float64.

Dimension convention (as in MIPVerify): a layer maps ``a`` (its input, length ``n_in``) to
``z = W @ a + b`` (the *pre-activation*, length ``n_out``) and then to ``activation(z)``. ``W`` has shape
``(n_out, n_in)``. The last layer of a classifier is affine (activation ``identity``): its outputs are the
logits. Batched evaluation takes inputs of shape ``(n, n_in)``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from .activations import Activation, get_activation
from .errors import InvalidInputError, NetworkShapeError

Array = np.ndarray


def _frozen_float64(array: Array) -> Array:
    out = np.array(array, dtype=np.float64, copy=True)
    out.setflags(write=False)
    return out


@dataclass(frozen=True)
class Layer:
    """One affine map followed by an element-wise activation."""

    weight: Array
    bias: Array
    activation: Activation | str = "identity"

    def __post_init__(self) -> None:
        weight = _frozen_float64(self.weight)
        bias = _frozen_float64(self.bias).reshape(-1)
        if weight.ndim != 2:
            raise NetworkShapeError(f"a layer's weight must be 2-D (n_out, n_in), got shape {weight.shape}")
        if bias.shape[0] != weight.shape[0]:
            raise NetworkShapeError(f"bias of length {bias.shape[0]} does not match weight of shape {weight.shape}")
        if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
            raise NetworkShapeError("a layer's weight or bias holds NaN or infinite values")
        object.__setattr__(self, "weight", weight)
        object.__setattr__(self, "bias", bias)
        object.__setattr__(self, "activation", get_activation(self.activation))

    @property
    def n_in(self) -> int:
        return int(self.weight.shape[1])

    @property
    def n_out(self) -> int:
        return int(self.weight.shape[0])

    def pre_activation(self, a: Array) -> Array:
        """z = W a + b for a single input (n_in,) or a batch (n, n_in)."""
        return a @ self.weight.T + self.bias

    def __call__(self, a: Array) -> Array:
        return self.activation.value(self.pre_activation(a))


@dataclass(frozen=True)
class Network:
    """A feed-forward network; immutable, hashable by content (:meth:`digest`)."""

    layers: tuple[Layer, ...]
    name: str = "network"
    metadata: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        layers = tuple(self.layers)
        if not layers:
            raise NetworkShapeError("a network needs at least one layer")
        problems = [
            f"layer {i} expects {nxt.n_in} inputs but layer {i - 1} gives {prev.n_out}"
            for i, (prev, nxt) in enumerate(zip(layers, layers[1:]), start=1)
            if nxt.n_in != prev.n_out
        ]
        if problems:
            raise NetworkShapeError("layer sizes do not chain: " + "; ".join(problems))
        object.__setattr__(self, "layers", layers)

    # -- shape --------------------------------------------------------------------------------
    @property
    def input_size(self) -> int:
        return self.layers[0].n_in

    @property
    def output_size(self) -> int:
        return self.layers[-1].n_out

    @property
    def sizes(self) -> tuple[int, ...]:
        """Layer widths, input first: (49, 3, 3, 10) for the study's network."""
        return (self.input_size, *(layer.n_out for layer in self.layers))

    @property
    def hidden_layers(self) -> tuple[Layer, ...]:
        return self.layers[:-1]

    @property
    def num_hidden_neurons(self) -> int:
        return sum(layer.n_out for layer in self.hidden_layers)

    @property
    def architecture(self) -> str:
        """Human-readable architecture, e.g. ``49-3-3-10 gelu,gelu,identity``."""
        acts = ",".join(layer.activation.name for layer in self.layers)
        return "-".join(str(s) for s in self.sizes) + " " + acts

    def digest(self) -> str:
        """SHA-256 of the weights, biases and activations: the network's identity in storage."""
        h = hashlib.sha256()
        for layer in self.layers:
            h.update(layer.activation.name.encode())
            h.update(np.ascontiguousarray(layer.weight).tobytes())
            h.update(np.ascontiguousarray(layer.bias).tobytes())
            h.update(str(layer.weight.shape).encode())
        return h.hexdigest()

    # -- evaluation ---------------------------------------------------------------------------
    def check_input(self, x: Array) -> Array:
        """Validate an input (or a batch) and return it as float64; raises :class:`InvalidInputError`."""
        try:
            arr = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"input is not numeric: {exc}") from None
        if arr.ndim not in (1, 2) or arr.shape[-1] != self.input_size:
            raise InvalidInputError(
                f"input has shape {arr.shape}; the network {self.name!r} expects {self.input_size} values"
                " (or a batch of shape (n, %d))" % self.input_size
            )
        if not np.isfinite(arr).all():
            raise InvalidInputError("input holds NaN or infinite values")
        return arr

    def forward(self, x: Array) -> Array:
        """Outputs (logits) in float64 for one input or a batch."""
        a = self.check_input(x)
        for layer in self.layers:
            a = layer(a)
        return a

    __call__ = forward

    def trace(self, x: Array) -> list[tuple[Array, Array]]:
        """Per layer, the pair (pre-activation z, post-activation a) at ``x``."""
        a = self.check_input(x)
        out = []
        for layer in self.layers:
            z = layer.pre_activation(a)
            a = layer.activation.value(z)
            out.append((z, a))
        return out

    def pre_activations(self, x: Array) -> list[Array]:
        return [z for z, _ in self.trace(x)]

    def predict(self, x: Array) -> Array:
        """Predicted class (argmax of the outputs)."""
        return np.argmax(self.forward(x), axis=-1)

    # -- construction helpers -----------------------------------------------------------------
    @classmethod
    def from_arrays(
        cls,
        weights: list[Array],
        biases: list[Array],
        activations: list[str] | str,
        *,
        name: str = "network",
        orientation: str = "out_in",
        metadata: dict | None = None,
    ) -> "Network":
        """Build from weight and bias lists.

        ``orientation`` is ``"out_in"`` for ``W @ x + b`` (PyTorch) or ``"in_out"`` for Keras' ``x @ W + b``;
        ``activations`` is one name per layer, or one name for all hidden layers (the last is identity).
        """
        if orientation not in ("out_in", "in_out"):
            raise InvalidInputError(f"orientation must be 'out_in' (W @ x + b) or 'in_out' (x @ W + b), got {orientation!r}")
        if len(weights) != len(biases):
            raise NetworkShapeError(f"{len(weights)} weight arrays but {len(biases)} bias arrays")
        if isinstance(activations, str):
            activations = [activations] * (len(weights) - 1) + ["identity"]
        if len(activations) != len(weights):
            raise NetworkShapeError(f"{len(weights)} layers but {len(activations)} activations")
        layers = []
        for i, (w, b, act) in enumerate(zip(weights, biases, activations)):
            w = np.asarray(w, dtype=np.float64)
            if w.ndim != 2:
                raise NetworkShapeError(f"layer {i}: weight must be 2-D, got shape {w.shape}")
            layers.append(Layer(w.T if orientation == "in_out" else w, b, act))
        return cls(tuple(layers), name=name, metadata=dict(metadata or {}))

    def with_layers(self, layers: list[Layer] | tuple[Layer, ...], *, name: str | None = None) -> "Network":
        return Network(tuple(layers), name=name or self.name, metadata=dict(self.metadata))
