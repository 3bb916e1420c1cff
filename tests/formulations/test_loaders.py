"""Loaders: ONNX graphs exported by PyTorch (and built by hand), state dicts and npz files, compared with
the framework that wrote them; unsupported operators, attributes and shapes raise typed errors."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from scipy.special import erf

from polycert.formulations.errors import InvalidInputError, NetworkShapeError, UnsupportedOperatorError
from polycert.formulations.domains import Domain, network_domain
from polycert.formulations.loaders import (
    from_state_dict, load_network, load_npz, load_onnx, load_torch, network_from_bytes, network_to_bytes, save_npz,
)
from polycert.formulations.network import Network

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
VNNCOMP_ONNX = FIXTURES / "mnist-net_256x2.onnx"

ACTIVATION_MODULES = {
    "gelu": lambda: torch.nn.GELU(approximate="none"),
    "relu": torch.nn.ReLU,
    "sigmoid": torch.nn.Sigmoid,
    "tanh": torch.nn.Tanh,
    "silu": torch.nn.SiLU,
}


class Normalise(torch.nn.Module):
    """Input normalisation (x - mean) / std, exported as Sub and Div before the first Gemm."""

    def forward(self, x):
        return (x - 0.1307) / 0.3081


def small_model(activation: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    act = ACTIVATION_MODULES[activation]
    return torch.nn.Sequential(
        Normalise(), torch.nn.Flatten(), torch.nn.Linear(12, 6), act(), torch.nn.Linear(6, 5), act(),
        torch.nn.Linear(5, 3),
    ).eval()


def export(model: torch.nn.Module, path: Path, opset: int) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, 4),), str(path), dynamo=False, opset_version=opset)
    return path


def torch_forward(model: torch.nn.Module, x: np.ndarray, shape=(3, 4)) -> np.ndarray:
    double = model.double()
    with torch.no_grad():
        out = double(torch.tensor(x).reshape(-1, *shape)).numpy()
    model.float()
    return out


def gelu(z):
    return 0.5 * z * (1.0 + erf(z / np.sqrt(2.0)))


# -- ONNX exported by PyTorch -----------------------------------------------------------------------------
@pytest.mark.parametrize("activation", sorted(ACTIVATION_MODULES))
def test_exported_onnx_matches_torch_in_float64_with_normalisation_folded(tmp_path, activation):
    model = small_model(activation)
    net = load_onnx(export(model, tmp_path / "m.onnx", opset=17))
    assert net.sizes == (12, 6, 5, 3)  # Sub/Div folded into the first layer, no extra layer
    assert [layer.activation.name for layer in net.layers] == [activation, activation, "identity"]
    x = np.random.default_rng(1).random((16, 12))
    np.testing.assert_allclose(net.forward(x), torch_forward(model, x), atol=1e-5, rtol=0)


@settings(max_examples=8, deadline=None)
@given(
    activation=st.sampled_from(sorted(ACTIVATION_MODULES)),
    widths=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_exported_random_mlps_match_torch(tmp_path_factory, activation, widths, seed):
    torch.manual_seed(seed)
    sizes = [5, *widths, 2]
    modules = []
    for n_in, n_out in zip(sizes, sizes[1:]):
        modules += [torch.nn.Linear(n_in, n_out), ACTIVATION_MODULES[activation]()]
    model = torch.nn.Sequential(*modules[:-1]).eval()
    path = tmp_path_factory.mktemp("onnx") / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 5),), str(path), dynamo=False, opset_version=17)
    net = load_onnx(path)
    assert net.sizes == tuple(sizes)
    x = np.random.default_rng(seed).normal(size=(6, 5)) * 3.0
    with torch.no_grad():
        ref = model.double()(torch.tensor(x)).numpy()
    np.testing.assert_allclose(net.forward(x), ref, atol=1e-5, rtol=1e-6)


def test_elementwise_scaled_silu_product_is_folded_into_the_next_layer(tmp_path):
    """w * x * sigmoid(x) is w * silu(x): the per-neuron factor w moves into the next layer's weights."""
    w = np.array([1.0, -2.0, 0.5, 3.0])
    nodes = [
        helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["w", "x"], ["h"]),
        helper.make_node("Mul", ["s", "h"], ["y"]),
    ]
    net = load_onnx(make_model(nodes, {"w": w}, path=tmp_path / "g.onnx"))
    assert net.architecture == "4-4-4 silu,identity"
    x = np.random.default_rng(0).normal(size=(5, 4))
    np.testing.assert_allclose(net.forward(x), w * x / (1.0 + np.exp(-x)), atol=1e-12)


def test_exact_gelu_uses_the_erf_pattern_at_opset_17_and_the_gelu_operator_at_opset_20(tmp_path):
    model = small_model("gelu", seed=3)
    x = np.random.default_rng(2).random((8, 12))
    for opset, op in ((17, "Erf"), (20, "Gelu")):
        path = export(model, tmp_path / f"m{opset}.onnx", opset=opset)
        assert op in {n.op_type for n in onnx.load(str(path)).graph.node}
        net = load_onnx(path)
        assert net.layers[0].activation.name == "gelu"
        np.testing.assert_allclose(net.forward(x), torch_forward(model, x), atol=1e-5, rtol=0)


def test_tanh_approximate_gelu_is_rejected_naming_the_operator(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.GELU(approximate="tanh"), torch.nn.Linear(3, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 4),), str(tmp_path / "m.onnx"), dynamo=False, opset_version=20)
    with pytest.raises(UnsupportedOperatorError, match="Gelu.*tanh"):
        load_onnx(tmp_path / "m.onnx")


def test_vnncomp_network_matches_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    net = load_onnx(VNNCOMP_ONNX)
    assert net.sizes == (784, 256, 256, 10)
    assert net.metadata["input_shape"] == [1, 784, 1]
    session = ort.InferenceSession(str(VNNCOMP_ONNX))
    x = np.random.default_rng(0).random((10, 784)).astype(np.float32)
    ref = np.concatenate([session.run(None, {"0": xi.reshape(1, 784, 1)})[0] for xi in x])
    # onnxruntime computes in float32: agreement to its rounding, not beyond
    np.testing.assert_allclose(net.forward(x.astype(np.float64)), ref, atol=1e-5, rtol=1e-5)


# -- ONNX built by hand -------------------------------------------------------------------------------------
def make_model(nodes, initializers, *, in_shape=(1, 4), out_name="y", opset=17, path: Path) -> Path:
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v, dtype=np.float32), name=k) for k, v in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.save(model, str(path))
    return path


def test_gelu_pattern_in_another_operand_order_with_matmul_add_is_exact_gelu(tmp_path):
    rng = np.random.default_rng(5)
    w1, b1, w2 = rng.normal(size=(4, 3)), rng.normal(size=3), rng.normal(size=(3, 2))
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["m"]),
        helper.make_node("Add", ["b1", "m"], ["z"]),  # bias first
        helper.make_node("Mul", ["z", "half"], ["hz"]),  # 0.5 * x before the erf factor
        helper.make_node("Mul", ["inv_sqrt2", "z"], ["u"]),  # multiply by 0.70710678 instead of Div
        helper.make_node("Erf", ["u"], ["e"]),
        helper.make_node("Add", ["one", "e"], ["ope"]),
        helper.make_node("Mul", ["ope", "hz"], ["a"]),  # erf factor on the left
        helper.make_node("MatMul", ["a", "W2"], ["y"]),
    ]
    inits = {"W1": w1, "b1": b1, "W2": w2, "half": 0.5, "inv_sqrt2": 0.70710678, "one": 1.0}
    net = load_onnx(make_model(nodes, inits, path=tmp_path / "g.onnx"))
    assert net.architecture == "4-3-2 gelu,identity"
    x = rng.random((6, 4))
    f32 = lambda a: np.asarray(a, dtype=np.float32).astype(np.float64)  # the file stores float32
    expected = gelu(x @ f32(w1) + f32(b1)) @ f32(w2)
    np.testing.assert_allclose(net.forward(x), expected, atol=1e-6, rtol=0)


def test_gemm_alpha_beta_and_untransposed_weight_are_applied(tmp_path):
    rng = np.random.default_rng(6)
    w, c = rng.normal(size=(4, 2)), rng.normal(size=2)
    nodes = [helper.make_node("Gemm", ["x", "W", "C"], ["y"], alpha=0.5, beta=2.0, transB=0)]
    net = load_onnx(make_model(nodes, {"W": w, "C": c}, path=tmp_path / "g.onnx"))
    x = rng.random((3, 4))
    f32 = lambda a: np.asarray(a, dtype=np.float32).astype(np.float64)
    np.testing.assert_allclose(net.forward(x), 0.5 * x @ f32(w) + 2.0 * f32(c), atol=1e-12)


def test_graph_ending_in_an_activation_gets_a_final_identity_layer(tmp_path):
    nodes = [helper.make_node("Gemm", ["x", "W"], ["z"], transB=1), helper.make_node("Relu", ["z"], ["y"])]
    w = np.array([[1.0, -1.0, 0.0, 2.0], [0.5, 0.0, 0.0, -1.0]])
    net = load_onnx(make_model(nodes, {"W": w}, path=tmp_path / "g.onnx"))
    assert net.architecture == "4-2-2 relu,identity"
    x = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    np.testing.assert_allclose(net.forward(x), np.maximum(x @ w.T, 0.0))


@pytest.mark.parametrize(
    ("nodes", "inits", "message"),
    [
        ([helper.make_node("Softmax", ["x"], ["y"])], {}, "Softmax"),
        ([helper.make_node("Gemm", ["x", "W"], ["y"], transA=1)], {"W": np.ones((1, 4))}, "transA"),
        ([helper.make_node("Flatten", ["x"], ["y"], foo=3)], {}, "foo"),
        ([helper.make_node("Erf", ["x"], ["y"])], {}, "Erf outside"),
        ([helper.make_node("Mul", ["x", "x"], ["y"])], {}, "multiplies two computed tensors"),
        ([helper.make_node("Div", ["W", "x"], ["y"])], {"W": np.ones(4)}, "division by a computed tensor"),
        (
            [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Add", ["r", "x"], ["y"])],
            {}, "skip connection",
        ),
        (
            [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Add", ["W", "x"], ["h"]),
             helper.make_node("Mul", ["h", "s"], ["y"])],
            {"W": np.array([1.0, 2.0, 1.0, 1.0])}, "not a multiple",  # (x + w) * sigmoid(x)
        ),
    ],
    ids=["softmax", "gemm-transA", "unknown-attribute", "bare-erf", "square", "divide-by-input", "skip", "not-silu"],
)
def test_unsupported_graphs_raise_naming_the_problem(tmp_path, nodes, inits, message):
    with pytest.raises(UnsupportedOperatorError, match=message):
        load_onnx(make_model(nodes, inits, path=tmp_path / "g.onnx"))


@pytest.mark.parametrize(
    ("nodes", "inits", "in_shape"),
    [
        ([helper.make_node("Gemm", ["x", "W"], ["y"], transB=1)], {"W": np.ones((2, 5))}, (1, 4)),
        ([helper.make_node("MatMul", ["x", "W"], ["y"])], {"W": np.ones((4, 2))}, (1, 4, 1)),
        ([helper.make_node("Add", ["x", "b"], ["y"])], {"b": np.ones(3)}, (1, 4)),
        ([helper.make_node("Reshape", ["x", "s"], ["y"])], {"s": np.array([3, -1])}, (1, 4)),
    ],
    ids=["gemm-width", "matmul-on-column", "bias-length", "reshape"],
)
def test_bad_shapes_raise_unsupported_operator_error(tmp_path, nodes, inits, in_shape):
    path = make_model(nodes, inits, in_shape=in_shape, path=tmp_path / "g.onnx")
    if nodes[0].op_type == "Reshape":  # shape tensors are int64
        model = onnx.load(str(path))
        model.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.array([3, -1], dtype=np.int64), "s"))
        onnx.save(model, str(path))
    with pytest.raises(UnsupportedOperatorError, match="node"):
        load_onnx(path)


def test_corrupt_or_missing_onnx_file_is_an_invalid_input(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all \xff\xff")
    with pytest.raises(InvalidInputError):
        load_onnx(bad)
    with pytest.raises(InvalidInputError, match="not found"):
        load_onnx(tmp_path / "missing.onnx")


# -- PyTorch state dicts --------------------------------------------------------------------------------------
class Named(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.out = torch.nn.Linear(7, 5), torch.nn.Linear(5, 4), torch.nn.Linear(4, 3, bias=False)

    def forward(self, x):
        return self.out(torch.tanh(self.fc2(torch.tanh(self.fc1(x)))))


@pytest.mark.parametrize("style", ["sequential", "named", "layers"])
def test_state_dict_round_trip_matches_torch(tmp_path, style):
    torch.manual_seed(1)
    if style == "named":
        model = saved = Named()
    else:
        model = saved = torch.nn.Sequential(
            torch.nn.Linear(7, 5), torch.nn.Tanh(), torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3, bias=False)
        )
        if style == "layers":  # keys layers.0.weight, ...
            saved = torch.nn.Module()
            saved.layers = model
    torch.save(saved.state_dict(), tmp_path / "m.pt")
    net = load_torch(tmp_path / "m.pt", activations="tanh")
    assert net.sizes == (7, 5, 4, 3)
    x = np.random.default_rng(0).random((5, 7))
    with torch.no_grad():
        ref = model.double()(torch.tensor(x)).numpy()
    np.testing.assert_allclose(net.forward(x), ref, atol=1e-12)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_state_dict_with_batch_norm_is_unsupported_and_pickled_objects_are_refused(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2), torch.nn.Linear(2, 2))
    with pytest.raises(UnsupportedOperatorError, match="running_mean|shape"):
        from_state_dict(model.state_dict(), activations="relu")
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(Path("x")))  # not a tensor dict: weights_only=True must refuse it
    with pytest.raises(InvalidInputError, match="weights_only"):
        load_torch(evil, activations="relu")


# -- npz -------------------------------------------------------------------------------------------------------
def random_arrays(rng, sizes=(6, 4, 3)):
    weights = [rng.normal(size=(o, i)) for i, o in zip(sizes, sizes[1:])]
    biases = [rng.normal(size=o) for o in sizes[1:]]
    return weights, biases


def test_npz_in_both_orientations_gives_the_same_network(tmp_path):
    rng = np.random.default_rng(2)
    weights, biases = random_arrays(rng)
    np.savez(tmp_path / "out_in.npz", **{f"W{i + 1}": w for i, w in enumerate(weights)}, **{f"b{i + 1}": b for i, b in enumerate(biases)})
    np.savez(tmp_path / "in_out.npz", **{f"weight_{i}": w.T for i, w in enumerate(weights)}, **{f"bias_{i}": b for i, b in enumerate(biases)})
    a = load_npz(tmp_path / "out_in.npz", orientation="out_in", activations="sigmoid")
    b = load_npz(tmp_path / "in_out.npz", orientation="in_out", activations=["sigmoid", "identity"])
    assert a.digest() == b.digest()
    x = rng.random((3, 6))
    expected = 1.0 / (1.0 + np.exp(-(x @ weights[0].T + biases[0])))
    np.testing.assert_allclose(a.forward(x), expected @ weights[1].T + biases[1])


def test_npz_in_the_wrong_orientation_does_not_chain(tmp_path):
    weights, biases = random_arrays(np.random.default_rng(3))
    np.savez(tmp_path / "m.npz", W1=weights[0], b1=biases[0], W2=weights[1], b2=biases[1])
    with pytest.raises(NetworkShapeError):
        load_npz(tmp_path / "m.npz", orientation="in_out", activations="relu")


def test_save_npz_round_trip_keeps_digest_activations_and_metadata(tmp_path):
    weights, biases = random_arrays(np.random.default_rng(4))
    net = Network.from_arrays(weights, biases, ["silu", "identity"], name="tiny", metadata={"preprocessing": "p"})
    path = save_npz(net, tmp_path / "saved.npz")
    back = load_network(path)
    assert back.digest() == net.digest()
    assert back.name == "tiny" and back.metadata["preprocessing"] == "p"
    assert [layer.activation.name for layer in back.layers] == ["silu", "identity"]


@pytest.mark.parametrize(
    ("arrays", "error", "message"),
    [
        ({"W1": np.ones((2, 3))}, NetworkShapeError, "no bias"),
        ({"W1": np.ones((2, 3)), "b1": np.ones(2), "W3": np.ones((1, 2)), "b3": np.ones(1)}, NetworkShapeError, "numbered"),
        ({"W1": np.ones((2, 3)), "b1": np.ones(2), "extra": np.ones(2)}, UnsupportedOperatorError, "extra"),
        ({"kernel": np.ones((2, 3))}, UnsupportedOperatorError, "no weight arrays"),
        ({"W1": np.ones((2, 3)), "b1": np.ones((2, 1))}, NetworkShapeError, "1-D"),
    ],
    ids=["missing-bias", "gap", "extra-key", "no-weights", "bias-rank"],
)
def test_malformed_npz_files_raise_naming_the_problem(tmp_path, arrays, error, message):
    np.savez(tmp_path / "m.npz", **arrays)
    with pytest.raises(error, match=message):
        load_npz(tmp_path / "m.npz", activations="relu")


def test_load_network_dispatches_on_suffix_and_rejects_unknown_types_and_options(tmp_path):
    assert load_network(VNNCOMP_ONNX, name="fc").name == "fc"
    with pytest.raises(InvalidInputError, match="orientation"):
        load_network(VNNCOMP_ONNX, orientation="in_out")
    torch.save(torch.nn.Linear(3, 2).state_dict(), tmp_path / "m.pt")
    with pytest.raises(InvalidInputError, match="activations"):
        load_network(tmp_path / "m.pt")
    assert load_network(tmp_path / "m.pt", activations=["identity"]).sizes == (3, 2)
    (tmp_path / "m.h5").write_bytes(b"")
    with pytest.raises(UnsupportedOperatorError, match="h5"):
        load_network(tmp_path / "m.h5")


# -- the one codec: files and storage keep every field --------------------------------------------------
def _every_field_network(domain) -> Network:
    rng = np.random.default_rng(11)
    metadata = {"source": "model.onnx", "format": "onnx", "preprocessing": "p", "recorded_accuracy": 0.97, "layer_keys": ["fc1", "fc2", "out"],
                "transform": {"kind": "prune", "removed": 3}, "note": None,
                "input_domain": domain.to_json()}
    return Network.from_arrays([rng.normal(size=(4, 3)), rng.normal(size=(5, 4)), rng.normal(size=(2, 5))],
                               [rng.normal(size=4), rng.normal(size=5), rng.normal(size=2)],
                               ["gelu", "tanh", "identity"], name="every-field", metadata=metadata)


def _assert_same_network(back: Network, net: Network) -> None:
    assert back.name == net.name and back.metadata == net.metadata
    assert [layer.activation.name for layer in back.layers] == [layer.activation.name for layer in net.layers]
    for mine, theirs in zip(back.layers, net.layers):
        assert np.array_equal(mine.weight, theirs.weight) and np.array_equal(mine.bias, theirs.bias)
    assert back.digest() == net.digest()


@pytest.mark.parametrize("domain", [Domain(-1.0, 1.0), Domain([0.0, -2.5, None], [255.0, 2.5, 1.0]),
                                    Domain.unbounded()], ids=["scalar", "per-coordinate", "unbounded"])
def test_the_codec_keeps_weights_biases_activations_name_metadata_and_domain(tmp_path, domain):
    net = _every_field_network(domain)
    for back in (network_from_bytes(network_to_bytes(net)), load_npz(save_npz(net, tmp_path / "n.npz"))):
        _assert_same_network(back, net)
        assert network_domain(back) == domain
        assert network_domain(back).bounds(3)[0].tolist() == domain.bounds(3)[0].tolist()


def test_a_file_without_source_gets_its_path_and_format_while_a_saved_one_keeps_its_own(tmp_path):
    weights, biases = random_arrays(np.random.default_rng(5))
    np.savez(tmp_path / "plain.npz", W1=weights[0], b1=biases[0], W2=weights[1], b2=biases[1])
    plain = load_npz(tmp_path / "plain.npz", activations="relu")
    assert plain.metadata == {"source": str(tmp_path / "plain.npz"), "format": "npz"}
    onnx_born = Network.from_arrays(weights, biases, "relu", metadata={"source": "model.onnx", "format": "onnx"})
    assert load_npz(save_npz(onnx_born, tmp_path / "kept.npz")).metadata == onnx_born.metadata


def test_networks_stored_before_the_shared_codec_are_still_read():
    import io

    weights, biases = random_arrays(np.random.default_rng(6))
    buffer = io.BytesIO()  # the old workers/networks.py layout: W0, b0, ..., activations, name, no metadata
    np.savez(buffer, W0=weights[0], b0=biases[0], W1=weights[1], b1=biases[1],
             activations=np.array(["relu", "identity"]), name=np.array("old"))
    back = network_from_bytes(buffer.getvalue())
    net = Network.from_arrays(weights, biases, "relu", name="old")
    assert back.digest() == net.digest() and back.name == "old" and back.metadata == {}


def test_bytes_that_are_not_an_archive_are_refused_with_a_message():
    with pytest.raises(InvalidInputError, match="cannot read stored network as an npz archive"):
        network_from_bytes(b"not an archive")
