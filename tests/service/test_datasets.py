"""The shipped MNIST files: shapes, labels, value ranges, and recomputation from the shipped 28x28 images
with independent integer formulas and with PyTorch's resize."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from polycert.formulations.errors import InvalidInputError
from polycert.datasets import (
    area_resize,
    bilinear_resize,
    encode_area,
    encode_bilinear,
    load_mnist7,
    load_mnist28_test,
    load_preprocessed,
    quantise,
)
from polycert.scripts.derive_mnist import derive, grey_levels


@pytest.mark.parametrize("resize", ["area", "bilinear"])
@pytest.mark.parametrize(("split", "n"), [("train", 60_000), ("test", 10_000)])
def test_mnist7_has_the_standard_sizes_labels_and_grey_levels(split, n, resize):
    x, y = load_mnist7(split, resize)
    assert x.shape == (n, 49) and x.dtype == np.float64
    assert y.shape == (n,) and y.dtype == np.int64
    assert set(np.unique(y)) == set(range(10))
    assert x.min() == 0.0 and x.max() == 1.0
    grey = x * 255.0
    np.testing.assert_array_equal(grey, np.round(grey))  # exactly q / 255 for integer q


def test_both_resizings_share_labels_and_the_28x28_images_are_the_first_test_images():
    _, y_area = load_mnist7("test", "area")
    _, y_bilinear = load_mnist7("test", "bilinear")
    x28, y28 = load_mnist28_test()
    np.testing.assert_array_equal(y_area, y_bilinear)
    assert x28.shape == (1000, 784) and 0.0 <= x28.min() and x28.max() <= 1.0
    np.testing.assert_array_equal(y28, y_area[:1000])
    assert y_area[:5].tolist() == [7, 2, 1, 0, 4]  # the standard order of the MNIST test set


def shipped_grey28() -> np.ndarray:
    x28, _ = load_mnist28_test()
    grey = np.round(x28 * 255.0).astype(np.int64)
    np.testing.assert_array_equal(grey, x28 * 255.0)
    return grey.reshape(-1, 28, 28)


def test_area_encoding_recomputes_from_28x28_with_integer_block_sums():
    grey = shipped_grey28()
    block_sums = grey.reshape(-1, 7, 4, 7, 4).sum(axis=(2, 4))
    expected = (block_sums + 8) // 16  # mean of 16 grey levels, rounded half up
    x7, _ = load_mnist7("test", "area")
    np.testing.assert_array_equal(x7[:1000] * 255.0, expected.reshape(-1, 49))


def test_bilinear_encoding_recomputes_from_28x28_as_torch_resizes_it():
    grey = shipped_grey28()
    central = grey.reshape(-1, 7, 4, 7, 4)[:, :, 1:3, :, 1:3].sum(axis=(2, 4))
    expected = (central + 2) // 4  # mean of the central 2x2 of each block, rounded half up
    resized = F.interpolate(torch.tensor(grey[:, None].astype(np.float64)), size=(7, 7), mode="bilinear",
                            align_corners=False, antialias=False).numpy()[:, 0]
    np.testing.assert_array_equal(np.floor(resized + 0.5), expected)
    x7, _ = load_mnist7("test", "bilinear")
    np.testing.assert_array_equal(x7[:1000] * 255.0, expected.reshape(-1, 49))


@settings(max_examples=25, deadline=None)
@given(
    in_h=st.integers(1, 30), in_w=st.integers(1, 30), out_h=st.integers(1, 12), out_w=st.integers(1, 12),
    seed=st.integers(0, 2**16),
)
def test_numpy_bilinear_resize_equals_torch_interpolate(in_h, in_w, out_h, out_w, seed):
    images = np.random.default_rng(seed).random((3, in_h, in_w))
    ours = bilinear_resize(images, (out_h, out_w))
    ref = F.interpolate(torch.tensor(images[:, None]), size=(out_h, out_w), mode="bilinear",
                        align_corners=False, antialias=False).numpy()[:, 0]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


def test_area_resize_equals_torch_average_pooling():
    images = np.random.default_rng(0).random((4, 28, 28))
    ref = F.avg_pool2d(torch.tensor(images[:, None]), 4).numpy()[:, 0]
    np.testing.assert_allclose(area_resize(images, 4), ref, rtol=0, atol=1e-12)


def test_quantise_rounds_half_up_and_rejects_out_of_range_grey_levels():
    np.testing.assert_array_equal(quantise(np.array([0.0, 0.49, 0.5, 1.5, 254.5, 255.0])), [0, 0, 1, 2, 255, 255])
    with pytest.raises(InvalidInputError):
        quantise(np.array([255.5]))
    with pytest.raises(InvalidInputError):
        quantise(np.array([-0.1]))


def test_unknown_split_resize_or_preprocessing_raise():
    with pytest.raises(InvalidInputError, match="split"):
        load_mnist7("valid")
    with pytest.raises(InvalidInputError, match="resize"):
        load_mnist7("test", "nearest")
    with pytest.raises(InvalidInputError, match="unknown preprocessing"):
        load_preprocessed("mnist7-lanczos")
    x, _ = load_preprocessed("mnist7-bilinear")
    np.testing.assert_array_equal(x, load_mnist7("test", "bilinear")[0])


def test_derivation_script_writes_the_encodings_of_a_pickle_in_the_source_format(tmp_path):
    rng = np.random.default_rng(0)
    parts = []
    for n in (5, 3, 4):  # train, valid, test in the classic pickle's layout: float32 grey / 256
        grey = rng.integers(0, 256, size=(n, 784))
        parts.append(((grey / 256.0).astype(np.float32), rng.integers(0, 10, size=n)))
    source = tmp_path / "mnist.pkl.gz"
    with gzip.open(source, "wb") as handle:
        pickle.dump(tuple(parts), handle)
    written = derive(source, tmp_path / "out")
    grey_train = grey_levels(np.concatenate([parts[0][0], parts[1][0]]))
    with np.load(written["mnist7_area.npz"]) as area:
        assert area["x_train"].shape == (8, 7, 7) and area["x_train"].dtype == np.uint8
        np.testing.assert_array_equal(area["x_train"], encode_area(grey_train))
        np.testing.assert_array_equal(area["y_train"], np.concatenate([parts[0][1], parts[1][1]]))
    with np.load(written["mnist7_bilinear.npz"]) as bilinear:
        np.testing.assert_array_equal(bilinear["x_test"], encode_bilinear(grey_levels(parts[2][0])))
    with np.load(written["mnist28_test1000.npz"]) as full:
        np.testing.assert_array_equal(full["x_test"].reshape(4, 784), np.round(parts[2][0] * 256))


def test_derivation_refuses_pixels_that_are_not_grey_levels():
    with pytest.raises(ValueError, match="grey levels"):
        grey_levels(np.full((1, 784), 0.3, dtype=np.float32))
