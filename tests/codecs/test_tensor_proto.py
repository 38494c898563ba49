"""numpy <-> TensorProto: every dtype both ways, both value forms, TF's broadcast, precise errors.

Where TensorFlow is installed, its own ``make_tensor_proto`` / ``make_ndarray`` check that our bytes are
what TensorFlow writes and reads.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from modelserve.codecs.tensor_proto import TensorProto, decode_tensor, encode_tensor
from modelserve.codecs.tf_dtypes import tf_type_number
from modelserve.core.signature import STRING
from modelserve.errors import InvalidArgument

NUMERIC = [
    np.float16, np.float32, np.float64,
    np.int8, np.int16, np.int32, np.int64,
    np.uint8, np.uint16, np.uint32, np.uint64,
    np.bool_,
]  # fmt: skip


def sample(dtype: Any, shape: tuple[int, ...] = (2, 3)) -> np.ndarray:
    count = int(np.prod(shape))
    if dtype is np.bool_:
        return (np.arange(count) % 3 == 0).reshape(shape)
    info = np.finfo(dtype) if np.dtype(dtype).kind == "f" else np.iinfo(dtype)
    values = np.linspace(0, 1, count) * float(info.max) / 2 + (float(info.min) / 4 if info.min else 0)
    return values.astype(dtype).reshape(shape)


def strings(shape: tuple[int, ...] = (2, 2)) -> np.ndarray:
    array = np.empty(int(np.prod(shape)), dtype=object)
    array[:] = [b"", b"a", b"\x00\xff binary", "é".encode()][: array.size]
    return array.reshape(shape)


def typed(dtype: Any, field: str, values: list[Any], shape: tuple[int, ...]) -> TensorProto:
    proto = TensorProto(dtype=tf_type_number(np.dtype(dtype)))
    for size in shape:
        proto.tensor_shape.dim.add().size = size
    getattr(proto, field).extend(values)
    return proto


def wire(proto: TensorProto) -> TensorProto:
    return TensorProto.FromString(proto.SerializeToString())


@pytest.mark.parametrize("dtype", NUMERIC)
@pytest.mark.parametrize("shape", [(2, 3), (), (0, 4), (5,)])
def test_numeric_round_trip_through_tensor_content(dtype: Any, shape: tuple[int, ...]) -> None:
    array = sample(dtype, shape)
    proto = wire(encode_tensor(array))
    assert proto.dtype == tf_type_number(array.dtype)
    assert [d.size for d in proto.tensor_shape.dim] == list(shape)
    assert len(proto.tensor_content) == array.nbytes
    decoded = decode_tensor(proto)
    assert decoded.dtype == array.dtype
    assert decoded.shape == shape
    np.testing.assert_array_equal(decoded, array)


def test_string_round_trip_through_string_val() -> None:
    array = strings()
    proto = wire(encode_tensor(array))
    assert list(proto.string_val) == array.reshape(-1).tolist()
    assert not proto.tensor_content
    decoded = decode_tensor(proto)
    assert decoded.dtype == STRING
    assert decoded.tolist() == array.tolist()


def test_numpy_text_arrays_are_encoded_as_strings() -> None:
    proto = encode_tensor(np.array(["ab", "c"]))
    assert list(proto.string_val) == [b"ab", b"c"]


@pytest.mark.parametrize(
    ("dtype", "field", "values"),
    [
        (np.float32, "float_val", [1.5, -2.0, 3.25, 0.0]),
        (np.float64, "double_val", [1e300, -2.0, 3.25, 0.0]),
        (np.int32, "int_val", [1, -2, 2**31 - 1, -(2**31)]),
        (np.int16, "int_val", [1, -2, 32767, -32768]),
        (np.int8, "int_val", [1, -2, 127, -128]),
        (np.uint8, "int_val", [0, 1, 200, 255]),
        (np.uint16, "int_val", [0, 1, 40000, 65535]),
        (np.int64, "int64_val", [1, -2, 2**63 - 1, -(2**63)]),
        (np.uint32, "uint32_val", [0, 1, 2**32 - 1, 7]),
        (np.uint64, "uint64_val", [0, 1, 2**64 - 1, 7]),
        (np.bool_, "bool_val", [True, False, False, True]),
    ],
)
def test_typed_fields_decode(dtype: Any, field: str, values: list[Any]) -> None:
    decoded = decode_tensor(wire(typed(dtype, field, values, (2, 2))))
    assert decoded.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(decoded, np.array(values, dtype=dtype).reshape(2, 2))


def test_half_val_carries_float16_bit_patterns() -> None:
    halves = np.array([1.5, -0.25, 65504, np.inf], dtype=np.float16)
    proto = typed(np.float16, "half_val", halves.view(np.uint16).astype(np.int32).tolist(), (4,))
    np.testing.assert_array_equal(decode_tensor(wire(proto)), halves)


def test_string_val_decodes_to_object_array_of_bytes() -> None:
    decoded = decode_tensor(typed(STRING, "string_val", [b"x", b"yz"], (2, 1)))
    assert decoded.dtype == STRING
    assert decoded.tolist() == [[b"x"], [b"yz"]]


@pytest.mark.parametrize(
    ("dtype", "field", "value"),
    [(np.float32, "float_val", 2.5), (np.int64, "int64_val", -3), (np.bool_, "bool_val", True)],
)
def test_one_value_fills_the_shape_like_tensorflow(dtype: Any, field: str, value: Any) -> None:
    decoded = decode_tensor(typed(dtype, field, [value], (2, 3)))
    np.testing.assert_array_equal(decoded, np.full((2, 3), value, dtype=dtype))


def test_one_string_fills_the_shape() -> None:
    decoded = decode_tensor(typed(STRING, "string_val", [b"s"], (3,)))
    assert decoded.tolist() == [b"s", b"s", b"s"]


def test_scalar_and_empty_tensors_from_typed_fields() -> None:
    assert decode_tensor(typed(np.float32, "float_val", [4.0], ())).shape == ()
    assert decode_tensor(typed(np.float32, "float_val", [], (0, 3))).shape == (0, 3)


@pytest.mark.parametrize(
    ("proto", "message"),
    [
        (
            typed(np.float32, "float_val", [1.0, 2.0], (3,)),
            "needs 3 values (or 1 to fill it) but float_val has 2",
        ),
        (
            typed(np.float32, "float_val", [1.0] * 4, (3,)),
            "needs 3 values (or 1 to fill it) but float_val has 4",
        ),
        (typed(np.float32, "float_val", [], (3,)), "has no values in float_val or tensor_content"),
        (typed(np.float32, "int_val", [1, 2, 3], (3,)), "values were sent in int_val"),
        (TensorProto(dtype=0), "tensor dtype DT_INVALID (0) is not supported"),
        (TensorProto(dtype=14), "tensor dtype DT_BFLOAT16 (14) is not supported"),
        (TensorProto(dtype=99), "(99) is not supported"),
        (
            TensorProto(dtype=1, tensor_content=b"\x00" * 7),
            "tensor_content has 7 bytes but shape [] of DT_FLOAT needs 4",
        ),
        (TensorProto(dtype=7, tensor_content=b"abc"), "string_val, not tensor_content"),
    ],
)
def test_bad_tensors_are_invalid_argument(proto: TensorProto, message: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        decode_tensor(proto)
    assert message in error.value.message


def test_unknown_rank_and_negative_dims_are_refused() -> None:
    unknown = TensorProto(dtype=1)
    unknown.tensor_shape.unknown_rank = True
    with pytest.raises(InvalidArgument, match="unknown_rank"):
        decode_tensor(unknown)
    with pytest.raises(InvalidArgument, match=r"\[-1,2\] has a negative dimension"):
        decode_tensor(typed(np.float32, "float_val", [1.0], (-1, 2)))


def test_unencodable_dtype_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="datetime64"):
        encode_tensor(np.array(["2020-01-01"], dtype="datetime64[D]"))


def test_encode_fills_a_given_message() -> None:
    from modelserve.proto.tensorflow_serving.apis import predict_pb2

    response = predict_pb2.PredictResponse()
    encode_tensor(np.ones((1, 2), np.float32), response.outputs["y"])
    np.testing.assert_array_equal(decode_tensor(response.outputs["y"]), np.ones((1, 2), np.float32))


# -- against TensorFlow's own converters ----------------------------------------------------------------------


@pytest.mark.tensorflow
@pytest.mark.parametrize("dtype", [*NUMERIC, object])
def test_tensorflow_reads_what_we_write_and_we_read_what_it_writes(dtype: Any) -> None:
    tf = pytest.importorskip("tensorflow")
    array = strings() if dtype is object else sample(dtype)
    theirs = tf.make_tensor_proto(array)
    ours = decode_tensor(TensorProto.FromString(theirs.SerializeToString()))
    assert ours.dtype == array.dtype
    assert ours.tolist() == array.tolist()
    back = tf.make_ndarray(type(theirs).FromString(encode_tensor(array).SerializeToString()))
    assert back.tolist() == array.tolist()


@pytest.mark.tensorflow
def test_tensorflow_typed_fields_and_broadcast() -> None:
    tf = pytest.importorskip("tensorflow")
    for values, dtype in (([1, 2, 3], tf.uint16), ([True, False], tf.bool), (7.0, tf.float32)):
        theirs = tf.make_tensor_proto(values, dtype=dtype, shape=[2, 3] if values == 7.0 else None)
        expected = tf.make_ndarray(theirs)
        ours = decode_tensor(TensorProto.FromString(theirs.SerializeToString()))
        np.testing.assert_array_equal(ours, expected)
        assert ours.dtype == expected.dtype
