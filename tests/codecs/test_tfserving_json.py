"""TF Serving's REST JSON codec: test vectors from tensorflow_serving/util/json_tensor_test.cc.

json_tensor_test.cc compares JSON semantically; here every response is compared byte for byte with what
RapidJSON's PrettyWriter writes for it (and, where the upstream test gives the JSON, parsed against that
too), and every error with its full TF Serving message.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from modelserve.codecs import tensor_values
from modelserve.codecs import tfserving_json as codec
from modelserve.codecs.json_numbers import float_tokens
from modelserve.codecs.rapidjson_text import json_string, value_text
from modelserve.codecs.tf_dtypes import numpy_dtype, tf_type_name, tf_type_number, tf_type_string
from modelserve.core.signature import STRING, Signature, TensorSpec
from modelserve.errors import InvalidArgument, ServingError
from modelserve.proto.tensorflow.core.example import example_pb2


def _same_json(ours: bytes, upstream: str) -> None:
    """The upstream test's expected JSON, compared as parsed values (NaN-tolerant like its CompareJson)."""
    assert json.loads(ours, parse_constant=str) == json.loads(upstream, parse_constant=str)


INT_2x3x2 = np.array([[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]], np.int32)

# -- responses ------------------------------------------------------------------------------------------------


def test_single_tensor_row_and_columnar() -> None:  # FromJsonSingleTensor
    row = codec.encode_predict_response({"int_tensor": INT_2x3x2}, row_format=True)
    assert row == b'{\n    "predictions": [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]\n    ]\n}'
    _same_json(row, '{"predictions": [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]]}')
    columnar = codec.encode_predict_response({"int_tensor": INT_2x3x2}, row_format=False)
    rows = [
        f"\n            [\n                {a},\n                {b}\n            ]"
        for a, b in INT_2x3x2.reshape(-1, 2).tolist()
    ]
    expected = (
        '{\n    "outputs": [\n        ['
        + ",".join(rows[:3])
        + "\n        ],\n        ["
        + ",".join(rows[3:])
        + "\n        ]\n    ]\n}"
    )
    assert columnar == expected.encode()


def test_single_scalar_tensor() -> None:  # FromJsonSingleScalarTensor
    tensor = {"int_tensor": np.array([1, 2, 3, 4, 5], np.int32)}
    assert codec.encode_predict_response(tensor, True) == b'{\n    "predictions": [1, 2, 3, 4, 5\n    ]\n}'
    assert codec.encode_predict_response(tensor, False) == (
        b'{\n    "outputs": [\n        1,\n        2,\n        3,\n        4,\n        5\n    ]\n}'
    )


BYTES_2x2 = np.array([[b"hello", b"world"], [b"tf", b"serving"]], dtype=object)


def test_bytes_tensor_row_format() -> None:  # FromJsonSingleBytesTensor
    out = codec.encode_predict_response({"str_tensor_bytes": BYTES_2x2}, True)
    # RapidJSON's single-line format applies to arrays only: objects always break lines.
    assert out == (
        b'{\n    "predictions": [[{\n                "b64": "aGVsbG8="\n            }, {\n'
        b'                "b64": "d29ybGQ="\n            }], [{\n                "b64": "dGY="\n'
        b'            }, {\n                "b64": "c2VydmluZw=="\n            }]\n    ]\n}'
    )
    _same_json(
        out,
        '{"predictions": [[{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}], [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}]]}',
    )


MULTIPLE = {
    "int_tensor": INT_2x3x2,
    "str_tensor": np.array([[b"foo", b"bar"], [b"baz", b"bat"]], dtype=object),
    "float_tensor": np.array([[1.0], [2.0]], np.float32),
    "double_scalar_tensor": np.array([8.0, 9.0], np.float64),
    "str_tensor_bytes": BYTES_2x2,
}


def test_multiple_named_tensors_row_format() -> None:  # FromJsonMultipleNamedTensors
    out = codec.encode_predict_response(MULTIPLE, True)
    item = (
        "\n        {\n"
        '            "double_scalar_tensor": %s,\n'
        '            "float_tensor": [%s],\n'
        '            "int_tensor": %s,\n'
        '            "str_tensor": ["%s", "%s"],\n'
        '            "str_tensor_bytes": [{\n                    "b64": "%s"\n                }, {\n'
        '                    "b64": "%s"\n                }]\n'
        "        }"
    )
    expected = (
        '{\n    "predictions": ['
        + item % ("8.0", "1.0", "[[1, 2], [3, 4], [5, 6]]", "foo", "bar", "aGVsbG8=", "d29ybGQ=")
        + ","
        + item % ("9.0", "2.0", "[[7, 8], [9, 0], [1, 2]]", "baz", "bat", "dGY=", "c2VydmluZw==")
        + "\n    ]\n}"
    )
    assert out == expected.encode()
    _same_json(
        out,
        """{"predictions": [
          {"double_scalar_tensor": 8.0, "float_tensor": [1.0], "int_tensor": [[1, 2], [3, 4], [5, 6]],
           "str_tensor": ["foo", "bar"], "str_tensor_bytes": [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}]},
          {"double_scalar_tensor": 9.0, "float_tensor": [2.0], "int_tensor": [[7, 8], [9, 0], [1, 2]],
           "str_tensor": ["baz", "bat"], "str_tensor_bytes": [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}]}]}""",
    )


def test_multiple_named_tensors_columnar() -> None:  # FromJsonMultipleNamedTensors, columnar
    out = codec.encode_predict_response(
        {"double_scalar_tensor": MULTIPLE["double_scalar_tensor"], "str_tensor_bytes": BYTES_2x2}, False
    )
    b64 = '\n                {\n                    "b64": "%s"\n                }'
    assert (
        out
        == (
            '{\n    "outputs": {\n'
            '        "double_scalar_tensor": [\n            8.0,\n            9.0\n        ],\n'
            '        "str_tensor_bytes": [\n'
            "            [" + b64 % "aGVsbG8=" + "," + b64 % "d29ybGQ=" + "\n            ],\n"
            "            [" + b64 % "dGY=" + "," + b64 % "c2VydmluZw==" + "\n            ]\n"
            "        ]\n    }\n}"
        ).encode()
    )
    _same_json(
        codec.encode_predict_response(MULTIPLE, False),
        """{"outputs": {
          "double_scalar_tensor": [8.0, 9.0],
          "float_tensor": [[1.0], [2.0]],
          "int_tensor": [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]],
          "str_tensor": [["foo", "bar"], ["baz", "bat"]],
          "str_tensor_bytes": [[{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}],
                               [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}]]}}""",
    )


@pytest.mark.parametrize(
    ("outputs", "row_format", "expected"),
    [
        # FromJsonSingleFloatTensorSixDigitPrecision / NonFinite, laid out by PrettyWriter.
        (
            {"float_tensor": np.array([[9000000, 999999, 0.5], [0.0003, 0.00003, 555557.5]], np.float32)},
            True,
            b'{\n    "predictions": [[9e+06, 999999.0, 0.5], [0.0003, 3e-05, 555557.5]\n    ]\n}',
        ),
        (
            {"float_tensor": np.array([[np.nan, np.inf], [3, -np.inf]], np.float32)},
            True,
            b'{\n    "predictions": [[NaN, Infinity], [3.0, -Infinity]\n    ]\n}',
        ),
        # FromJsonSingleZeroBatchTensor / FromJsonMultipleZeroBatchTensors.
        ({"int_tensor": np.zeros((0, 2), np.int32)}, True, b'{\n    "predictions": []\n}'),
        (
            {"str_tensor": np.zeros((0, 1, 2), object), "float_tensor": np.zeros((0, 3, 4), np.float32)},
            True,
            b'{\n    "predictions": []\n}',
        ),
        (
            {"a": np.zeros((2, 0, 3), np.float32), "b": np.array([1, 2], np.int8)},
            True,
            b'{\n    "predictions": [\n        {\n            "a": [],\n            "b": 1\n        },\n'
            b'        {\n            "a": [],\n            "b": 2\n        }\n    ]\n}',
        ),
        # Scalars, empty arrays, strings that need escaping, bools.
        ({"y": np.array(2.5, np.float32)}, False, b'{\n    "outputs": 2.5\n}'),
        ({"y": np.zeros((2, 0), np.int64)}, False, b'{\n    "outputs": [\n        [],\n        []\n    ]\n}'),
        ({"y": np.array([True, False])}, True, b'{\n    "predictions": [true, false\n    ]\n}'),
        (
            {"s": np.array(['a"\\\n\x01/\xe9'.encode()], dtype=object)},
            True,
            b'{\n    "predictions": ["a\\"\\\\\\n\\u0001/\xc3\xa9"\n    ]\n}',
        ),
        ({"s": np.array([b"\xff\xfe"], dtype=object)}, True, b'{\n    "predictions": ["\xff\xfe"\n    ]\n}'),
        (
            {"image_bytes": np.array([b"\x00\xff"], dtype=object), "n": np.array([7], np.int64)},
            False,
            b'{\n    "outputs": {\n        "image_bytes": [\n            {\n                "b64": "AP8="\n'
            b'            }\n        ],\n        "n": [\n            7\n        ]\n    }\n}',
        ),
    ],
)
def test_layouts(outputs: dict[str, np.ndarray], row_format: bool, expected: bytes) -> None:
    assert codec.encode_predict_response(outputs, row_format) == expected


def test_large_tensors_take_the_vectorised_path_with_the_same_layout() -> None:
    values = np.random.default_rng(5).random((3, 70)).astype(np.float32)
    tokens = [[float_tokens(values[i : i + 1, j : j + 1])[0] for j in range(70)] for i in range(3)]
    row = codec.encode_predict_response({"y": values}, True)
    assert (
        row
        == (
            '{\n    "predictions": [' + ", ".join("[" + ", ".join(t) + "]" for t in tokens) + "\n    ]\n}"
        ).encode()
    )
    columnar = codec.encode_predict_response({"y": values, "z": values[:, :1]}, False)
    assert json.loads(columnar)["outputs"]["y"] == json.loads(row)["predictions"]


@pytest.mark.parametrize(
    ("outputs", "row_format", "message"),
    [  # FromJsonSingleTensorErrors, FromJsonMultipleNamedTensorsErrors, ...ZeroBatchTensorsErrors
        ({}, True, "Cannot convert empty tensor map to JSON"),
        ({"tensor": np.ones(2, np.complex64)}, True, "Failed to write JSON value for tensor type: complex64"),
        ({"tensor": np.array(1, np.int32)}, True, "Tensor name: tensor has no shape information "),
        (
            {"int_tensor": np.zeros((2, 3)), "str_tensor": np.zeros((1, 3))},
            True,
            "Tensor name: str_tensor has inconsistent batch size: 1 expecting: 2",
        ),
        (
            {"int_tensor": np.zeros((0, 2)), "str_tensor": np.zeros((1, 2))},
            True,
            "Tensor name: str_tensor has inconsistent batch size: 1 expecting: 0",
        ),
    ],
)
def test_response_errors(outputs: dict[str, np.ndarray], row_format: bool, message: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        codec.encode_predict_response(outputs, row_format)
    assert raised.value.message == message


def test_error_bodies() -> None:  # MakeJsonFromTensors.StatusError
    assert codec.encode_error('Bad key: "key"') == b'{\n    "error": "Bad key: \\"key\\""\n}'
    assert codec.encode_error("Bad key: 'key'") == b'{\n    "error": "Bad key: \'key\'"\n}'
    assert codec.encode_error("tab\there \x1f") == b'{\n    "error": "tab\\there \\u001F"\n}'


def test_classification_and_regression_results() -> None:  # ClassifyRegressnResultTest
    classes = np.array([[b"car", b"bike", b"bus"]] * 2, dtype=object)
    scores = np.array([[0.2, 0.7, 0.1], [0.7, 0.1, 0.2]], np.float32)
    out = codec.encode_classify_response(classes, scores)
    assert out == (
        b'{\n    "results": [[["car", 0.2], ["bike", 0.7], ["bus", 0.1]], '
        b'[["car", 0.7], ["bike", 0.1], ["bus", 0.2]]\n    ]\n}'
    )
    assert codec.encode_classify_response(None, scores[:1, :1]) == b'{\n    "results": [[["", 0.2]]\n    ]\n}'
    assert (
        codec.encode_classify_response(classes[:1, :1], None)
        == b'{\n    "results": [[["car", 0.0]]\n    ]\n}'
    )
    regress = codec.encode_regress_response(np.array([[0.2], [0.9], [1.0]], np.float32))
    assert regress == b'{\n    "results": [0.2, 0.9, 1.0]\n}'
    non_finite = np.array([0.2, np.inf, 1.0, -np.inf, np.nan], np.float32)
    assert (
        codec.encode_regress_response(non_finite)
        == b'{\n    "results": [0.2, Infinity, 1.0, -Infinity, NaN]\n}'
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: codec.encode_regress_response(np.zeros(0, np.float32)),
            "Cannot convert empty RegressionResults to JSON",
        ),
        (
            lambda: codec.encode_regress_response(np.zeros((2, 3), np.float32)),
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got [2,3]",
        ),
        (
            lambda: codec.encode_regress_response(np.zeros(2, np.float32), num_examples=3),
            "Input batch size did not match output batch size: 3 vs. 2",
        ),
        (
            lambda: codec.encode_classify_response(None, np.zeros(3, np.float32)),
            "Expected Tensor shape: [batch_size num_classes] but got [3]",
        ),
        (
            lambda: codec.encode_classify_response(np.zeros((1, 2), object), np.zeros((1, 3), np.float32)),
            "Tensors class and score should match in dim_size(1). Got 2 vs. 3",
        ),
        (
            lambda: codec.encode_classify_response(None, np.zeros((1, 2), np.float32), num_examples=2),
            "Expected scores output batch size of 2. Got: 1",
        ),
        (
            lambda: codec.encode_classify_response(None, np.zeros((0, 2), np.float32)),
            "Cannot convert empty ClassificationResults to JSON",
        ),
    ],
)
def test_result_errors(call: Any, message: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        call()
    assert raised.value.message == message


# -- predict requests ------------------------------------------------------------------------------------------


def spec(dtype: Any, name: str = "") -> TensorSpec:
    return TensorSpec(name, np.dtype(dtype), None)


def signature(**inputs: Any) -> Signature:
    return Signature("serving_default", {name: spec(dtype, name) for name, dtype in inputs.items()}, {})


def decode(body: bytes | str, sig: Signature) -> dict[str, np.ndarray]:
    raw = body.encode() if isinstance(body, str) else body
    return codec.decode_predict_inputs(codec.parse_predict_body(raw), sig)


@pytest.mark.parametrize(
    ("body", "sig", "expected"),
    [  # json_tensor_test.cc, request side
        (
            '{"instances": [[1,2],[3,4],[5,6]]}',
            signature(default=np.int32),
            {"default": np.array([[1, 2], [3, 4], [5, 6]], np.int32)},
        ),
        (
            '{"instances": [1, 2.0, 3, 4, 5.003, 0.007, 0.0]}',
            signature(default=np.float32),
            {"default": np.array([1, 2, 3, 4, 5.003, 0.007, 0], np.float32)},
        ),
        (
            '{"instances": [1.0, 2, 3, 4, 0.662, 0, 0.0]}',
            signature(default=np.float64),
            {"default": np.array([1, 2, 3, 4, 0.662, 0, 0], np.float64)},
        ),
        (
            '{"signature_name": "predict_images", "instances": [[1,2]]}',
            signature(default=np.int32),
            {"default": np.array([[1, 2]], np.int32)},
        ),
        (
            '{"instances": [ { "b64" : "aGVsbG8=" }, { "b64": "d29ybGQ=" } ]}',
            signature(default=STRING),
            {"default": [b"hello", b"world"]},
        ),
        (
            '{"instances": [ [{ "b64" : "aGVsbG8=" }], [{ "b64": "d29ybGQ=" }] ]}',
            signature(default=STRING),
            {"default": [[b"hello"], [b"world"]]},
        ),
        (
            '{"instances": [{"default": [ [{ "b64" : "aGVsbG8=" }], [{ "b64": "d29ybGQ=" }] ]}]}',
            signature(default=STRING),
            {"default": [[[b"hello"], [b"world"]]]},
        ),
        (
            '{"inputs": {"int_tensor": [[[1,2],[3,4],[5,6]]]}}',
            signature(int_tensor=np.int32),
            {"int_tensor": np.array([[[1, 2], [3, 4], [5, 6]]], np.int32)},
        ),
        (
            '{"inputs": [[[1,2],[3,4],[5,6]]]}',
            signature(int_tensor=np.int32),
            {"int_tensor": np.array([[[1, 2], [3, 4], [5, 6]]], np.int32)},
        ),
        (
            '{"inputs": {"int_tensor": [[[1,2],[3,4],[5,6]]], "str_tensor": ["foo", "bar"], "bin_tensor": { "b64" : "aGVsbG8=" }}}',
            signature(int_tensor=np.int32, str_tensor=STRING, bin_tensor=STRING),
            {
                "int_tensor": np.array([[[1, 2], [3, 4], [5, 6]]], np.int32),
                "str_tensor": [b"foo", b"bar"],
                "bin_tensor": b"hello",
            },
        ),
        # Ours: JSON strings are UTF-8 bytes; RapidJSON's Inf spellings; uint8 wraps like TF's int_val.
        ('{"inputs": ["h\\u00e9", "\\u20ac"]}', signature(s=STRING), {"s": ["hé".encode(), "€".encode()]}),
        (
            '{"inputs": [Inf, -Inf, -Infinity, NaN]}',
            signature(x=np.float32),
            {"x": np.array([np.inf, -np.inf, -np.inf, np.nan], np.float32)},
        ),
        ('{"inputs": [300, -1]}', signature(x=np.uint8), {"x": np.array([44, 255], np.uint8)}),
        ('{"inputs": [true, false]}', signature(x=np.bool_), {"x": np.array([True, False])}),
        (
            '{"inputs": [18446744073709551615]}',
            signature(x=np.uint64),
            {"x": np.array([2**64 - 1], np.uint64)},
        ),
        ('{"inputs": 7}', signature(x=np.int64), {"x": np.array(7, np.int64)}),
        ('{"inputs": []}', signature(x=np.float32), {"x": np.zeros(0, np.float32)}),
        ('{"inputs": [[], []]}', signature(x=np.int32), {"x": np.zeros((2, 0), np.int32)}),
        (
            '{"inputs": {"a": 1, "extra": 2}}',
            signature(a=np.int32),
            {"a": np.array(1, np.int32)},
        ),  # TF ignores "extra"
        (  # the stdlib fallback spells out RapidJSON's "Inf" without touching strings
            '{"inputs": {"s": ["Info", "Inf"], "x": [Inf]}}',
            signature(s=STRING, x=np.float32),
            {"s": [b"Info", b"Inf"], "x": np.array([np.inf], np.float32)},
        ),
        (
            b'{"inputs": ["\xff\xfe"]}',
            signature(s=STRING),
            {"s": [b"\xff\xfe"]},
        ),  # invalid UTF-8 passes through
        ('{"inputs": [{"b64": "aGVsbG8"}]}', signature(s=STRING), {"s": [b"hello"]}),  # padding is optional
    ],
)
def test_decode(body: str, sig: Signature, expected: dict[str, Any]) -> None:
    tensors = decode(body, sig)
    assert tensors.keys() == expected.keys()
    for name, want in expected.items():
        got = tensors[name]
        assert got.dtype == sig.inputs[name].dtype
        if sig.inputs[name].dtype == STRING:
            assert got.tolist() == want
        else:
            np.testing.assert_array_equal(got, want)


def test_decode_several_named_tensors_with_nan() -> None:  # MultipleNamedTensor
    sig = signature(int_tensor=np.int32, str_tensor=STRING, float_tensor=np.float32, dbl_tensor=np.float64)
    tensors = decode(
        """{"instances": [
            {"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"], "float_tensor": [1.0, NaN], "dbl_tensor": [NaN]},
            {"int_tensor": [[7,8],[9,0],[1,2]], "str_tensor": ["baz", "bat"], "float_tensor": [2.0, Infinity], "dbl_tensor": [2.0]}
        ]}""",
        sig,
    )
    np.testing.assert_array_equal(tensors["int_tensor"], INT_2x3x2)
    assert tensors["str_tensor"].tolist() == [[b"foo", b"bar"], [b"baz", b"bat"]]
    np.testing.assert_array_equal(tensors["float_tensor"], np.array([[1, np.nan], [2, np.inf]], np.float32))
    np.testing.assert_array_equal(tensors["dbl_tensor"], np.array([[np.nan], [2.0]]))


TWO = signature(int_tensor=np.int32, str_tensor=STRING)
BOOK = {"signature_name": 5, "instances": [[1, 2], [3, 4], [5, 6, 7]]}


@pytest.mark.parametrize(
    ("body", "sig", "message"),
    [  # SingleUnnamedTensorErrors, MultipleNamedTensorErrors, and the rest of FillPredictRequestFromJson
        ("", signature(x=np.int32), "JSON Parse error: The document is empty"),
        ("  ", signature(x=np.int32), "JSON Parse error: The document is empty. at offset: 2"),
        ("instances = [1, 2]", signature(x=np.int32), "JSON Parse error: Invalid value. at offset: 0"),
        (
            '{"instances": [1 2]}',
            signature(x=np.int32),
            "JSON Parse error: Missing a comma or ']' after an array element. at offset: 17",
        ),
        (
            '{"instances": [1]} x',
            signature(x=np.int32),
            "JSON Parse error: The document root must not be followed by other values. at offset: 19",
        ),
        (
            '{"instances" [1]}',
            signature(x=np.int32),
            "JSON Parse error: Missing a colon after a name of object member. at offset: 13",
        ),
        (
            '{"inputs": [Inf 2]}',
            signature(x=np.float32),
            "JSON Parse error: Missing a comma or ']' after an array element. at offset: 16",
        ),
        ("[1]", signature(x=np.int32), "JSON Value: [\n    1\n] Is not object"),
        (
            json.dumps(BOOK),
            signature(x=np.int32),
            "JSON Value: "
            + value_text(BOOK)
            + " not formatted correctly. 'signature_name' key must be a string value.",
        ),
        (
            '{"instances": [1], "inputs": [1]}',
            signature(x=np.int32),
            'JSON Value: {\n    "instances": [\n        1\n    ],\n    "inputs": [\n        1\n    ]\n} '
            "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ",
        ),
        (
            '{"instances": 1}',
            signature(x=np.int32),
            "JSON Value: {\n    \"instances\": 1\n} Excepting 'instances' to be an list/array",
        ),
        (
            '{"instances": []}',
            signature(x=np.int32),
            "JSON Value: {\n    \"instances\": []\n} No values in 'instances' array",
        ),
        ('{"foo": 1}', signature(x=np.int32), "Missing 'inputs' or 'instances' key"),
        ('{"instances": [1]}', Signature("s", {}, {}), "Failed to get input map for signature: DEFAULT"),
        (
            '{"instances": [[1,2],[3,4],[5,6,7]]}',
            signature(x=np.int32),
            "Failed to process element: 2 of 'instances' list. Error: INVALID_ARGUMENT: Expecting tensor size: 2 but got: 3",
        ),
        (
            '{"instances": [[1,2],[3,4],[[5,6]]]}',
            signature(x=np.int32),
            "Failed to process element: 2 of 'instances' list. Error: INVALID_ARGUMENT: Expecting shape [2] but got: [1,2]",
        ),
        (
            '{"instances": [1, [1]]}',
            signature(x=np.int32),
            "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: Expecting shape [] but got: [1]",
        ),
        (
            '{"instances": [[1,2],["a", "b"]]}',
            signature(x=np.int32),
            "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: \"a\" Type: String "
            "is not of expected type: int32",
        ),
        (
            '{"instances": [1.79769e+308]}',
            signature(x=np.float32),
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            "Cannot convert JSON value: 1.79769e+308 to float without loss of precision.",
        ),
        (
            '{"instances": [16777217]}',
            signature(x=np.float32),
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            "Cannot convert JSON value: 16777217 to float without loss of precision.",
        ),
        (
            '{"instances": [9007199254740993]}',
            signature(x=np.float64),
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            "Cannot convert JSON value: 9007199254740993 to double without loss of precision.",
        ),
        (
            '{"instances": [{"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"]},'
            ' {"int_tensor": [[[7,8],[9,0],[1,2]]], "str_tensor": ["baz", "bat"]}]}',
            TWO,
            "Failed to process element: 1 key: int_tensor of 'instances' list. Error: INVALID_ARGUMENT: "
            "Expecting shape [3,2] but got: [1,3,2]",
        ),
        (
            '{"instances": [{"int_tensor": [[1,2],[3,4],[5,6],[7,8]], "str_tensor": ["foo", "bar"]},'
            ' {"int_tensor": [[7,8],[9,0],[1,2]], "str_tensor": ["baz", "bat"]}]}',
            TWO,
            "Failed to process element: 1 key: int_tensor of 'instances' list. Error: INVALID_ARGUMENT: "
            "Expecting tensor size: 8 but got: 6",
        ),
        (
            '{"instances": [{"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"]}, [1, 20, 30]]}',
            TWO,
            "Expecting object but got list at item 1 of input list",
        ),
        (
            '{"instances": [["baz", "bar"], {"str_tensor": ["baz", "bat"]}]}',
            signature(str_tensor=STRING),
            "Expecting value/list but got object at item 1 of input list",
        ),
        (
            '{"instances": [1, 2]}',
            TWO,
            "instances is a plain list, but expecting list of objects as multiple input tensors required as per "
            "tensorinfo_map",
        ),
        (
            '{"inputs": [1, 2]}',
            TWO,
            "inputs is a plain value/list, but expecting an object as multiple input tensors required as per "
            "tensorinfo_map",
        ),
        ('{"inputs": {"int_tensor": [1]}}', TWO, "Missing named input: str_tensor in 'inputs' object."),
        (
            '{"instances": [{"int_tensor": [1, 2]}]}',
            TWO,
            "Failed to process element: 0 of 'instances' list. JSON object: "
            '{\n    "int_tensor": [\n        1,\n        2\n    ]\n} keys must be equal to: int_tensor,str_tensor',
        ),
        (
            '{"instances": [{"int_tensor": [1, 2], "str_tensor": "a", "extra": 1}]}',
            TWO,
            "Failed to process element: 0 key: extra of 'instances' list. Error: INVALID_ARGUMENT: "
            "JSON object: does not have named input: extra",
        ),
        (
            '{"instances": [{"int_tensor": [1, 2], "str_tensor": {"b64": "***"}}]}',
            TWO,
            "Failed to process element: 0 key: str_tensor of 'instances' list. Error: INVALID_ARGUMENT: "
            "Unable to base64 decode",
        ),
        (
            '{"inputs": [{"b64": 5}]}',
            signature(s=STRING),
            'JSON Value: {\n    "b64": 5\n} not formatted correctly for base64 data',
        ),
        (
            '{"inputs": [1]}',
            signature(s=STRING),
            "JSON Value: 1 Type: Number is not of expected type: string",
        ),
        (
            '{"inputs": [1.5]}',
            signature(x=np.int64),
            "JSON Value: 1.5 Type: Number is not of expected type: int64",
        ),
        (
            '{"inputs": [0.1]}',
            signature(x=np.int64),
            "JSON Value: 0.1 Type: Number is not of expected type: int64",
        ),
        (
            '{"inputs": [1, true]}',
            signature(x=np.int64),
            "JSON Value: true Type: True is not of expected type: int64",
        ),
        (
            '{"inputs": [1.0, false]}',
            signature(x=np.float32),
            "JSON Value: false Type: False is not of expected type: float",
        ),
        (
            '{"inputs": [1, null]}',
            signature(x=np.float32),
            "JSON Value: null Type: Null is not of expected type: float",
        ),
        (
            '{"inputs": [2147483648]}',
            signature(x=np.int32),
            "JSON Value: 2147483648 Type: Number is not of expected type: int32",
        ),
        (
            '{"inputs": [-1]}',
            signature(x=np.uint32),
            "JSON Value: -1 Type: Number is not of expected type: uint32",
        ),
        (
            '{"inputs": [1]}',
            signature(x=np.bool_),
            "JSON Value: 1 Type: Number is not of expected type: bool",
        ),
        (
            '{"inputs": [NaN]}',
            signature(x=np.int32),
            "JSON Value: NaN Type: Number is not of expected type: int32",
        ),
        (
            '{"inputs": [{"b64": "AA=="}]}',
            signature(x=np.float32),
            'JSON Value: {\n    "b64": "AA=="\n} Type: Object is not of expected type: float',
        ),
        (
            '{"inputs": [[1, 2], [3]]}',
            signature(x=np.int64),
            "Encountered list at unexpected size: 1 at level: 1 expected size: 2",
        ),
        (
            '{"inputs": [[1, 2], 3]}',
            signature(x=np.int64),
            "JSON Value: 3 found at incorrect level: 2 in the JSON DOM. Expected at level: 2",
        ),
        (
            '{"inputs": [1, [2]]}',
            signature(x=np.int64),
            "Encountered list at unexpected level: 1 expected < 1",
        ),
        (
            '{"instances": [1.5, true]}',
            signature(x=np.float32),
            "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
            "JSON Value: true Type: True is not of expected type: float",
        ),
    ],
)
def test_decode_errors(body: str, sig: Signature, message: str) -> None:
    with pytest.raises(ServingError) as raised:
        decode(body, sig)
    assert raised.value.message == message
    assert isinstance(raised.value, InvalidArgument)


def test_unsupported_input_dtype_is_unimplemented_inside_the_invalid_argument() -> None:
    with pytest.raises(InvalidArgument) as raised:
        decode('{"instances": [1]}', signature(x=np.complex64))
    assert raised.value.message == (
        "Failed to process element: 0 of 'instances' list. Error: UNIMPLEMENTED: "
        "Conversion of JSON Value: 1 to type: complex64"
    )


def test_structural_errors_wait_for_the_signature() -> None:
    # TF Serving resolves model and signature before it looks at "instances"/"inputs".
    body = codec.parse_predict_body(b'{"instances": [1], "inputs": [1]}')
    assert body.problem is not None
    with pytest.raises(InvalidArgument):
        codec.decode_predict_inputs(body, signature(x=np.int32))
    assert codec.parse_predict_body(b'{"signature_name": "s", "inputs": [1]}').signature_name == "s"
    # Bodies without true/false let numeric inputs skip the per-element bool check.
    assert not codec.parse_predict_body(b'{"instances": [1.5, 2]}').may_have_bools
    assert codec.parse_predict_body(b'{"instances": [1.5, true]}').may_have_bools


VALID = [
    ([[1, 2], [3, 4]], np.int32),
    ([[1, 2.5], [3, 4]], np.float32),
    ([[16777215, -16777215]], np.float32),
    ([[1e30, 1.5]], np.float32),  # fractions beyond the integer limit: exact path decides, same answer
    ([9007199254740991], np.float64),
    ([300, -200], np.uint8),
    ([2**63], np.uint64),
    ([True, False], np.bool_),
    ([[float("nan"), 1.0]], np.float16),
    ([1, 2], np.uint16),
]
INVALID = [
    ([1, 2.5], np.int32),
    ([[1, 2], [3]], np.float32),
    ([16777216], np.float32),
    ([1e39], np.float32),
    ([2**63], np.int64),
    ([-1], np.uint64),
    ([1, 0], np.bool_),
    (["a"], np.float32),
    ([None], np.float64),
    ([70000], np.uint16),
]


@pytest.mark.parametrize(("value", "dtype"), VALID)
def test_fast_and_exact_paths_agree(value: Any, dtype: Any) -> None:
    dtype = np.dtype(dtype)
    exact = tensor_values.exact_tensor(value, dtype)
    fast = tensor_values.fast_tensor(value, dtype)
    if fast is not None:
        assert fast.dtype == exact.dtype and fast.shape == exact.shape
        np.testing.assert_array_equal(fast, exact)
    np.testing.assert_array_equal(tensor_values.to_tensor(value, dtype, may_have_bools=False), exact)


@pytest.mark.parametrize(("value", "dtype"), INVALID)
def test_fast_path_never_accepts_what_tf_serving_rejects(value: Any, dtype: Any) -> None:
    dtype = np.dtype(dtype)
    assert tensor_values.fast_tensor(value, dtype) is None
    with pytest.raises(InvalidArgument):
        tensor_values.exact_tensor(value, dtype)


# -- classify / regress requests -------------------------------------------------------------------------------


def _features(serialized: bytes) -> dict[str, tuple[str, list[Any]]]:
    example = example_pb2.Example.FromString(serialized)
    out = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        out[name] = (kind, list(getattr(feature, kind).value) if kind else [])
    return out


def test_examples_without_context() -> None:  # ClassifyRegressRequestTest.RequestNoContext
    body = codec.parse_classify_regress_body(
        b'{"examples": [{"names": [ "foo", "bar" ], "ratings": [ 8.0, 9.0 ], "age": 20},'
        b' {"names": [ "baz" ], "ratings": 6.0, "empty": []}]}'
    )
    tensor = codec.examples_to_tensor(body)
    assert tensor.dtype == object and tensor.shape == (2,)
    assert _features(tensor[0]) == {
        "names": ("bytes_list", [b"foo", b"bar"]),
        "ratings": ("float_list", [8.0, 9.0]),
        "age": ("int64_list", [20]),
    }
    assert _features(tensor[1]) == {
        "names": ("bytes_list", [b"baz"]),
        "ratings": ("float_list", [6.0]),
        "empty": (None, []),
    }


def test_examples_with_context_are_concatenated_protos() -> None:  # RequestWithContextAndSignature
    body = codec.parse_classify_regress_body(
        b"""{"signature_name": "custom_signture",
             "context": {"query": "pizza", "location": [ "sfo" ]},
             "examples": [
               {"names": [ "foo", "bar" ], "ratings": [ 8.0, 9.0, NaN, Infinity ], "age": 20},
               {"names": [ "baz", { "b64": "aGVsbG8=" } ], "ratings": 6.0, "intboolmix": [ 1, true, false ]},
               {"names": "bar", "ratings": -Infinity}]}"""
    )
    assert body.signature_name == "custom_signture"
    context = codec.parse_classify_regress_body(b'{"examples": [{"query": "pizza", "location": ["sfo"]}]}')
    tensor = codec.examples_to_tensor(body)
    for serialized in tensor:
        assert serialized.startswith(context.serialized[0])  # TF Serving feeds context + example bytes
    features = _features(tensor[1])
    assert features["query"] == ("bytes_list", [b"pizza"])
    assert features["names"] == ("bytes_list", [b"baz", b"hello"])
    assert features["intboolmix"] == ("int64_list", [1, 1, 0])
    ratings = _features(tensor[0])["ratings"][1]
    assert ratings[:2] == [8.0, 9.0] and np.isnan(ratings[2]) and ratings[3] == np.inf


@pytest.mark.parametrize(
    ("body", "message"),
    [  # ClassifyRegressRequestTest.JsonErrors, and the document-level checks
        (
            '{"signature_name": [ "hello" ], "examples": [ { "names": [ "foo", "bar" ] } ]}',
            "JSON Value: "
            + value_text({"signature_name": ["hello"], "examples": [{"names": ["foo", "bar"]}]})
            + " not formatted correctly. 'signature_name' key must be a string value.",
        ),
        ('{"context": [ { "names": [ "foo", "bar" ] } ]}', "Example must be JSON object but got JSON Array"),
        (
            '{"examples": { "names": [ "foo", "bar" ] } }',
            "JSON Value: "
            + value_text({"examples": {"names": ["foo", "bar"]}})
            + " Expecting 'examples' value to be an list/array",
        ),
        (
            '{"examples": [ [ { "names": [ "foo", "bar" ] } ] ]}',
            "Example must be JSON object but got JSON Array",
        ),
        (
            '{"examples": [ { "names": [ 10, null ] } ]}',
            "Feature: names has element with unexpected JSON type: Null",
        ),
        (
            '{"examples": [ { "names": [ 10, 10.0 ] } ]}',
            "Unexpected element type in feature: names expecting type: int64",
        ),
        (
            '{"examples": [ { "names": [ "a", 1 ] } ]}',
            "Unexpected element type in feature: names expecting type: bytes",
        ),
        (
            '{"examples": [ { "names": [ 10, { "test": 10 } ] } ]}',
            "Feature: names has element with unexpected JSON type: Object",
        ),
        (
            '{"examples": [ { "names": [ [10], 20 ] } ]}',
            "Feature: names has element with unexpected JSON type: Array",
        ),
        (
            '{"examples": [ { "names": [ 20, 18446744073709551603 ] } ]}',
            "Feature: names has uint64 element. Only int64 is supported.",
        ),
        (
            '{ "examples": [ { "names": 1.79769e+308 } ] }',
            "Cannot convert JSON value: 1.79769e+308 to float without loss of precision.",
        ),
        ('{"examples": [ { "names": { "b64": "%%%" } } ]}', "Unable to base64 decode"),
        (
            '{"foo": 1}',
            "JSON Value: {\n    \"foo\": 1\n} When method is classify, key 'examples' is expected and was not found",
        ),
        ('{"examples": []}', "JSON Value: {\n    \"examples\": []\n} 'examples' value is an empty array"),
    ],
)
def test_example_errors(body: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        codec.parse_classify_regress_body(body.encode())
    assert raised.value.message == message


# -- helpers the messages rely on ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [  # JsonValueToString: lone numbers via WriteDecimal (as float when they fit), the rest via PrettyWriter
        (0.1, "0.1"),
        (1.23456789, "1.23456788"),  # read back as a float, like RapidJSON's IsFloat/GetFloat
        (1e39, "1e+39"),
        (float("nan"), "NaN"),
        (12, "12"),
        ("a\u00e9", '"a\u00e9"'),
        ([], "[]"),
        ({}, "{}"),
        (
            {"a": [1, 0.5, 1e21, 1e-7, 123456789012345680000.0]},
            '{\n    "a": [\n        1,\n        0.5,\n        1e21,\n        1e-7,\n        123456789012345680000.0\n    ]\n}',
        ),
        ([1, float("nan"), 2], "[\n    1,\n    "),  # RapidJSON's writer stops at NaN inside a container
    ],
)
def test_value_text(value: Any, expected: str) -> None:
    assert value_text(value) == expected


def test_json_string_escapes_like_rapidjson() -> None:
    assert json_string("\x00\x1f\x7f\u2028") == b'"\\u0000\\u001F\x7f\xe2\x80\xa8"'
    assert json_string(b"\\u00ab") == b'"\\\\u00ab"'  # a literal backslash-u is not an escape to upper-case
    assert json_string(b'\xff"') == b'"\xff\\""'


@pytest.mark.parametrize(
    ("dtype", "name", "number", "short"),
    [
        (np.float32, "DT_FLOAT", 1, "float"),
        (np.float64, "DT_DOUBLE", 2, "double"),
        (np.int32, "DT_INT32", 3, "int32"),
        (np.uint8, "DT_UINT8", 4, "uint8"),
        (STRING, "DT_STRING", 7, "string"),
        (np.complex64, "DT_COMPLEX64", 8, "complex64"),
        (np.int64, "DT_INT64", 9, "int64"),
        (np.bool_, "DT_BOOL", 10, "bool"),
        (np.uint16, "DT_UINT16", 17, "uint16"),
        (np.float16, "DT_HALF", 19, "half"),
        (np.uint32, "DT_UINT32", 22, "uint32"),
        (np.uint64, "DT_UINT64", 23, "uint64"),
    ],
)
def test_tf_dtypes(dtype: Any, name: str, number: int, short: str) -> None:
    assert tf_type_name(np.dtype(dtype)) == name
    assert tf_type_number(np.dtype(dtype)) == number
    assert tf_type_string(np.dtype(dtype)) == short
    assert numpy_dtype(name) == np.dtype(dtype) == numpy_dtype(number)
    assert numpy_dtype("DT_BFLOAT16") is None and tf_type_name(np.dtype("datetime64[s]")) == "DT_INVALID"
