"""Networks from files: NumPy ``.npz``, PyTorch state dicts and ONNX graphs, into :class:`Network`.

Every loader returns a float64 :class:`~formulations.network.Network` in the ``W @ a + b`` convention, or
raises a typed error naming the problem: :class:`UnsupportedOperatorError` for an operator, attribute,
key or shape the loaders do not understand, :class:`NetworkShapeError` for arrays that do not chain,
:class:`InvalidInputError` for a missing or unreadable file and malformed options.

What each format may hold
-------------------------
``.npz`` (:func:`load_npz`): weight/bias pairs under one of these key styles (one style per file)

* ``W1, b1, W2, b2, ...`` (numbered from 1; ``w1``/``B1`` case-insensitively) — the study's file;
* ``weight_0, bias_0, weight_1, ...`` (numbered from 0; ``weights_0``/``biases_0`` too);

plus, optionally, ``activations`` (one name per layer), ``orientation`` (``"out_in"`` or ``"in_out"``),
``name`` and ``metadata_json`` as written by :func:`save_npz`. Nothing is unpickled (``allow_pickle=False``).

PyTorch (:func:`load_torch`): a ``state_dict`` saved with ``torch.save``, read with
``torch.load(weights_only=True)`` (no code runs). Linear layers only, in order of appearance: keys
``<prefix>.weight`` (2-D) and optionally ``<prefix>.bias``, e.g. ``0.weight``, ``fc1.weight``,
``layers.0.weight``. A dict wrapping it under ``state_dict`` / ``model_state_dict`` is unwrapped. The
activations are not in a state dict and must be given.

ONNX (:func:`load_onnx`), read with the ``onnx`` package only (no onnxruntime): a single-input,
single-output, sequential fully connected graph built from

* affine operators ``Gemm`` (``alpha``, ``beta``, ``transA=0``, ``transB``), ``MatMul``, ``Add``, ``Sub``,
  ``Mul``, ``Div`` and ``Neg`` with constant operands: consecutive affine operators, including an input
  normalisation ``(x - mean) / std`` before the first ``Gemm``, are folded into one layer's ``W, b``;
* shape operators ``Flatten``, ``Reshape``, ``Squeeze``, ``Unsqueeze``, ``Identity``, ``Cast`` (to float),
  ``Constant`` and constant folding of ``Shape``/``Gather``/``Concat`` on known shapes;
* activations ``Relu``, ``Sigmoid``, ``Tanh``, ``Gelu`` (``approximate="none"`` only), SiLU as
  ``x * Sigmoid(x)``, and exact GELU as PyTorch exports it, ``x * 0.5 * (1 + Erf(x / sqrt 2))`` in any
  operand order (``Div`` by ~1.4142135 or ``Mul`` by ~0.70710678; the constants need not be exact).

The ONNX graph is interpreted *exactly* (in real arithmetic): an ``Erf`` pattern ``p * (s erf(u) + s)``
with ``p = lam * u`` equals ``sqrt(2) lam s * gelu(z)`` with ``z = sqrt(2) u`` — an identity, not an
approximation — so float32 constants such as 1.4142135 are taken at their stored values and the loaded
network computes the function the file describes (up to float64 rounding).
"""

from __future__ import annotations

import inspect
import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InvalidInputError, NetworkShapeError, UnsupportedOperatorError
from .network import Layer, Network

Array = np.ndarray
_SQRT2 = math.sqrt(2.0)
#: Relative tolerance for "these two float64 vectors are the same one" in the ONNX pattern checks. The
#: operands come from the same constants through the same float64 operations, so real exports agree to
#: a few ulps; anything looser would change the function being verified.
_PATTERN_RTOL = 1e-9


# =====================================================================================================
# npz
# =====================================================================================================
_NPZ_STYLES = (
    # (weight regex, bias template, first index)
    (re.compile(r"^[Ww](\d+)$"), ("b{i}", "B{i}"), 1),
    (re.compile(r"^weights?_(\d+)$"), ("bias_{i}", "biases_{i}"), 0),
)
_NPZ_META_KEYS = {"activations", "orientation", "name", "metadata_json"}


def _npz_pairs(arrays: Mapping[str, Array], path: str) -> tuple[list[Array], list[Array]]:
    """Weight and bias lists from the keys of an npz file (see the module docstring for the styles)."""
    for pattern, bias_names, first in _NPZ_STYLES:
        found = {int(m.group(1)): key for key in arrays if (m := pattern.match(key))}
        if not found:
            continue
        indices = sorted(found)
        if indices != list(range(first, first + len(indices))):
            raise NetworkShapeError(f"{path}: weight keys {sorted(found.values())} are not numbered {first}, {first + 1}, ...")
        weights, biases, used = [], [], set(found.values())
        for i in indices:
            bias_key = next((t.format(i=i) for t in bias_names if t.format(i=i) in arrays), None)
            if bias_key is None:
                raise NetworkShapeError(f"{path}: weight {found[i]!r} has no bias ({' or '.join(t.format(i=i) for t in bias_names)})")
            used.add(bias_key)
            weights.append(np.asarray(arrays[found[i]], dtype=np.float64))
            biases.append(np.asarray(arrays[bias_key], dtype=np.float64))
        extra = sorted(set(arrays) - used - _NPZ_META_KEYS)
        if extra:
            raise UnsupportedOperatorError(f"{path}: unexpected arrays {extra} beside the weight/bias pairs")
        return weights, biases
    raise UnsupportedOperatorError(
        f"{path}: no weight arrays found (keys {sorted(arrays)}); expected W1,b1,W2,b2,... or weight_0,bias_0,..."
    )


def _scalar_string(array: Array) -> str:
    return str(np.asarray(array).reshape(()).item())


def _read_npz(source, label: str) -> dict[str, Array]:
    """The arrays of an npz archive (a path or a file object), nothing unpickled."""
    try:
        with np.load(source, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise InvalidInputError(f"network file not found: {label}") from None
    except (OSError, ValueError, EOFError) as exc:
        raise InvalidInputError(f"cannot read {label} as an npz archive: {exc}") from None


def _network_from_npz_arrays(arrays: Mapping[str, Array], label: str, *, orientation: str | None,
                             activations: str | Sequence[str] | None, name: str | None,
                             default_name: str) -> Network:
    """The network an npz archive's arrays describe, with the metadata its ``metadata_json`` holds."""
    weights, biases = _npz_pairs(arrays, label)
    if orientation is None:
        orientation = _scalar_string(arrays["orientation"]) if "orientation" in arrays else "out_in"
    if activations is None:
        activations = [str(a) for a in arrays["activations"]] if "activations" in arrays else "gelu"
    for i, b in enumerate(biases):
        if b.ndim != 1:
            raise NetworkShapeError(f"{label}: bias of layer {i} must be 1-D, got shape {b.shape}")
    metadata = {}
    if "metadata_json" in arrays:
        try:
            metadata = json.loads(_scalar_string(arrays["metadata_json"]))
        except (json.JSONDecodeError, ValueError) as exc:
            raise InvalidInputError(f"{label}: metadata_json is not JSON: {exc}") from None
        if not isinstance(metadata, dict):
            raise InvalidInputError(f"{label}: metadata_json must hold a JSON object, got {type(metadata).__name__}")
    default_name = _scalar_string(arrays["name"]) if "name" in arrays else default_name
    return Network.from_arrays(
        weights, biases, activations, name=name or default_name, orientation=orientation, metadata=metadata
    )


def load_npz(
    path: str | Path,
    *,
    orientation: str | None = None,
    activations: str | Sequence[str] | None = None,
    name: str | None = None,
) -> Network:
    """Load a network from an ``.npz`` of weight/bias pairs.

    Args:
        path: the file.
        orientation: ``"out_in"`` (``W @ x + b``, W of shape (n_out, n_in)) or ``"in_out"`` (Keras'
            ``x @ W + b``). ``None``: the ``orientation`` array in the file, else ``"out_in"``.
        activations: one name per layer, or one name for every hidden layer (the last is identity).
            ``None``: the ``activations`` array in the file, else ``"gelu"``.
        name: the network's name (default: the file's ``name`` array, else its stem).

    The metadata is the file's ``metadata_json`` (its ``input_domain`` among it), with ``source`` and
    ``format`` added where the file does not name them: a file written by :func:`save_npz` keeps its own.

    Raises:
        InvalidInputError: missing or unreadable file, bad option.
        UnsupportedOperatorError: unknown keys or activation names.
        NetworkShapeError: arrays of the wrong rank or sizes that do not chain.
    """
    path = Path(path)
    network = _network_from_npz_arrays(_read_npz(path, str(path)), str(path), orientation=orientation,
                                       activations=activations, name=name, default_name=path.stem)
    network.metadata.setdefault("source", str(path))
    network.metadata.setdefault("format", "npz")
    return network


def _npz_arrays(network: Network) -> dict[str, Array]:
    """The archive :func:`save_npz` and :func:`network_to_bytes` write: every field of the network."""
    arrays: dict[str, Array] = {}
    for i, layer in enumerate(network.layers, start=1):
        arrays[f"W{i}"] = np.asarray(layer.weight, dtype=np.float64)
        arrays[f"b{i}"] = np.asarray(layer.bias, dtype=np.float64)
    arrays["activations"] = np.array([layer.activation.name for layer in network.layers])
    arrays["orientation"] = np.array("out_in")
    arrays["name"] = np.array(network.name)
    arrays["metadata_json"] = np.array(json.dumps(network.metadata, sort_keys=True, default=str))
    return arrays


def save_npz(network: Network, path: str | Path) -> Path:
    """Write ``W1, b1, ...`` (``W @ x + b`` orientation, float64), ``activations``, ``orientation``,
    ``name`` and ``metadata_json``; :func:`load_npz` reads it back to the same :meth:`Network.digest`,
    name and metadata."""
    path = Path(path)
    with open(path, "wb") as handle:  # a file handle keeps numpy from appending ".npz" to the name
        np.savez(handle, **_npz_arrays(network))
    return path


def network_to_bytes(network: Network) -> bytes:
    """The network as npz bytes (the :func:`save_npz` archive): how a registered network travels through
    the database to any worker machine. Keeps every field: weights, biases, activations, name, metadata
    (the input domain among it)."""
    buffer = io.BytesIO()
    np.savez(buffer, **_npz_arrays(network))
    return buffer.getvalue()


def _renumber_legacy(arrays: dict[str, Array]) -> dict[str, Array]:
    """Archives stored before the codec was shared number their layers ``W0, b0, ...``: shift to ``W1, b1``."""
    if "W0" not in arrays:
        return arrays
    out = {}
    for key, value in arrays.items():
        m = re.match(r"^([Wb])(\d+)$", key)
        out[f"{m.group(1)}{int(m.group(2)) + 1}" if m else key] = value
    return out


def network_from_bytes(blob: bytes) -> Network:
    """The network :func:`network_to_bytes` wrote, metadata as it was (nothing is added)."""
    arrays = _renumber_legacy(_read_npz(io.BytesIO(blob), "stored network"))
    return _network_from_npz_arrays(arrays, "stored network", orientation=None, activations=None, name=None,
                                    default_name="network")


# =====================================================================================================
# PyTorch state dicts
# =====================================================================================================
def _unwrap_state_dict(obj: object, source: str) -> Mapping:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                return obj[key]
        return obj
    raise UnsupportedOperatorError(f"{source}: expected a state dict (a mapping of tensors), got {type(obj).__name__}")


def from_state_dict(
    state_dict: Mapping, *, activations: str | Sequence[str], name: str = "network", source: str = "state dict"
) -> Network:
    """A network from the Linear layers of a PyTorch ``state_dict``, in order of appearance.

    Keys must be ``<prefix>.weight`` (2-D) / ``<prefix>.bias`` (1-D, optional: zero if absent); any other
    key (batch-norm statistics, 1-D weights of normalisation layers, ...) is an unsupported layer.
    """
    weights: dict[str, Array] = {}
    biases: dict[str, Array] = {}
    for key, value in state_dict.items():
        prefix, _, leaf = str(key).rpartition(".")
        if leaf not in ("weight", "bias"):
            raise UnsupportedOperatorError(f"{source}: key {key!r} is not a Linear layer's weight or bias")
        array = _to_numpy(value, key, source)
        if leaf == "weight":
            if array.ndim != 2:
                raise UnsupportedOperatorError(
                    f"{source}: {key!r} has shape {array.shape}; only Linear layers (2-D weights) are supported"
                )
            weights[prefix] = array
        else:
            biases[prefix] = array
    orphans = sorted(set(biases) - set(weights))
    if orphans:
        raise UnsupportedOperatorError(f"{source}: biases without weights for layers {orphans}")
    if not weights:
        raise UnsupportedOperatorError(f"{source}: no Linear layer weights found (keys {list(state_dict)[:8]})")
    w_list = list(weights.values())
    b_list = [biases.get(prefix, np.zeros(w.shape[0])) for prefix, w in weights.items()]
    for prefix, b in zip(weights, b_list):
        if b.ndim != 1:
            raise NetworkShapeError(f"{source}: bias of layer {prefix!r} must be 1-D, got shape {b.shape}")
    return Network.from_arrays(
        w_list, b_list, activations, name=name, orientation="out_in",
        metadata={"source": source, "format": "torch", "layer_keys": list(weights)},
    )


def _to_numpy(value: object, key: str, source: str) -> Array:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        torch = None
    if torch is not None and isinstance(value, torch.Tensor):
        return value.detach().cpu().to(torch.float64).numpy()
    if isinstance(value, np.ndarray):
        return value.astype(np.float64)
    raise UnsupportedOperatorError(f"{source}: {key!r} is a {type(value).__name__}, not a tensor")


def load_torch(path: str | Path, *, activations: str | Sequence[str] | None = None, name: str | None = None) -> Network:
    """Load a PyTorch ``state_dict`` file with ``torch.load(weights_only=True)`` (no pickled code runs).

    Args:
        path: a file written by ``torch.save(model.state_dict(), path)``.
        activations: one name per Linear layer, or one name for the hidden layers (the last is identity).
        name: the network's name (default: the file's stem).
    """
    import torch

    path = Path(path)
    if activations is None:  # a state dict holds weights only
        raise InvalidInputError(f"{path}: a PyTorch state dict does not record its activations; pass activations=")
    if not path.exists():
        raise InvalidInputError(f"network file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ... for files it refuses
        raise InvalidInputError(f"cannot read {path} as a PyTorch state dict (weights_only=True): {exc}") from None
    state_dict = _unwrap_state_dict(obj, str(path))
    return from_state_dict(state_dict, activations=activations, name=name or path.stem, source=str(path))


# =====================================================================================================
# ONNX
# =====================================================================================================
# The interpreter walks the nodes in order and gives every tensor a symbolic value:
#   _Const  a known array;
#   _Affine z = A @ a + c, affine in the current *base* a (the network input, or the output of the
#           last activation), kept with the tensor's ONNX shape (batch dimension 1);
#   _Act    scale * f(z) + shift for an element-wise f of an affine z (f = relu, gelu, ..., or erf as
#           the inner part of the GELU pattern).
# When an operator needs an affine operand and gets an _Act, the activation is *materialised*: it
# becomes a Layer(A, c, f), the base moves to that layer's output, and the value becomes the affine map
# diag(scale) a + shift of the new base. Values of an older base cannot be used any more (a skip
# connection), which is an unsupported graph.


@dataclass(frozen=True)
class _Const:
    value: Array


@dataclass(frozen=True)
class _Affine:
    A: Array  # (n, n_base)
    c: Array  # (n,)
    shape: tuple[int, ...]
    base: int

    @property
    def size(self) -> int:
        return int(self.c.shape[0])


@dataclass(frozen=True)
class _Act:
    kind: str  # an activation name, or "erf"
    z: _Affine
    scale: Array
    shift: Array

    @property
    def shape(self) -> tuple[int, ...]:
        return self.z.shape

    @property
    def base(self) -> int:
        return self.z.base


_ALLOWED_ATTRIBUTES: dict[str, set[str]] = {
    "Gemm": {"alpha", "beta", "transA", "transB"},
    "MatMul": set(), "Add": set(), "Sub": set(), "Mul": set(), "Div": set(), "Neg": set(),
    "Flatten": {"axis"}, "Reshape": {"allowzero"}, "Squeeze": {"axes"}, "Unsqueeze": {"axes"},
    "Identity": set(), "Cast": {"to", "saturate"}, "Constant": {"value", "value_float", "value_floats", "value_int", "value_ints"},
    "Shape": set(), "Gather": {"axis"}, "Concat": {"axis"},
    "Relu": set(), "Sigmoid": set(), "Tanh": set(), "Erf": set(), "Gelu": {"approximate"},
}
_ELEMENTWISE_ACTIVATIONS = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Erf": "erf"}


class _Graph:
    """The interpreter's state: symbolic values by tensor name, the layers emitted so far."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.values: dict[str, _Const | _Affine | _Act] = {}
        self.layers: list[Layer] = []
        self.base = 0
        self.node = "?"

    def fail(self, message: str) -> UnsupportedOperatorError:
        return UnsupportedOperatorError(f"{self.source}: node {self.node}: {message}")

    # -- operands -------------------------------------------------------------------------------
    def get(self, name: str):
        if name not in self.values:
            raise self.fail(f"input tensor {name!r} is not produced by any earlier node or initializer")
        return self.values[name]

    def affine(self, value) -> _Affine:
        """An operand as an affine value of the current base (materialising an activation)."""
        if isinstance(value, _Act):
            value = self.materialise(value)
        if not isinstance(value, _Affine):
            raise self.fail("expected a tensor computed from the network input, got a constant")
        if value.base != self.base:
            raise self.fail("uses a tensor from before an activation (skip connections are not supported)")
        return value

    def materialise(self, act: _Act) -> _Affine:
        """Turn ``scale * f(z) + shift`` into a Layer(z, f) and an affine value of its output."""
        if act.kind == "erf":
            raise self.fail("Erf outside the exact-GELU pattern x * 0.5 * (1 + erf(x / sqrt 2))")
        if not self._is_last_layer(act):
            if act.base != self.base:
                raise self.fail("uses a tensor from before an activation (skip connections are not supported)")
            self.layers.append(Layer(act.z.A, act.z.c, act.kind))
            self.base += 1
        return _Affine(np.diag(act.scale), act.shift.copy(), act.shape, self.base)

    def _is_last_layer(self, act: _Act) -> bool:
        """Whether ``act`` is f(z) of the layer materialised last (the same tensor used twice)."""
        if not self.layers or act.base != self.base - 1:
            return False
        last = self.layers[-1]
        return last.activation.name == act.kind and np.array_equal(last.weight, act.z.A) and np.array_equal(last.bias, act.z.c)

    def constant_like(self, const: _Const, shape: tuple[int, ...]) -> Array:
        """A constant operand broadcast to a tensor's shape and flattened row-major."""
        value = np.asarray(const.value, dtype=np.float64)
        try:
            out_shape = np.broadcast_shapes(value.shape, shape)
        except ValueError:
            out_shape = None
        if out_shape != tuple(shape):
            raise self.fail(f"constant of shape {value.shape} does not broadcast onto a tensor of shape {shape}")
        return np.broadcast_to(value, shape).reshape(-1)


# -- element-wise arithmetic ---------------------------------------------------------------------------
def _scaled(g: _Graph, value, factor: Array):
    """value * factor (factor flattened to the value's size)."""
    if isinstance(value, _Affine):
        return _Affine(value.A * factor[:, None], value.c * factor, value.shape, value.base)
    return _Act(value.kind, value.z, value.scale * factor, value.shift * factor)


def _shifted(g: _Graph, value, offset: Array):
    if isinstance(value, _Affine):
        return _Affine(value.A, value.c + offset, value.shape, value.base)
    return _Act(value.kind, value.z, value.scale, value.shift + offset)


def _sum(g: _Graph, x, y, sign: float):
    """x + sign * y for two symbolic operands."""
    if isinstance(x, _Const) and isinstance(y, _Const):
        return _Const(np.asarray(x.value, np.float64) + sign * np.asarray(y.value, np.float64))
    if isinstance(y, _Const):
        return _shifted(g, x, sign * g.constant_like(y, x.shape))
    if isinstance(x, _Const):
        return _shifted(g, _scaled(g, y, np.full(_size(y), sign)), g.constant_like(x, y.shape))
    a, b = g.affine(x), g.affine(y)
    if a.shape != b.shape:
        raise g.fail(f"adds tensors of shapes {a.shape} and {b.shape} (broadcasting between tensors is not supported)")
    return _Affine(a.A + sign * b.A, a.c + sign * b.c, a.shape, a.base)


def _size(value) -> int:
    return value.size if isinstance(value, _Affine) else value.z.size


def _proportionality(p: _Affine, u: _Affine) -> Array | None:
    """lam with p = lam * u row by row (rows [A_i, c_i]), or None when p is not a multiple of u."""
    rp = np.hstack([p.A, p.c[:, None]])
    ru = np.hstack([u.A, u.c[:, None]])
    norm_u = np.einsum("ij,ij->i", ru, ru)
    lam = np.divide(np.einsum("ij,ij->i", rp, ru), norm_u, out=np.zeros_like(norm_u), where=norm_u > 0)
    residual = np.linalg.norm(rp - lam[:, None] * ru, axis=1)
    scale = np.maximum(np.linalg.norm(rp, axis=1), np.finfo(float).tiny)
    return lam if bool(np.all(residual <= _PATTERN_RTOL * scale)) else None


def _same(s: Array, t: Array) -> bool:
    return bool(np.all(np.abs(s - t) <= _PATTERN_RTOL * np.maximum(np.abs(s), np.abs(t))))


def _product(g: _Graph, x, y):
    """x * y: scaling by a constant, or the GELU / SiLU product patterns."""
    if isinstance(x, _Const) and isinstance(y, _Const):
        return _Const(np.asarray(x.value, np.float64) * np.asarray(y.value, np.float64))
    if isinstance(x, _Const):
        x, y = y, x
    if isinstance(y, _Const):
        return _scaled(g, x, g.constant_like(y, x.shape))
    if _is_gate(x) and not _is_gate(y):
        x, y = y, x
    if _is_gate(y):
        return _gated(g, g.affine(x), y)
    raise g.fail("multiplies two computed tensors; only x * (1 + erf(x/sqrt 2)) (GELU) and x * sigmoid(x) (SiLU) are supported")


def _is_gate(value) -> bool:
    """The second factor of the GELU (erf) or SiLU (sigmoid) product."""
    return isinstance(value, _Act) and value.kind in ("erf", "sigmoid")


def _gated(g: _Graph, p: _Affine, gate: _Act) -> _Act:
    """p * (s f(u) + t) with p = lam * u: exact GELU (f = erf, s = t) or SiLU (f = sigmoid, t = 0).

    GELU: lam u s (1 + erf(u)) = sqrt(2) lam s gelu(z) with z = sqrt(2) u, since gelu(z) = z/2 (1 + erf(z/sqrt 2)).
    SiLU: lam u s sigmoid(u) = lam s silu(u).
    """
    u = gate.z
    if p.base != u.base or p.shape != u.shape:
        raise g.fail("the GELU/SiLU product's operands are not the same tensor")
    lam = _proportionality(p, u)
    if lam is None:
        raise g.fail(f"x * {gate.kind}(y) where x is not a multiple of y: not a GELU/SiLU pattern")
    s, t = gate.scale, gate.shift
    if gate.kind == "erf":
        if not _same(s, t):
            raise g.fail("x * (a erf(x/sqrt 2) + b) with a != b is not GELU")
        z = _Affine(u.A * _SQRT2, u.c * _SQRT2, u.shape, u.base)
        return _Act("gelu", z, _SQRT2 * lam * s, np.zeros_like(s))
    if not np.all(t == 0.0):
        raise g.fail("x * (a sigmoid(x) + b) with b != 0 is not SiLU")
    return _Act("silu", u, lam * s, np.zeros_like(s))


# -- affine operators -----------------------------------------------------------------------------------
def _matmul(g: _Graph, x, weight: _Const, *, trans: bool = False) -> _Affine:
    """x @ W for x of shape (1, n) or (n,) and a constant 2-D W (its transpose when ``trans``)."""
    if not isinstance(weight, _Const):
        raise g.fail("the weight operand must be a constant (initializer)")
    a = g.affine(x)
    w = np.asarray(weight.value, dtype=np.float64)
    w = w.T if trans else w
    if w.ndim != 2:
        raise g.fail(f"weight of shape {w.shape} is not 2-D")
    if math.prod(a.shape[:-1]) != 1 or a.shape[-1] != w.shape[0]:
        raise g.fail(f"cannot multiply a tensor of shape {a.shape} by a weight of shape {w.shape}")
    return _Affine(w.T @ a.A, w.T @ a.c, (*a.shape[:-1], w.shape[1]), a.base)


def _gemm(g: _Graph, node, attrs) -> _Affine:
    if attrs.get("transA", 0):
        raise g.fail("Gemm with transA=1 is not supported")
    x, w = g.get(node.input[0]), g.get(node.input[1])
    if not isinstance(x, (_Affine, _Act)) or len(x.shape) != 2:
        raise g.fail("Gemm's first operand must be the 2-D data tensor")
    y = _matmul(g, x, w, trans=bool(attrs.get("transB", 0)))
    y = _scaled(g, y, np.full(y.size, float(attrs.get("alpha", 1.0))))
    if len(node.input) > 2 and node.input[2]:
        bias = g.get(node.input[2])
        if not isinstance(bias, _Const):
            raise g.fail("Gemm's C operand must be a constant")
        y = _shifted(g, y, float(attrs.get("beta", 1.0)) * g.constant_like(bias, y.shape))
    return y


# -- shapes ---------------------------------------------------------------------------------------------
def _reshaped(g: _Graph, value, shape: tuple[int, ...]):
    """The same row-major data under a new shape."""
    if isinstance(value, _Const):
        return _Const(np.asarray(value.value).reshape(shape))
    if math.prod(shape) != _size(value):
        raise g.fail(f"cannot reshape a tensor of {_size(value)} values to {shape}")
    if isinstance(value, _Affine):
        return _Affine(value.A, value.c, tuple(shape), value.base)
    z = value.z
    return _Act(value.kind, _Affine(z.A, z.c, tuple(shape), z.base), value.scale, value.shift)


def _shape_of(value) -> tuple[int, ...]:
    return tuple(np.asarray(value.value).shape) if isinstance(value, _Const) else tuple(value.shape)


def _reshape_target(g: _Graph, current: tuple[int, ...], spec: Array, allowzero: int) -> tuple[int, ...]:
    spec = [int(d) for d in np.asarray(spec).reshape(-1)]
    out = [current[i] if d == 0 and not allowzero else d for i, d in enumerate(spec)]
    if out.count(-1) > 1:
        raise g.fail(f"Reshape target {spec} has more than one -1")
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        if known == 0 or math.prod(current) % known:
            raise g.fail(f"cannot reshape {current} to {spec}")
        out[out.index(-1)] = math.prod(current) // known
    return tuple(out)


def _axes(g: _Graph, node, attrs) -> list[int] | None:
    if len(node.input) > 1 and node.input[1]:
        axes = g.get(node.input[1])
        if not isinstance(axes, _Const):
            raise g.fail("axes must be a constant")
        return [int(a) for a in np.asarray(axes.value).reshape(-1)]
    return list(attrs["axes"]) if "axes" in attrs else None


def _squeeze(g: _Graph, node, attrs):
    value = g.get(node.input[0])
    shape = _shape_of(value)
    axes = _axes(g, node, attrs)
    axes = [i for i, d in enumerate(shape) if d == 1] if axes is None else [a % len(shape) for a in axes]
    if any(shape[a] != 1 for a in axes):
        raise g.fail(f"Squeeze of axes {axes} of shape {shape} that are not 1")
    return _reshaped(g, value, tuple(d for i, d in enumerate(shape) if i not in axes))


def _unsqueeze(g: _Graph, node, attrs):
    value = g.get(node.input[0])
    shape = list(_shape_of(value))
    axes = _axes(g, node, attrs)
    if axes is None:
        raise g.fail("Unsqueeze without axes")
    rank = len(shape) + len(axes)
    for a in sorted(a % rank for a in axes):
        shape.insert(a, 1)
    return _reshaped(g, value, tuple(shape))


# -- nodes ----------------------------------------------------------------------------------------------
def _attributes(g: _Graph, node) -> dict:
    import onnx

    allowed = _ALLOWED_ATTRIBUTES.get(node.op_type)
    if allowed is None:
        raise g.fail(f"operator {node.op_type} is not supported")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    unknown = sorted(set(attrs) - allowed)
    if unknown:
        raise g.fail(f"attributes {unknown} of {node.op_type} are not supported")
    return attrs


def _constant_node(g: _Graph, attrs) -> _Const:
    from onnx import numpy_helper

    if "value" in attrs:
        return _Const(numpy_helper.to_array(attrs["value"]))
    key = next(iter(attrs), None)
    if key is None:
        raise g.fail("Constant without a value")
    return _Const(np.asarray(attrs[key]))


def _evaluate(g: _Graph, node, attrs):
    """The symbolic value of a node's (single) output."""
    op = node.op_type
    ins = [g.get(name) if name else None for name in node.input]
    if op == "Constant":
        return _constant_node(g, attrs)
    if op in ("Identity",):
        return ins[0]
    if op == "Cast":
        import onnx

        if attrs.get("to") not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16):
            if isinstance(ins[0], _Const):
                return _Const(np.asarray(ins[0].value).astype(onnx.helper.tensor_dtype_to_np_dtype(attrs["to"])))
            raise g.fail("Cast of the data tensor to a non-float type")
        return ins[0]
    if op == "Shape":
        return _Const(np.array(_shape_of(ins[0]), dtype=np.int64))
    if op in ("Gather", "Concat"):
        if not all(isinstance(v, _Const) for v in ins):
            raise g.fail(f"{op} of the data tensor is not supported (only of constant shapes)")
        if op == "Gather":
            return _Const(np.take(np.asarray(ins[0].value), np.asarray(ins[1].value), axis=attrs.get("axis", 0)))
        return _Const(np.concatenate([np.asarray(v.value).reshape(-1) if np.ndim(v.value) == 0 else v.value for v in ins], axis=attrs["axis"]))
    if op == "Gemm":
        return _gemm(g, node, attrs)
    if op == "MatMul":
        if isinstance(ins[0], _Const):
            raise g.fail("MatMul with the weight on the left (W @ x) is not supported; export x @ W")
        return _matmul(g, ins[0], ins[1])
    if op == "Add":
        return _sum(g, ins[0], ins[1], 1.0)
    if op == "Sub":
        return _sum(g, ins[0], ins[1], -1.0)
    if op == "Mul":
        return _product(g, ins[0], ins[1])
    if op == "Div":
        if not isinstance(ins[1], _Const):
            raise g.fail("division by a computed tensor (only by constants)")
        if isinstance(ins[0], _Const):
            return _Const(np.asarray(ins[0].value, np.float64) / np.asarray(ins[1].value, np.float64))
        divisor = g.constant_like(ins[1], ins[0].shape)
        if np.any(divisor == 0.0):
            raise g.fail("division by zero")
        return _scaled(g, ins[0], 1.0 / divisor)
    if op == "Neg":
        if isinstance(ins[0], _Const):
            return _Const(-np.asarray(ins[0].value, np.float64))
        return _scaled(g, ins[0], np.full(_size(ins[0]), -1.0))
    if op == "Flatten":
        shape = _shape_of(ins[0])
        axis = attrs.get("axis", 1) % (len(shape) + 1) if shape else 0
        return _reshaped(g, ins[0], (math.prod(shape[:axis]), math.prod(shape[axis:])))
    if op == "Reshape":
        if not isinstance(ins[1], _Const):
            raise g.fail("Reshape to a computed shape")
        return _reshaped(g, ins[0], _reshape_target(g, _shape_of(ins[0]), ins[1].value, attrs.get("allowzero", 0)))
    if op == "Squeeze":
        return _squeeze(g, node, attrs)
    if op == "Unsqueeze":
        return _unsqueeze(g, node, attrs)
    if op == "Gelu":
        approximate = attrs.get("approximate", "none")
        approximate = approximate.decode() if isinstance(approximate, bytes) else approximate
        if approximate != "none":
            raise g.fail(f"Gelu(approximate={approximate!r}) is not supported; only the exact erf form")
        kind = "gelu"
    else:
        kind = _ELEMENTWISE_ACTIVATIONS[op]
    if isinstance(ins[0], _Const):
        raise g.fail(f"{op} of a constant")
    z = g.affine(ins[0])
    return _Act(kind, z, np.ones(z.size), np.zeros(z.size))


def _input_shape(g: _Graph, value_info) -> tuple[int, ...]:
    """Static input shape; a symbolic (or missing) first dimension is the batch and becomes 1."""
    dims = value_info.type.tensor_type.shape.dim
    shape = []
    for i, d in enumerate(dims):
        if d.HasField("dim_value"):
            shape.append(int(d.dim_value))
        elif i == 0:
            shape.append(1)
        else:
            raise UnsupportedOperatorError(f"{g.source}: input {value_info.name!r} has a symbolic dimension {i}")
    if not shape:
        raise UnsupportedOperatorError(f"{g.source}: input {value_info.name!r} has no static shape")
    return tuple(shape)


def load_onnx(path: str | Path, *, name: str | None = None) -> Network:
    """Load a fully connected ONNX graph (see the module docstring for the operators) with ``onnx`` only.

    The network's input is the graph input flattened row-major (``(1, 784, 1)`` -> 784 values); a graph
    that ends with an activation gets a final identity layer, so the last layer is affine as everywhere.

    Raises:
        UnsupportedOperatorError: naming the node and the operator, attribute or shape it cannot represent.
        InvalidInputError: a missing or unreadable file.
    """
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    if not path.exists():
        raise InvalidInputError(f"network file not found: {path}")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError and others on a corrupt file
        raise InvalidInputError(f"cannot read {path} as an ONNX model: {exc}") from None
    g = _Graph(str(path))
    graph = model.graph
    for tensor in graph.initializer:
        g.values[tensor.name] = _Const(numpy_helper.to_array(tensor))
    inputs = [vi for vi in graph.input if vi.name not in g.values]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise UnsupportedOperatorError(
            f"{path}: expected one data input and one output, got inputs {[vi.name for vi in inputs]}"
            f" and outputs {[vo.name for vo in graph.output]}"
        )
    shape = _input_shape(g, inputs[0])
    n = math.prod(shape)
    g.values[inputs[0].name] = _Affine(np.eye(n), np.zeros(n), shape, 0)
    for index, node in enumerate(graph.node):
        g.node = f"{node.name or index} ({node.op_type})"
        if node.domain not in ("", "ai.onnx"):
            raise g.fail(f"operator domain {node.domain!r} is not supported")
        attrs = _attributes(g, node)
        if len(node.output) != 1:
            raise g.fail(f"{node.op_type} with {len(node.output)} outputs is not supported")
        g.values[node.output[0]] = _evaluate(g, node, attrs)
    g.node = "output"
    out = g.affine(g.get(graph.output[0].name))
    g.layers.append(Layer(out.A, out.c, "identity"))
    return Network(
        tuple(g.layers), name=name or path.stem,
        metadata={"source": str(path), "format": "onnx", "input_shape": list(shape)},
    )


# =====================================================================================================
# by suffix
# =====================================================================================================
_LOADERS = {".npz": load_npz, ".pt": load_torch, ".pth": load_torch, ".onnx": load_onnx}


def load_network(path: str | Path, **kwargs) -> Network:
    """Load by suffix: ``.npz`` -> :func:`load_npz`, ``.pt``/``.pth`` -> :func:`load_torch`,
    ``.onnx`` -> :func:`load_onnx`; keyword arguments go to that loader."""
    suffix = Path(path).suffix.lower()
    if suffix not in _LOADERS:
        raise UnsupportedOperatorError(
            f"unsupported network file type {suffix!r} for {path}; known: {', '.join(sorted(_LOADERS))}"
        )
    loader = _LOADERS[suffix]
    accepted = set(inspect.signature(loader).parameters) - {"path"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise InvalidInputError(f"option(s) {unknown} do not apply to {suffix} files; {loader.__name__} takes {sorted(accepted)}")
    return loader(path, **kwargs)
