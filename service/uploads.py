"""Upload limits: a network file is measured from its headers before any large array is built.

A 310 KB ``.npz`` can decompress into a 784-100000-10 network (1.3 GB in the database, 20 s of parsing); so
the sizes are read first, from what each format declares without allocating it:

- ``.npz`` (and the zip inside a ``.pt``): the zip members' declared sizes (``zipfile`` never inflates a
  member past its declared size, so the header is a bound), then each ``.npy`` member's header (shape, dtype);
- ``.onnx``: the initializers' ``dims``;
- ``.pt``: ``torch.load(weights_only=True, mmap=True)``: the tensors' shapes with their storage mapped, not read.

Byte limits are HTTP 413 (:class:`UploadTooLargeError`), shape limits 422 (:class:`UploadShapeError`); each
message names the limit and the setting that sets it. The checks are pure functions of bytes and
:class:`UploadLimits` so that the API and the command line apply the same ones.
"""

from __future__ import annotations

import io
import math
import zipfile
from dataclasses import dataclass
from typing import Iterable, Sequence

from polycert.formulations.errors import InvalidInputError

Shape = tuple[int, ...]


class UploadTooLargeError(InvalidInputError):
    """The file, or what it decompresses into, is over a byte limit (HTTP 413)."""


class UploadShapeError(InvalidInputError):
    """The network the file declares is over a parameter, layer or width limit (HTTP 422)."""


@dataclass(frozen=True)
class UploadLimits:
    """The limits and the settings (``POLYCERT_*``) they come from (``Settings.upload_limits``)."""

    max_bytes: int
    max_decompressed_bytes: int
    max_parameters: int
    max_layers: int
    max_width: int


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"


def check_bytes(size: int, limits: UploadLimits) -> None:
    """The upload itself: at most ``max_bytes``."""
    if size > limits.max_bytes:
        raise UploadTooLargeError(f"the upload is over {_mib(limits.max_bytes)} (limit POLYCERT_UPLOAD_MAX_BYTES)")


def _zip_members(data: bytes, what: str) -> list[zipfile.ZipInfo]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError):
        raise InvalidInputError(f"not a valid {what} (zip) file") from None


def check_decompressed(members: Iterable[zipfile.ZipInfo], limits: UploadLimits) -> None:
    total = sum(m.file_size for m in members)
    if total > limits.max_decompressed_bytes:
        raise UploadTooLargeError(
            f"the archive decompresses into {_mib(total)}, over {_mib(limits.max_decompressed_bytes)}"
            f" (limit POLYCERT_UPLOAD_MAX_DECOMPRESSED_BYTES)")


def check_shapes(shapes: Sequence[Shape], limits: UploadLimits) -> None:
    """Parameters (every array's size), layers (2-D arrays: the weights) and width (the largest dimension)."""
    bad = [s for s in shapes if any(d < 0 for d in s)]
    if bad:
        raise UploadShapeError(f"the file declares arrays of impossible shape {list(bad[0])}")
    layers = sum(1 for s in shapes if len(s) == 2)
    if layers > limits.max_layers:
        raise UploadShapeError(f"the network has {layers} layers, over {limits.max_layers} (limit POLYCERT_UPLOAD_MAX_LAYERS)")
    width = max((d for s in shapes for d in s), default=0)
    if width > limits.max_width:
        raise UploadShapeError(f"the network has a layer {width} wide, over {limits.max_width}"
                               f" (limit POLYCERT_UPLOAD_MAX_WIDTH)")
    parameters = sum(math.prod(s) for s in shapes)
    if parameters > limits.max_parameters:
        raise UploadShapeError(f"the network has {parameters:,} parameters, over {limits.max_parameters:,}"
                               f" (limit POLYCERT_UPLOAD_MAX_PARAMETERS)")


def npz_shapes(data: bytes) -> list[Shape]:
    """The shapes in an ``.npz``'s ``.npy`` headers (numeric arrays only; strings such as ``activations``
    are metadata), without reading the arrays. Raises :class:`InvalidInputError` for a file that is not
    a zip of ``.npy`` members, or holds object (pickled) arrays."""
    import numpy as np

    headers = []
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for member in archive.infolist():
                with archive.open(member) as fh:
                    version = np.lib.format.read_magic(fh)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                    shape, _, dtype = read(fh)
                headers.append((member.filename, shape, dtype))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise InvalidInputError("not a valid .npz (zip) file: a member is not a NumPy .npy array") from None
    shapes = []
    for filename, shape, dtype in headers:
        if dtype.hasobject:
            raise InvalidInputError(f"array {filename!r} holds Python objects (pickled data); only numeric arrays"
                                    " are accepted")
        if dtype.kind in "biuf":
            shapes.append(tuple(int(d) for d in shape))
    return shapes


def onnx_shapes(data: bytes) -> list[Shape]:
    """The declared ``dims`` of the initializers and Constant nodes (the protobuf is parsed, its tensors are
    not converted)."""
    import onnx

    try:
        model = onnx.load_model_from_string(data)
    except Exception:  # protobuf's DecodeError and friends
        raise InvalidInputError("not a valid .onnx file (the protobuf does not parse)") from None
    tensors = list(model.graph.initializer)
    # weights may also hide in Constant nodes' tensor attributes; they count the same
    tensors += [a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.HasField("t")]
    return [tuple(int(d) for d in t.dims) for t in tensors]


def torch_shapes(path: str) -> list[Shape]:
    """The tensors' shapes of a ``.pt`` state dict, loaded with ``weights_only=True`` and ``mmap=True``
    (storages mapped, not read), anywhere in nested dicts / lists."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # weights_only refuses pickled code; a legacy (non-zip) file cannot be mapped
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise InvalidInputError(f"not a valid PyTorch state dict (weights_only=True): {type(exc).__name__}") from None
    shapes: list[Shape] = []

    def walk(value) -> None:
        if isinstance(value, torch.Tensor):
            shapes.append(tuple(int(d) for d in value.shape))
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)

    walk(obj)
    return shapes


def check_upload(fmt: str, data: bytes, path: str, limits: UploadLimits) -> None:
    """Every limit for an upload of format ``fmt`` (``npz`` / ``pt`` / ``onnx``) whose bytes are ``data``,
    also written at ``path`` (``torch.load`` wants a file). Raises before any array is built."""
    check_bytes(len(data), limits)
    if fmt == "npz":
        check_decompressed(_zip_members(data, ".npz"), limits)
        check_shapes(npz_shapes(data), limits)
    elif fmt == "pt":
        if zipfile.is_zipfile(io.BytesIO(data)):  # torch's format since 1.6; the legacy one is not compressed
            check_decompressed(_zip_members(data, ".pt"), limits)
        check_shapes(torch_shapes(path), limits)
    elif fmt == "onnx":
        check_shapes(onnx_shapes(data), limits)
