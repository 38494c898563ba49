"""TF Serving's JSON rules (util/json_tensor.cc): number formatting, layouts, decoding and its errors."""

from __future__ import annotations

import numpy as np
import pytest

from modelserve.codecs import tfserving_json as codec
from modelserve.core.signature import STRING, Signature, TensorSpec
from modelserve.errors import InvalidArgument


@pytest.mark.parametrize(
    ("value", "dtype", "expected"),
    [
        (0.2, np.float32, "0.2"),  # %g round-trips: no float->double noise digits
        (3.0, np.float32, "3.0"),  # whole numbers get ".0"
        (-0.0, np.float32, "-0.0"),
        (9000000.0, np.float32, "9e+06"),  # %g exponent form keeps no ".0"
        (0.00003, np.float32, "3e-05"),
        (123456789.0, np.float32, "123456792.0"),  # %g loses digits: %.9g, then ".0"
        (0.1234567, np.float32, "0.123456702"),
        (1.0 / 3.0, np.float64, "0.33333333333333331"),  # doubles fall back to %.17g
        (0.1, np.float64, "0.1"),
        (0.1, np.float16, "0.0999755859"),  # halves are written as floats
        (float("nan"), np.float32, "NaN"),
        (float("inf"), np.float32, "Infinity"),
        (float("-inf"), np.float64, "-Infinity"),
    ],
)
def test_float_formatting(value: float, dtype: type, expected: str) -> None:
    assert codec.format_floats(np.array([value], dtype=dtype)) == [expected]


def test_row_layout_single_output() -> None:
    y = np.array([[1.0, 2.5], [3.0, 4.0]], np.float32)
    assert codec.encode_predict_response({"y": y}, row_format=True) == (
        b'{\n    "predictions": [[1.0, 2.5], [3.0, 4.0]\n    ]\n}'
    )


def test_row_layout_several_outputs_in_name_order() -> None:
    outputs = {"scores": np.array([[0.5]], np.float32), "labels": np.array([b"cat"], dtype=object)}
    assert codec.encode_predict_response(outputs, row_format=True) == (
        b'{\n    "predictions": [\n        {\n            "labels": "cat",\n'
        b'            "scores": [0.5]\n        }\n    ]\n}'
    )


def test_columnar_layout_and_bytes_outputs() -> None:
    outputs = {"image_bytes": np.array([b"\x00\xff"], dtype=object), "n": np.array([7], np.int64)}
    assert codec.encode_predict_response(outputs, row_format=False) == (
        b'{\n    "outputs": {\n        "image_bytes": [\n            {"b64": "AP8="}\n        ],\n'
        b'        "n": [\n            7\n        ]\n    }\n}'
    )


def test_bools_and_ints() -> None:
    out = codec.encode_predict_response({"b": np.array([True, False])}, row_format=True)
    assert out == b'{\n    "predictions": [true, false\n    ]\n}'


def test_inconsistent_batch_in_row_format() -> None:
    with pytest.raises(InvalidArgument, match="inconsistent batch size"):
        codec.encode_predict_response({"a": np.zeros((2, 1)), "b": np.zeros((3, 1))}, row_format=True)


def test_error_body() -> None:
    assert codec.encode_error('bad "x"\n') == b'{\n    "error": "bad \\"x\\"\\n"\n}'


SIG = Signature(
    "serving_default",
    inputs={
        "x": TensorSpec("x", np.dtype(np.float32), (None, 2)),
        "s": TensorSpec("s", STRING, (None,)),
    },
    outputs={},
)
ONE = Signature("serving_default", inputs={"n": TensorSpec("n", np.dtype(np.int64), (None,))}, outputs={})


def decode(body: bytes, signature: Signature = SIG) -> dict[str, np.ndarray]:
    return codec.decode_predict_inputs(codec.parse_predict_body(body), signature)


def test_decode_row_objects_and_b64() -> None:
    tensors = decode(b'{"instances": [{"x": [1, 2], "s": "a"}, {"x": [3.5, 4], "s": {"b64": "AP8="}}]}')
    np.testing.assert_array_equal(tensors["x"], np.array([[1, 2], [3.5, 4]], np.float32))
    assert tensors["x"].dtype == np.float32
    assert tensors["s"].tolist() == [b"a", b"\x00\xff"]


def test_decode_columnar_and_nan() -> None:
    tensors = decode(b'{"inputs": {"x": [[NaN, Infinity]], "s": ["q"]}}')
    assert np.isnan(tensors["x"][0, 0]) and np.isinf(tensors["x"][0, 1])


def test_decode_unnamed_single_input() -> None:
    assert decode(b'{"instances": [1, 2, 3]}', ONE)["n"].tolist() == [1, 2, 3]
    assert decode(b'{"inputs": [4]}', ONE)["n"].dtype == np.int64


@pytest.mark.parametrize(
    ("body", "signature", "message"),
    [
        (b"", ONE, "The document is empty"),
        (b"[1]", ONE, "Is not object"),
        (b'{"signature_name": 3, "instances": [1]}', ONE, "'signature_name' key must be a string value"),
        (b'{"foo": 1}', ONE, "Missing 'inputs' or 'instances' key"),
        (b'{"instances": 1}', ONE, "Excepting 'instances' to be an list/array"),
        (b'{"instances": []}', ONE, "No values in 'instances' array"),
        (b'{"instances": [1.5]}', ONE, "JSON Value: 1.5 Type: Number is not of expected type: int64"),
        (b'{"instances": [true]}', ONE, "Type: True is not of expected type: int64"),
        (b'{"instances": [[1, 2], [3]]}', ONE, "Failed to process element: 1 of 'instances' list"),
        (b'{"instances": [1, 2]}', SIG, "expecting list of objects as multiple input tensors"),
        (b'{"instances": [{"x": [1, 2]}]}', SIG, "keys must be equal to: s,x"),
        (b'{"inputs": {"x": [[1, 2]]}}', SIG, "Missing named input: s in 'inputs' object."),
        (b'{"instances": [{"x": [1, 2], "s": {"b64": "***"}}]}', SIG, "Unable to base64 decode"),
        (b'{"instances": [{"x": [1, 2], "s": 5}]}', SIG, "is not of expected type: string"),
    ],
)
def test_decode_errors(body: bytes, signature: Signature, message: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        decode(body, signature)
    assert message in raised.value.message
