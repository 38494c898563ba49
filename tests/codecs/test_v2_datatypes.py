"""V2 datatype names <-> numpy dtypes, and raw tensor bytes (binary extension, gRPC raw contents)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from modelserve.codecs.v2_binary import pack_bytes, tensor_from_raw, tensor_to_raw, unpack_bytes
from modelserve.codecs.v2_datatypes import DATATYPES, datatype_name, numpy_dtype
from modelserve.core.signature import STRING
from modelserve.errors import InvalidArgument


@pytest.mark.parametrize(
    ("name", "dtype"),
    [
        ("BOOL", np.bool_),
        ("UINT8", np.uint8),
        ("UINT16", np.uint16),
        ("UINT32", np.uint32),
        ("UINT64", np.uint64),
        ("INT8", np.int8),
        ("INT16", np.int16),
        ("INT32", np.int32),
        ("INT64", np.int64),
        ("FP16", np.float16),
        ("FP32", np.float32),
        ("FP64", np.float64),
        ("BYTES", object),
    ],
)
def test_names_round_trip(name: str, dtype: type) -> None:
    assert numpy_dtype(name) == np.dtype(dtype)
    assert datatype_name(np.dtype(dtype)) == name
    assert name in DATATYPES


def test_unknown_datatype_names_the_accepted_ones() -> None:
    with pytest.raises(
        InvalidArgument, match="unsupported datatype 'BF16'; supported datatypes: BOOL, UINT8"
    ):
        numpy_dtype("BF16")
    assert datatype_name(np.dtype(np.complex64)) == "INVALID"
    assert datatype_name(np.dtype(">f4")) == "FP32"


@pytest.mark.parametrize("datatype", ["BOOL", "UINT8", "INT16", "INT64", "UINT64", "FP16", "FP32", "FP64"])
def test_raw_round_trip_is_little_endian_row_major(datatype: str) -> None:
    array = (
        (np.arange(6) % 2 if datatype == "BOOL" else np.arange(6)).astype(numpy_dtype(datatype)).reshape(2, 3)
    )
    raw = tensor_to_raw(array)
    assert raw == array.astype(array.dtype.newbyteorder("<")).tobytes()
    back = tensor_from_raw("x", datatype, [2, 3], raw)
    np.testing.assert_array_equal(back, array)
    assert back.dtype == array.dtype


def test_raw_of_a_non_contiguous_or_big_endian_array() -> None:
    array = np.arange(6, dtype=np.float32).reshape(2, 3).T
    assert tensor_to_raw(array) == np.ascontiguousarray(array).tobytes()
    big = np.array([1, 2], dtype=">i4")
    assert tensor_to_raw(big) == struct.pack("<2i", 1, 2)


def test_raw_size_must_match_the_shape() -> None:
    with pytest.raises(
        InvalidArgument, match=r"input 'x' has 8 bytes of FP32 data but shape \[1,3\] needs 12"
    ):
        tensor_from_raw("x", "FP32", [1, 3], b"\0" * 8)
    with pytest.raises(InvalidArgument, match="negative dimension"):
        tensor_from_raw("x", "FP32", [-1, 3], b"")


def test_bytes_elements_are_length_prefixed() -> None:
    array = np.array([[b"ab", b""], [b"\xff\x00", "caf\u00e9"]], dtype=STRING)
    raw = pack_bytes(array)
    assert raw[:6] == b"\x02\x00\x00\x00ab"
    back = tensor_from_raw("s", "BYTES", [2, 2], raw)
    assert back.shape == (2, 2)
    assert back.tolist() == [[b"ab", b""], [b"\xff\x00", "caf\u00e9".encode()]]
    assert tensor_to_raw(back) == raw


@pytest.mark.parametrize(
    ("raw", "count", "message"),
    [
        (b"\x02\x00\x00\x00ab\x01\x00", 2, "ends after 1 of 2 elements"),
        (b"\x05\x00\x00\x00ab", 1, "element 0 claims 5 bytes but only 2 remain"),
        (b"\x01\x00\x00\x00abc", 1, "2 bytes left over after 1 BYTES elements"),
    ],
)
def test_malformed_bytes_elements(raw: bytes, count: int, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        unpack_bytes("s", raw, count)
