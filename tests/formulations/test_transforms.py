import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from polycert.formulations.errors import InvalidInputError
from polycert.formulations.network import Network
from polycert.formulations.transforms import magnitude_mask, prune, quantize, quantize_weights


def random_network(seed: int = 0, sizes=(2, 8, 6, 2), act: str = "relu") -> Network:
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal((m, n)) for n, m in zip(sizes, sizes[1:])]
    biases = [rng.standard_normal(m) for m in sizes[1:]]
    return Network.from_arrays(weights, biases, act, name="net")


def test_layer_pruning_removes_the_smallest_half_of_every_layer():
    net = random_network()
    pruned = prune(net, 0.5)
    for old, new in zip(net.layers, pruned.layers):
        zero = new.weight == 0.0
        assert zero.sum() == old.weight.size // 2
        # every removed weight is no larger in magnitude than every kept one
        assert np.abs(old.weight[zero]).max() <= np.abs(old.weight[~zero]).min()
        np.testing.assert_array_equal(new.weight[~zero], old.weight[~zero])
        np.testing.assert_array_equal(new.bias, old.bias)


def test_global_pruning_ranks_all_layers_together():
    net = random_network()
    scaled = net.with_layers([type(l)(l.weight * s, l.bias, l.activation) for l, s in zip(net.layers, (100.0, 1.0, 1.0))])
    pruned = prune(scaled, 0.3, scope="global")
    total = sum(l.weight.size for l in scaled.layers)
    removed = sum(int((l.weight == 0).sum()) for l in pruned.layers)
    assert removed == int(np.floor(0.3 * total))
    # the first layer's weights are 100x larger, so global pruning takes (almost) nothing from it
    assert (pruned.layers[0].weight == 0).sum() < (pruned.layers[1].weight == 0).sum()
    kept = np.concatenate([l.weight[l.weight != 0] for l in pruned.layers])
    gone = np.concatenate([o.weight[n.weight == 0] for o, n in zip(scaled.layers, pruned.layers)])
    assert np.abs(gone).max() <= np.abs(kept).min()


def test_pruned_network_records_its_origin_and_changes_digest():
    net = random_network()
    pruned = prune(net, 0.5, layers=[1])
    assert pruned.metadata["derived_from"] == net.digest()
    assert pruned.metadata["transform"]["kind"] == "prune"
    assert pruned.metadata["transform"]["removed"] == net.layers[1].weight.size // 2
    assert pruned.digest() != net.digest()
    np.testing.assert_array_equal(pruned.layers[0].weight, net.layers[0].weight)
    assert pruned.architecture == net.architecture


def test_pruning_nothing_keeps_the_function_and_everything_zeroes_the_weights():
    net = random_network()
    x = np.random.default_rng(1).standard_normal((5, 2))
    np.testing.assert_array_equal(prune(net, 0.0).forward(x), net.forward(x))
    assert all((l.weight == 0).all() for l in prune(net, 1.0).layers)


@given(st.integers(1, 60), st.floats(0.0, 1.0))
@settings(max_examples=50, deadline=None)
def test_magnitude_mask_removes_exactly_floor_fraction_even_with_ties(n, fraction):
    w = np.round(np.random.default_rng(n).standard_normal(n), 1)  # many ties
    keep = magnitude_mask(w, fraction)
    assert (~keep).sum() == int(np.floor(fraction * n + 1e-9))
    if keep.any() and (~keep).any():
        assert np.abs(w[~keep]).max() <= np.abs(w[keep]).min()


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_quantised_weights_lie_on_the_grid_within_half_a_step(bits):
    w = np.random.default_rng(bits).standard_normal((7, 5))
    q = quantize_weights(w, bits)
    step = np.abs(w).max() / (2 ** (bits - 1) - 1)
    assert np.abs(q - w).max() <= step / 2 + 1e-12
    np.testing.assert_allclose(q / step, np.round(q / step), atol=1e-9)
    assert len(np.unique(np.round(q / step))) <= 2 ** bits - 1


def test_quantised_network_is_close_to_the_original_at_16_bits():
    net = random_network(3)
    x = np.random.default_rng(2).standard_normal((20, 2))
    q = quantize(net, 16)
    assert q.metadata["transform"] == {"kind": "quantize", "bits": 16, "layers": [0, 1, 2]}
    assert np.abs(q.forward(x) - net.forward(x)).max() < 1e-2
    assert np.abs(quantize(net, 2).forward(x) - net.forward(x)).max() > 1e-1


@pytest.mark.parametrize("call", [
    lambda n: prune(n, 1.5),
    lambda n: prune(n, -0.1),
    lambda n: prune(n, "half"),
    lambda n: prune(n, 0.5, scope="neuron"),
    lambda n: prune(n, 0.5, layers=[7]),
    lambda n: quantize(n, 1),
    lambda n: quantize(n, 8.0),
])
def test_bad_transform_arguments_raise_invalid_input(call):
    with pytest.raises(InvalidInputError):
        call(random_network())
