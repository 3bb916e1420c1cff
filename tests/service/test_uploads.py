"""Upload limits read from the files' headers (service/uploads.py), for each format."""

from __future__ import annotations

import io

import numpy as np
import pytest

from polycert.uploads import (
    UploadLimits, UploadShapeError, UploadTooLargeError, check_upload, npz_shapes, onnx_shapes, torch_shapes,
)
from tests.live import ROOT

LIMITS = UploadLimits(max_bytes=2**20, max_decompressed_bytes=2**21, max_parameters=10_000, max_layers=3, max_width=100)


def npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def test_npz_shapes_come_from_the_npy_headers_and_skip_string_arrays():
    data = npz(W1=np.zeros((3, 4)), b1=np.zeros(3), activations=np.array(["relu", "identity"]))
    assert sorted(npz_shapes(data)) == [(3,), (3, 4)]


def test_an_npz_with_an_object_array_is_refused_as_pickled_data():
    buf = io.BytesIO()
    np.savez(buf, W1=np.array([{"a": 1}], dtype=object))
    with pytest.raises(Exception, match="pickled data"):
        npz_shapes(buf.getvalue())


@pytest.mark.parametrize("arrays, error, limit", [
    (dict(W1=np.zeros((200, 4))), UploadShapeError, "POLYCERT_UPLOAD_MAX_WIDTH"),
    (dict(W1=np.zeros((99, 99)), W2=np.zeros((99, 99))), UploadShapeError, "POLYCERT_UPLOAD_MAX_PARAMETERS"),
    ({f"W{i}": np.zeros((2, 2)) for i in range(1, 5)}, UploadShapeError, "POLYCERT_UPLOAD_MAX_LAYERS"),
    (dict(W1=np.zeros((1000, 300))), UploadTooLargeError, "POLYCERT_UPLOAD_MAX_DECOMPRESSED_BYTES"),
])
def test_each_npz_limit_is_named_in_its_error(arrays, error, limit, tmp_path):
    with pytest.raises(error, match=limit):
        check_upload("npz", npz(**arrays), str(tmp_path / "x.npz"), LIMITS)


def test_the_byte_limit_comes_first(tmp_path):
    with pytest.raises(UploadTooLargeError, match="POLYCERT_UPLOAD_MAX_BYTES"):
        check_upload("npz", bytes(2**20 + 1), str(tmp_path / "x.npz"), LIMITS)


def test_onnx_shapes_are_the_initializers_dims():
    data = (ROOT / "tests" / "fixtures" / "mnist-net_256x2.onnx").read_bytes()
    shapes = onnx_shapes(data)
    assert max(max(s) for s in shapes if s) == 784 and sum(1 for s in shapes if len(s) == 2) == 3


def test_a_pt_state_dict_is_measured_with_its_storage_mapped(tmp_path):
    import torch

    path = tmp_path / "net.pt"
    torch.save({"0.weight": torch.zeros(200, 4), "0.bias": torch.zeros(200)}, path)
    assert sorted(torch_shapes(str(path))) == [(200,), (200, 4)]
    with pytest.raises(UploadShapeError, match="a layer 200 wide, over 100"):
        check_upload("pt", path.read_bytes(), str(path), LIMITS)


def test_the_upload_route_is_a_plain_function_so_fastapi_runs_it_off_the_event_loop():
    import inspect

    from polycert.api.routers import networks

    assert not inspect.iscoroutinefunction(networks.upload)


def test_a_422_body_echoing_nan_and_infinities_is_json():
    import json

    from polycert.api.app import json_safe

    body = json_safe({"input": {"eps": [float("nan"), float("inf"), -float("inf"), 0.5]}, "loc": ("body", "eps")})
    assert json.loads(json.dumps(body, allow_nan=False)) == {"input": {"eps": ["nan", "inf", "-inf", 0.5]},
                                                            "loc": ["body", "eps"]}


def test_weights_in_onnx_constant_nodes_count_against_the_limits():
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weight = helper.make_node("Constant", [], ["W"], value=numpy_helper.from_array(np.zeros((300, 4), np.float32)))
    gemm = helper.make_node("Gemm", ["X", "W"], ["Y"], transB=1)
    graph = helper.make_graph([weight, gemm], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 300])])
    data = helper.make_model(graph).SerializeToString()
    assert onnx_shapes(data) == [(300, 4)]
    with pytest.raises(UploadShapeError, match="300 wide"):
        check_upload("onnx", data, "unused.onnx", LIMITS)
