"""The MNIST data the project ships: 7x7 images for the tiny networks, 28x28 test images for the big ones.

The files in ``service/assets/`` are derived once from the classic ``mnist.pkl.gz`` by
``python -m service.scripts.derive_mnist`` (the project never reads the source at run time). Every image
is stored as ``uint8`` *grey levels* ``q`` in 0..255 and the network input is ``q / 255`` in float64,
exactly: the stored file is the input, not an approximation of it.

Encodings (what the derivation computes from the 28x28 grey levels ``g``, integers 0..255):

* **area** (``mnist7_area.npz``, the project's own network): each 7x7 pixel is the mean of a 4x4 block
  of ``g``, rounded half up to an integer grey level: ``q = floor((sum of 16 greys + 8) / 16)``
  (:func:`area_resize` then :func:`quantise`).
* **bilinear** (``mnist7_bilinear.npz``, the study's network, seed README): ``tf.image.resize`` /
  ``F.interpolate(mode="bilinear", align_corners=False, antialias=False)`` of ``g / 255`` to 7x7
  (:func:`bilinear_resize`); the study's input is ``v = bilinear(g) / 255`` and we store ``v`` rounded half
  up to a grey level: ``q = floor(bilinear(g) + 1/2)`` (for 28 -> 7, ``bilinear(g)`` is the mean of the
  central 2x2 pixels of each 4x4 block, a multiple of 1/4, computed exactly).
  The study fed the unrounded ``v``; rounding moves an input by at most 1/510 (measured max 0.00196) and
  changes the study network's test accuracy from 69.76 % (unrounded) to 69.75 % (shipped uint8): one image
  of 10,000. We ship uint8, as issue 3 asks, and record the accuracy measured on the shipped data.
* **28x28** (``mnist28_test1000.npz``): the first 1,000 test images, ``g`` as is.

Labels are ``int64`` digits 0..9. Train = the standard 60,000 (the pickle's train + valid), test = the
standard 10,000 in their standard order.
"""

from __future__ import annotations

import functools
from importlib import resources

import numpy as np

from polycert.formulations.errors import InvalidInputError

Array = np.ndarray

ASSETS = "assets"
AREA_FILE = "mnist7_area.npz"
BILINEAR_FILE = "mnist7_bilinear.npz"
MNIST28_FILE = "mnist28_test1000.npz"
RESIZES = ("area", "bilinear")
SPLITS = ("train", "test")
#: Preprocessing names, as recorded in network metadata and the zoo.
PREPROCESSING = {"area": "mnist7-area", "bilinear": "mnist7-bilinear"}


# -- the resizings (pure functions, shared by the derivation script and the tests) ----------------------
def area_resize(images: Array, factor: int = 4) -> Array:
    """Mean over ``factor x factor`` blocks: (n, H, W) -> (n, H/factor, W/factor), float64."""
    images = np.asarray(images, dtype=np.float64)
    n, h, w = images.shape
    if h % factor or w % factor:
        raise InvalidInputError(f"images of shape {h}x{w} do not split into {factor}x{factor} blocks")
    return images.reshape(n, h // factor, factor, w // factor, factor).mean(axis=(2, 4))


def _source_index(out_size: int, in_size: int) -> tuple[Array, Array, Array]:
    """Half-pixel source coordinates of a 1-D bilinear resize, as PyTorch computes them.

    ``src = (dst + 1/2) * in/out - 1/2`` clamped below at 0 (ATen ``area_pixel_compute_source_index``
    with ``align_corners=False``); the right neighbour is clamped to the last pixel.
    Returns (left index, right index, weight of the right neighbour).
    """
    scale = in_size / out_size
    src = np.maximum((np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5, 0.0)
    left = np.floor(src).astype(np.int64)
    right = np.minimum(left + 1, in_size - 1)
    return left, right, src - left


def bilinear_resize(images: Array, size: tuple[int, int] = (7, 7)) -> Array:
    """Bilinear resize with half-pixel centres and no antialiasing, batched: (n, H, W) -> (n, h, w).

    Equals ``torch.nn.functional.interpolate(x, size, mode="bilinear", align_corners=False,
    antialias=False)`` and TensorFlow's ``tf.image.resize`` default (tested against torch in float64).
    For 28 -> 7 every output pixel is the mean of the central 2x2 pixels of its 4x4 block.
    """
    images = np.asarray(images, dtype=np.float64)
    if images.ndim != 3:
        raise InvalidInputError(f"expected a batch of images (n, H, W), got shape {images.shape}")
    top, bottom, wy = _source_index(size[0], images.shape[1])
    left, right, wx = _source_index(size[1], images.shape[2])
    rows = images[:, top, :] * (1.0 - wy)[None, :, None] + images[:, bottom, :] * wy[None, :, None]
    return rows[:, :, left] * (1.0 - wx) + rows[:, :, right] * wx


def quantise(grey: Array) -> Array:
    """Round grey levels half up to ``uint8`` (0..255): ``floor(v + 1/2)``; the network sees ``q / 255``."""
    grey = np.asarray(grey, dtype=np.float64)
    if grey.min(initial=0.0) < 0.0 or grey.max(initial=0.0) > 255.0:
        raise InvalidInputError("grey levels must lie in [0, 255]")
    return np.floor(grey + 0.5).astype(np.uint8)


def to_input(grey: Array) -> Array:
    """uint8 grey levels (n, ...) -> float64 network inputs ``q / 255`` flattened row-major to (n, d)."""
    grey = np.asarray(grey)
    return (grey.astype(np.float64) / 255.0).reshape(grey.shape[0], -1)


def encode_area(grey28: Array) -> Array:
    """28x28 grey levels (n, 28, 28) -> shipped 7x7 area encoding (n, 7, 7) uint8."""
    return quantise(area_resize(grey28, 4))


def encode_bilinear(grey28: Array) -> Array:
    """28x28 grey levels (n, 28, 28) -> shipped 7x7 bilinear encoding (n, 7, 7) uint8."""
    # The resize is linear, so resizing the grey levels and then dividing by 255 is the study's input;
    # resizing integers first keeps 28 -> 7 exact (quarter-integers), so ties round the same everywhere.
    return quantise(bilinear_resize(grey28, (7, 7)))


# -- loading the shipped files -------------------------------------------------------------------------
def asset_path(name: str):
    """A file of ``service/assets`` as an ``importlib.resources`` traversable."""
    return resources.files("polycert").joinpath(ASSETS, name)


@functools.lru_cache(maxsize=None)
def _load_npz(name: str) -> dict[str, Array]:
    with asset_path(name).open("rb") as handle, np.load(handle) as data:
        arrays = {key: data[key] for key in data.files}
    for array in arrays.values():
        array.setflags(write=False)
    return arrays


def load_mnist7(split: str = "test", resize: str = "area") -> tuple[Array, Array]:
    """The shipped 7x7 MNIST: ``x`` float64 in [0, 1] of shape (n, 49), ``y`` int64 digits.

    ``split`` is ``"train"`` (60,000) or ``"test"`` (10,000); ``resize`` is ``"area"`` (the project's own
    network) or ``"bilinear"`` (the study's). Returned arrays are fresh copies.
    """
    if split not in SPLITS:
        raise InvalidInputError(f"split must be one of {SPLITS}, got {split!r}")
    if resize not in RESIZES:
        raise InvalidInputError(f"resize must be one of {RESIZES}, got {resize!r}")
    data = _load_npz(AREA_FILE if resize == "area" else BILINEAR_FILE)
    return to_input(data[f"x_{split}"]), data[f"y_{split}"].astype(np.int64)


def load_mnist28_test() -> tuple[Array, Array]:
    """The first 1,000 MNIST test images at 28x28: ``x`` float64 ``g / 255`` of shape (1000, 784), ``y``."""
    data = _load_npz(MNIST28_FILE)
    return to_input(data["x_test"]), data["y_test"].astype(np.int64)


def _grey(preprocessing: str, split: str) -> tuple[Array, Array]:
    """The shipped grey levels (uint8, read-only, cached) and labels of a preprocessing name's split."""
    for resize, label in PREPROCESSING.items():
        if preprocessing == label:
            if split not in SPLITS:
                raise InvalidInputError(f"split must be one of {SPLITS}, got {split!r}")
            data = _load_npz(AREA_FILE if resize == "area" else BILINEAR_FILE)
            return data[f"x_{split}"], data[f"y_{split}"]
    if preprocessing == "mnist28" and split == "test":
        data = _load_npz(MNIST28_FILE)
        return data["x_test"], data["y_test"]
    raise InvalidInputError(
        f"unknown preprocessing {preprocessing!r} (split {split!r}); known: "
        + ", ".join([*PREPROCESSING.values(), "mnist28 (test)"])
    )


def load_rows(preprocessing: str, split: str = "test", start: int = 0, stop: int | None = None
              ) -> tuple[Array, Array, int]:
    """Rows ``start:stop`` of :func:`load_preprocessed` (the same values), converting only those rows:
    ``(x, y, number of images in the set)``. A job over a slice, or one image for the dashboard, no longer
    turns the whole set into float64 (3.9 MB for 10,000 7x7 images) per request (bench/load.py: 20 clients
    submitting at once took the API's peak RSS up by ~100 MiB)."""
    grey, labels = _grey(preprocessing, split)
    return to_input(grey[start:stop]), labels[start:stop].astype(np.int64), int(len(grey))


def load_preprocessed(preprocessing: str, split: str = "test") -> tuple[Array, Array]:
    """Data by preprocessing name (``"mnist7-area"``, ``"mnist7-bilinear"``, ``"mnist28"``; test only for 28)."""
    for resize, label in PREPROCESSING.items():
        if preprocessing == label:
            return load_mnist7(split, resize)
    if preprocessing == "mnist28" and split == "test":
        return load_mnist28_test()
    raise InvalidInputError(
        f"unknown preprocessing {preprocessing!r} (split {split!r}); known: "
        + ", ".join([*PREPROCESSING.values(), "mnist28 (test)"])
    )


# -- the shipped sets by name, for reading one image at a time (``GET /datasets``) ----------------------
#: (name, split) -> what it is; every name is a ``load_preprocessed`` name.
CATALOGUE = {
    ("mnist7-area", "test"): "7x7 MNIST test images, area encoding (polycert-tiny's inputs)",
    ("mnist7-area", "train"): "7x7 MNIST training images, area encoding",
    ("mnist7-bilinear", "test"): "7x7 MNIST test images, bilinear encoding (verianet's inputs)",
    ("mnist7-bilinear", "train"): "7x7 MNIST training images, bilinear encoding",
    ("mnist28", "test"): "the first 1,000 MNIST test images at 28x28",
}


def catalogue() -> list[dict]:
    """Each shipped set: name, split, number of images, input size, image side, description."""
    out = []
    for (name, split), description in CATALOGUE.items():
        x, _ = load_preprocessed(name, split)
        side = int(round(x.shape[1] ** 0.5))
        out.append(dict(name=name, split=split, count=int(x.shape[0]), input_size=int(x.shape[1]),
                        image_side=side if side * side == x.shape[1] else None, description=description))
    return out


def sample(name: str, index: int, split: str = "test") -> tuple[Array, int, int]:
    """Image ``index`` of a shipped set: (input float64 (d,), label, number of images in the set).
    Raises :class:`~service.errors.NotFoundError` for an unknown set or an index outside it (a 404)."""
    from polycert.errors import NotFoundError

    if (name, split) not in CATALOGUE:
        known = ", ".join(f"{n} ({s})" for n, s in CATALOGUE)
        raise NotFoundError(f"no shipped data set {name!r} ({split}); shipped: {known}")
    grey, _ = _grey(name, split)
    if not 0 <= index < len(grey):
        raise NotFoundError(f"data set {name} ({split}) has {len(grey)} images (index 0..{len(grey) - 1}); got index {index}")
    x, y, count = load_rows(name, split, index, index + 1)
    return x[0], int(y[0]), count
