"""V2 gRPC messages <-> numpy: typed contents, raw contents, responses and metadata."""

from __future__ import annotations

import numpy as np
import pytest

from modelserve.codecs.v2_binary import pack_bytes
from modelserve.codecs.v2_metadata import model_metadata, parse_version
from modelserve.codecs.v2_proto import encode_infer_response, model_metadata_message, parse_infer_request
from modelserve.core.signature import STRING, Signature, TensorSpec
from modelserve.errors import InvalidArgument
from modelserve.proto.inference import grpc_service_pb2 as pb


def request_with(
    *inputs: pb.ModelInferRequest.InferInputTensor, raw: list[bytes] | None = None
) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name="m", id="i", inputs=list(inputs))
    message.raw_input_contents.extend(raw or [])
    return message


@pytest.mark.parametrize(
    ("datatype", "field", "values", "dtype"),
    [
        ("BOOL", "bool_contents", [True, False], np.bool_),
        ("INT8", "int_contents", [-1, 2], np.int8),
        ("INT32", "int_contents", [-1, 2], np.int32),
        ("INT64", "int64_contents", [-(2**40), 2], np.int64),
        ("UINT16", "uint_contents", [1, 65535], np.uint16),
        ("UINT64", "uint64_contents", [1, 2**64 - 1], np.uint64),
        ("FP32", "fp32_contents", [0.5, -1.5], np.float32),
        ("FP64", "fp64_contents", [0.1, 2], np.float64),
    ],
)
def test_typed_contents(datatype: str, field: str, values: list[object], dtype: type) -> None:
    tensor = pb.ModelInferRequest.InferInputTensor(name="t", datatype=datatype, shape=[2, 1])
    getattr(tensor.contents, field).extend(values)
    request = parse_infer_request(request_with(tensor))
    array = request.inputs["t"].array
    assert array.dtype == np.dtype(dtype) and array.shape == (2, 1)
    np.testing.assert_array_equal(array.ravel(), np.array(values, dtype=dtype))
    assert request.id == "i"


def test_bytes_contents_and_raw_contents() -> None:
    tensor = pb.ModelInferRequest.InferInputTensor(name="s", datatype="BYTES", shape=[2])
    tensor.contents.bytes_contents.extend([b"a", b"\xff"])
    assert parse_infer_request(request_with(tensor)).inputs["s"].array.tolist() == [b"a", b"\xff"]
    x = np.arange(4, dtype=np.float16).reshape(2, 2)
    raw = request_with(
        pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP16", shape=[2, 2]),
        pb.ModelInferRequest.InferInputTensor(name="s", datatype="BYTES", shape=[1]),
        raw=[x.tobytes(), pack_bytes(np.array([b"zz"], dtype=STRING))],
    )
    decoded = parse_infer_request(raw)
    np.testing.assert_array_equal(decoded.inputs["x"].array, x)
    assert decoded.inputs["s"].array.tolist() == [b"zz"]


def test_bad_messages() -> None:
    fp16 = pb.ModelInferRequest.InferInputTensor(name="h", datatype="FP16", shape=[1])
    with pytest.raises(InvalidArgument, match="FP16 data must be sent in raw_input_contents"):
        parse_infer_request(request_with(fp16))
    short = pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[3])
    short.contents.fp32_contents.extend([1.0])
    with pytest.raises(
        InvalidArgument, match=r"has 1 values in contents.fp32_contents but shape \[3\] needs 3"
    ):
        parse_infer_request(request_with(short))
    with pytest.raises(
        InvalidArgument, match="raw_input_contents has 2 entries but the request has 1 inputs"
    ):
        parse_infer_request(request_with(fp16, raw=[b"", b""]))
    with pytest.raises(InvalidArgument, match="unsupported datatype 'STRING'"):
        parse_infer_request(request_with(pb.ModelInferRequest.InferInputTensor(name="x", datatype="STRING")))
    overflow = pb.ModelInferRequest.InferInputTensor(name="b", datatype="INT8", shape=[1])
    overflow.contents.int_contents.append(1000)
    with pytest.raises(InvalidArgument, match="out of the range of INT8"):
        parse_infer_request(request_with(overflow))
    with pytest.raises(InvalidArgument, match="no inputs"):
        parse_infer_request(request_with())


def test_response_uses_raw_output_contents() -> None:
    y = np.array([[1.5, 2.5]], np.float32)
    s = np.array(["ab"])  # numpy strings go out as BYTES
    response = encode_infer_response("m", 2, "id7", {"y": y, "s": s}, ["s", "y"])
    assert (response.model_name, response.model_version, response.id) == ("m", "2", "id7")
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("s", "BYTES", [1]),
        ("y", "FP32", [1, 2]),
    ]
    assert list(response.raw_output_contents) == [b"\x02\x00\x00\x00ab", y.tobytes()]


def test_metadata_message_and_versions() -> None:
    signature = Signature(
        "serving_default",
        inputs={"x": TensorSpec("x", np.dtype(np.float32), (None, 4))},
        outputs={"y": TensorSpec("y", np.dtype(np.int64), None)},
    )
    metadata = model_metadata("m", ["2", "1"], "tensorflow", signature)
    assert metadata["platform"] == "tensorflow_savedmodel"
    assert metadata["outputs"] == [{"name": "y", "datatype": "INT64", "shape": [-1]}]
    message = model_metadata_message(metadata)
    assert list(message.versions) == ["2", "1"]
    assert list(message.inputs[0].shape) == [-1, 4]
    assert parse_version("") is None and parse_version("12") == 12
    assert parse_version("canary") == "canary"  # version labels and A/B splits
    with pytest.raises(InvalidArgument, match="invalid model version 'a/b'"):
        parse_version("a/b")
    with pytest.raises(InvalidArgument, match="too large"):
        parse_version("9" * 30)
