"""Derive the shipped MNIST files of ``service/assets/`` from the classic ``mnist.pkl.gz``.

    python -m service.scripts.derive_mnist --source ../shared/data/mnist.pkl.gz

The source pickle holds ``((train_x, train_y), (valid_x, valid_y), (test_x, test_y))`` with ``x`` float32
grey level / 256; grey levels are recovered exactly as ``x * 256`` (integers 0..255, checked). Writes
(compressed, uint8 images, int64 labels; the encodings are documented in :mod:`service.datasets`):

* ``mnist7_area.npz``      ``x_train (60000, 7, 7)``, ``y_train``, ``x_test (10000, 7, 7)``, ``y_test``
* ``mnist7_bilinear.npz``  the same arrays with the study's bilinear resize
* ``mnist28_test1000.npz`` ``x_test (1000, 28, 28)``, ``y_test``: the first 1,000 test images

The project never reads the source at run time; this script is kept so the files can be re-derived.
"""

from __future__ import annotations

import argparse
import gzip
import pickle
from pathlib import Path

import numpy as np

from polycert.datasets import AREA_FILE, BILINEAR_FILE, MNIST28_FILE, encode_area, encode_bilinear

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
N_TEST_28 = 1000


def grey_levels(x: np.ndarray) -> np.ndarray:
    """Source rows ``grey / 256`` (n, 784) -> uint8 grey levels (n, 28, 28); refuses anything not integral."""
    grey = np.asarray(x, dtype=np.float64) * 256.0
    if not np.array_equal(grey, np.round(grey)) or grey.min() < 0 or grey.max() > 255:
        raise ValueError("source pixels are not grey levels / 256 in 0..255")
    return grey.astype(np.uint8).reshape(-1, 28, 28)


def read_source(path: Path) -> dict[str, np.ndarray]:
    with gzip.open(path, "rb") as handle:
        # The classic pickle of numpy arrays: a trusted file named on the command line, read offline.
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = pickle.load(handle, encoding="latin1")
    return {
        "x_train": grey_levels(np.concatenate([train_x, valid_x])),
        "y_train": np.concatenate([train_y, valid_y]).astype(np.int64),
        "x_test": grey_levels(test_x),
        "y_test": np.asarray(test_y, dtype=np.int64),
    }


def derive(source: Path, out_dir: Path = ASSETS_DIR) -> dict[str, Path]:
    """Write the three files into ``out_dir``; returns their paths."""
    data = read_source(source)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, encode in ((AREA_FILE, encode_area), (BILINEAR_FILE, encode_bilinear)):
        path = out_dir / name
        np.savez_compressed(
            path,
            x_train=encode(data["x_train"]),
            y_train=data["y_train"],
            x_test=encode(data["x_test"]),
            y_test=data["y_test"],
        )
        written[name] = path
    path = out_dir / MNIST28_FILE
    np.savez_compressed(path, x_test=data["x_test"][:N_TEST_28], y_test=data["y_test"][:N_TEST_28])
    written[MNIST28_FILE] = path
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="path to mnist.pkl.gz")
    parser.add_argument("--out", type=Path, default=ASSETS_DIR, help="output folder (default: service/assets)")
    args = parser.parse_args(argv)
    for name, path in derive(args.source, args.out).items():
        print(f"{name}: {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
