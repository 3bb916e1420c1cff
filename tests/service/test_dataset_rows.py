"""A dataset slice converts only its own rows (bench/load.py: 20 clients submitting small slices at once each
turned the whole 10,000-image set into float64, ~100 MiB on the API's peak); the values are the same."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from polycert import batches, datasets


@pytest.mark.parametrize("name,split", [("mnist7-area", "test"), ("mnist7-bilinear", "test"), ("mnist7-bilinear", "train"),
                                        ("mnist28", "test")])
def test_rows_of_a_set_equal_the_same_rows_of_the_whole_set(name, split):
    x, y = datasets.load_preprocessed(name, split)
    for start, stop in ((0, 5), (17, 40), (len(x) - 3, len(x) + 10)):
        rows, labels, count = datasets.load_rows(name, split, start, stop)
        assert count == len(x)
        assert np.array_equal(rows, x[start:stop]) and rows.dtype == np.float64
        assert np.array_equal(labels, y[start:stop]) and labels.dtype == np.int64
    one, label, count = datasets.sample(name, 7, split)
    assert np.array_equal(one, x[7]) and label == int(y[7]) and count == len(x)


def test_a_small_slice_does_not_convert_the_whole_set():
    batches.load_slice(batches.DatasetSlice(name="mnist7-bilinear", start=0, stop=10))  # the file read and cached
    tracemalloc.start()
    try:
        x, y, sources = batches.load_slice(batches.DatasetSlice(name="mnist7-bilinear", start=100, stop=110))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert x.shape == (10, 49) and sources == list(range(100, 110))
    assert peak < 200_000, peak  # the whole test set in float64 is 3.9 MB


def test_an_unknown_set_or_split_is_refused_as_before():
    from polycert.formulations.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="unknown preprocessing"):
        datasets.load_rows("mnist9", "test", 0, 1)
    with pytest.raises(InvalidInputError, match="split must be one of"):
        datasets.load_rows("mnist7-area", "validation", 0, 1)
