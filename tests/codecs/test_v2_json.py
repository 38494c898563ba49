"""The V2 REST JSON tensor format: request decoding (JSON and binary tensors) and response encoding."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import orjson
import pytest

from modelserve.codecs.v2_binary import pack_bytes
from modelserve.codecs.v2_json import encode_infer_response, parse_header_length, parse_infer_request
from modelserve.core.signature import STRING, Signature, TensorSpec
from modelserve.errors import InvalidArgument

SIGNATURE = Signature(
    name="serving_default",
    inputs={
        "x": TensorSpec("x", np.dtype(np.float32), (None, 2)),
        "s": TensorSpec("s", STRING, (None,)),
    },
    outputs={"y": TensorSpec("y", np.dtype(np.float32), (None, 1))},
)


def body(*inputs: dict[str, Any], **extra: Any) -> bytes:
    return json.dumps({"inputs": list(inputs), **extra}).encode()


def x_input(data: Any = ((1, 2), (3, 4)), shape: Any = (2, 2), datatype: str = "FP32") -> dict[str, Any]:
    return {"name": "x", "shape": list(shape), "datatype": datatype, "data": data}


@pytest.mark.parametrize("data", [[[1, 2], [3, 4]], [1, 2, 3, 4], [1.0, 2.0, 3.0, 4.0]])
def test_flat_or_nested_data(data: Any) -> None:
    request = parse_infer_request(body(x_input(data)))
    decoded = request.inputs["x"]
    assert decoded.datatype == "FP32"
    np.testing.assert_array_equal(decoded.array, np.array([[1, 2], [3, 4]], np.float32))
    assert decoded.array.dtype == np.float32
    assert request.id == "" and request.outputs == [] and request.output_names is None


def test_every_datatype_decodes_from_json() -> None:
    cases = {
        "BOOL": ([True, False], np.bool_),
        "UINT8": ([0, 255], np.uint8),
        "INT8": ([-128, 127], np.int8),
        "INT64": ([-(2**63), 2**63 - 1], np.int64),
        "UINT64": ([0, 2**64 - 1], np.uint64),
        "FP16": ([0.5, 1], np.float16),
        "FP64": ([0.1, 2], np.float64),
    }
    for datatype, (data, dtype) in cases.items():
        request = parse_infer_request(body({"name": "t", "shape": [2], "datatype": datatype, "data": data}))
        array = request.inputs["t"].array
        assert array.dtype == np.dtype(dtype), datatype
        np.testing.assert_array_equal(array, np.array(data, dtype=dtype))


def test_bytes_from_json_strings() -> None:
    request = parse_infer_request(
        body({"name": "s", "shape": [2, 1], "datatype": "BYTES", "data": [["a"], ["\u00e9"]]})
    )
    array = request.inputs["s"].array
    assert array.dtype == STRING and array.shape == (2, 1)
    assert array.ravel().tolist() == [b"a", "\u00e9".encode()]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"{not json", "malformed JSON in the request body"),
        (b"[1]", "must be a JSON object"),
        (b'{"inputs": []}', "non-empty 'inputs' list"),
        (body({"shape": [1], "datatype": "FP32", "data": [1]}), r"inputs\[0\] has no 'name'"),
        (body(x_input(datatype="FLOAT")), "unsupported datatype 'FLOAT'"),
        (body(x_input(shape=(2, 3))), r"input 'x' has 4 elements in 'data' but shape \[2,3\] needs 6"),
        (body(x_input(data=[1, 2, 3])), r"has 3 elements in 'data' but shape \[2,2\] needs 4"),
        (body(x_input(data=[[1, 2], [3]])), "input 'x' has malformed data for datatype FP32"),
        (body(x_input(data=["a", "b", "c", "d"])), "input 'x' of datatype FP32 holds string values"),
        (
            body(x_input(data=[1.5, 2, 3, 4], datatype="INT32")),
            "input 'x' of datatype INT32 holds floating-point values",
        ),
        (body(x_input(data=[1, 2, 3, 300], datatype="UINT8")), "out of the range of UINT8"),
        (body(x_input(data=[1, 0, 1, 0], datatype="BOOL")), "datatype BOOL holds integer values"),
        (
            body({"name": "s", "shape": [1], "datatype": "BYTES", "data": [1]}),
            "BYTES holds a non-string value",
        ),
        (body(x_input(shape=("2", 2))), "needs a 'shape' list of integers"),
        (body(x_input(), x_input()), "input 'x' is given more than once"),
        (body({"name": "x", "shape": [1], "datatype": "FP32"}), "neither 'data' nor a 'binary_data_size'"),
        (body(x_input(), id=5), "'id' must be a string"),
        (body(x_input(), parameters={"binary_data_output": "yes"}), "'binary_data_output' must be a boolean"),
        (body(x_input(), outputs=[{"name": "y", "parameters": {"classification": 3}}]), "'classification'"),
        (
            body({"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}),
            "no Inference-Header-Content-Length header",
        ),
    ],
)
def test_bad_requests_get_precise_messages(payload: bytes, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_infer_request(payload)


def test_datatype_must_match_the_model_exactly() -> None:
    request = parse_infer_request(
        body(x_input(datatype="FP64"), {"name": "s", "shape": [1], "datatype": "BYTES", "data": ["a"]})
    )
    with pytest.raises(InvalidArgument, match="input 'x' has datatype FP64 but model 'm' expects FP32"):
        request.model_inputs("m", SIGNATURE)
    # Names the model does not know are left for the core's validate_inputs, which lists them all.
    extra = parse_infer_request(body(x_input(), {"name": "z", "shape": [1], "datatype": "FP64", "data": [1]}))
    assert set(extra.model_inputs("m", SIGNATURE)) == {"x", "z"}


def binary_request(*tensors: tuple[dict[str, Any], bytes], **extra: Any) -> tuple[bytes, int]:
    header = json.dumps({"inputs": [t for t, _ in tensors], **extra}).encode()
    return header + b"".join(raw for _, raw in tensors), len(header)


def test_binary_inputs_follow_the_json_header() -> None:
    x = np.array([[1, 2], [3, 4]], np.float32)
    strings = np.array([b"hi", b"\x00\xff"], dtype=STRING)
    payload, length = binary_request(
        (
            {"name": "x", "shape": [2, 2], "datatype": "FP32", "parameters": {"binary_data_size": 16}},
            x.tobytes(),
        ),
        (
            {"name": "s", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 12}},
            pack_bytes(strings),
        ),
        outputs=[{"name": "y", "parameters": {"binary_data": True}}],
    )
    request = parse_infer_request(payload, length)
    np.testing.assert_array_equal(request.inputs["x"].array, x)
    assert request.inputs["s"].array.tolist() == [b"hi", b"\x00\xff"]
    assert request.binary_outputs(["y"]) == {"y"}


@pytest.mark.parametrize(
    ("cut", "length_delta", "message"),
    [
        (4, 0, "needs 16 bytes of binary data at offset 0 but the binary part of the body has only 12"),
        (0, 10**6, "Inference-Header-Content-Length is"),
        (-3, 0, "the binary part of the body has 19 bytes but the inputs' binary_data_size add up to 16"),
    ],
)
def test_binary_sizes_must_add_up(cut: int, length_delta: int, message: str) -> None:
    x = np.zeros((2, 2), np.float32)
    payload, length = binary_request(
        (
            {"name": "x", "shape": [2, 2], "datatype": "FP32", "parameters": {"binary_data_size": 16}},
            x.tobytes(),
        )
    )
    payload = payload[:-cut] if cut > 0 else payload + b"\0" * -cut
    with pytest.raises(InvalidArgument, match=message):
        parse_infer_request(payload, length + length_delta)


def test_header_length_header() -> None:
    assert parse_header_length(None) is None
    assert parse_header_length(b" 12 ") == 12
    with pytest.raises(InvalidArgument, match="must be a non-negative integer, got '-1'"):
        parse_header_length(b"-1")


def test_binary_output_choice() -> None:
    request = parse_infer_request(
        body(
            x_input(),
            outputs=[{"name": "a", "parameters": {"binary_data": False}}, {"name": "b"}],
            parameters={"binary_data_output": True},
        )
    )
    assert request.output_names == ["a", "b"]
    assert request.binary_outputs(["a", "b", "c"]) == {"b", "c"}
    assert parse_infer_request(body(x_input())).binary_outputs(["a"]) == set()


def test_json_response() -> None:
    outputs = {
        "y": np.array([[0.5], [1.25]], np.float32),
        "k": np.array([1, 2], np.int64),
        "s": np.array([b"ok", "caf\u00e9".encode()], dtype=STRING),
        "h": np.array([0.5], np.float16),
    }
    payload, length = encode_infer_response("m", 3, "req-1", outputs, ["y", "s", "k", "h"], set())
    assert length is None
    assert orjson.loads(payload) == {
        "model_name": "m",
        "model_version": "3",
        "id": "req-1",
        "outputs": [
            {"name": "y", "datatype": "FP32", "shape": [2, 1], "data": [0.5, 1.25]},
            {"name": "s", "datatype": "BYTES", "shape": [2], "data": ["ok", "caf\u00e9"]},
            {"name": "k", "datatype": "INT64", "shape": [2], "data": [1, 2]},
            {"name": "h", "datatype": "FP16", "shape": [1], "data": [0.5]},
        ],
    }
    without_id, _ = encode_infer_response("m", 3, "", outputs, ["k"], set())
    assert "id" not in orjson.loads(without_id)


def test_binary_response() -> None:
    y = np.array([[0.5], [1.25]], np.float32)
    s = np.array([b"\xff"], dtype=STRING)
    payload, length = encode_infer_response("m", 1, "", {"y": y, "s": s}, ["y", "s"], {"y", "s"})
    assert length is not None
    header = orjson.loads(payload[:length])
    assert header["outputs"][0] == {
        "name": "y",
        "datatype": "FP32",
        "shape": [2, 1],
        "parameters": {"binary_data_size": 8},
    }
    assert header["outputs"][1]["parameters"] == {"binary_data_size": 5}
    assert payload[length:] == y.tobytes() + struct.pack("<I", 1) + b"\xff"


def test_non_utf8_bytes_need_binary_output() -> None:
    with pytest.raises(InvalidArgument, match="output 's' holds bytes that are not UTF-8 text"):
        encode_infer_response("m", 1, "", {"s": np.array([b"\xff"], dtype=STRING)}, ["s"], set())
