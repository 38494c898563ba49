"""TensorFlow's ``TensorProto`` (the tensors of the gRPC API) <-> numpy arrays.

Decoding accepts both ways clients fill a TensorProto: raw little-endian bytes in ``tensor_content`` (what
``tf.make_tensor_proto`` writes for numeric arrays) and the repeated field of the dtype (``float_val``,
``int_val``, ``half_val`` ...; what hand-built requests and other languages' clients use). As in TensorFlow,
one typed value fills the whole shape. Unlike TensorFlow, which silently pads a short value list with its
last value and drops extra values, any other count mismatch is an InvalidArgument: it is a client bug.

Encoding writes numeric tensors to ``tensor_content`` (one copy, no per-element work; TF Serving does the
same) and strings to ``string_val``. Strings are numpy object arrays of ``bytes`` (``signature.STRING``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from modelserve.codecs.tf_dtypes import numpy_dtype, tf_name_of_number, tf_type_number
from modelserve.core.signature import STRING
from modelserve.errors import InvalidArgument
from modelserve.proto.tensorflow.core.framework.tensor_pb2 import TensorProto

__all__ = ["TensorProto", "decode_tensor", "encode_tensor"]

# The repeated field holding each dtype's values (tensor.proto's comments).
_VALUE_FIELD: dict[np.dtype, str] = {
    np.dtype(np.float32): "float_val",
    np.dtype(np.float64): "double_val",
    np.dtype(np.float16): "half_val",
    np.dtype(np.int32): "int_val",
    np.dtype(np.int16): "int_val",
    np.dtype(np.int8): "int_val",
    np.dtype(np.uint8): "int_val",
    np.dtype(np.uint16): "int_val",
    np.dtype(np.int64): "int64_val",
    np.dtype(np.uint32): "uint32_val",
    np.dtype(np.uint64): "uint64_val",
    np.dtype(np.bool_): "bool_val",
    np.dtype(np.complex64): "scomplex_val",
    np.dtype(np.complex128): "dcomplex_val",
    STRING: "string_val",
}
_ALL_VALUE_FIELDS = frozenset(_VALUE_FIELD.values())

# The numpy type each repeated field is read as before conversion to the tensor's dtype.
_FIELD_DTYPE: dict[str, np.dtype] = {
    "float_val": np.dtype(np.float32),
    "double_val": np.dtype(np.float64),
    "half_val": np.dtype(np.int32),
    "int_val": np.dtype(np.int32),
    "int64_val": np.dtype(np.int64),
    "uint32_val": np.dtype(np.uint32),
    "uint64_val": np.dtype(np.uint64),
    "bool_val": np.dtype(np.bool_),
    "scomplex_val": np.dtype(np.float32),
    "dcomplex_val": np.dtype(np.float64),
}


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _shape(proto: TensorProto) -> tuple[int, ...]:
    if proto.tensor_shape.unknown_rank:
        raise InvalidArgument("tensor_shape has unknown_rank set: a request tensor needs a known shape")
    shape = tuple(int(dim.size) for dim in proto.tensor_shape.dim)
    if any(size < 0 for size in shape):
        raise InvalidArgument(f"tensor_shape {_shape_text(shape)} has a negative dimension")
    return shape


def decode_tensor(proto: TensorProto) -> np.ndarray:
    """The numpy array a TensorProto holds; InvalidArgument for unsupported dtypes and bad value counts."""
    dtype = numpy_dtype(proto.dtype)
    if dtype is None:
        raise InvalidArgument(
            f"tensor dtype {tf_name_of_number(proto.dtype)} ({proto.dtype}) is not supported"
        )
    shape = _shape(proto)
    count = math.prod(shape)
    if proto.tensor_content:
        return _from_content(proto.tensor_content, dtype, shape, count)
    field = _VALUE_FIELD[dtype]
    values: Any = getattr(proto, field)
    if dtype == STRING:
        array = np.empty(len(values), dtype=object)
        array[:] = list(values)
    else:
        array = np.array(values, dtype=_FIELD_DTYPE[field])
        if field == "half_val":  # 16-bit patterns carried in int32
            array = array.astype(np.uint16).view(np.float16)
        elif dtype.kind == "c":  # real and imaginary parts interleaved
            if len(array) % 2:
                raise InvalidArgument(f"{field} has an odd number of values ({len(array)})")
            array = array.view(dtype)
        elif array.dtype != dtype:
            array = array.astype(dtype)  # int_val carries int8/16 and uint8/16: truncate like TF
    return _fit(array, shape, count, field, proto)


def _from_content(content: bytes, dtype: np.dtype, shape: tuple[int, ...], count: int) -> np.ndarray:
    if dtype == STRING:
        raise InvalidArgument("DT_STRING tensors must carry their values in string_val, not tensor_content")
    expected = count * dtype.itemsize
    if len(content) != expected:
        raise InvalidArgument(
            f"tensor_content has {len(content)} bytes but shape {_shape_text(shape)} of "
            f"{tf_name_of_number(tf_type_number(dtype))} needs {expected}"
        )
    # Read-only view on the request bytes: no copy; the core never writes into its inputs.
    return np.frombuffer(content, dtype=dtype.newbyteorder("<")).astype(dtype, copy=False).reshape(shape)


def _fit(array: np.ndarray, shape: tuple[int, ...], count: int, field: str, proto: TensorProto) -> np.ndarray:
    got = len(array)
    if got == count:
        return array.reshape(shape)
    if got == 1:  # TensorFlow's broadcast of a single value
        if array.dtype == STRING:
            filled = np.empty(shape, dtype=object)
            filled[...] = array[0]
            return filled
        return np.full(shape, array[0], dtype=array.dtype)
    if got == 0:
        others = sorted(f.name for f, _ in proto.ListFields() if f.name in _ALL_VALUE_FIELDS)
        hint = f"; values were sent in {', '.join(others)}" if others else ""
        raise InvalidArgument(
            f"tensor of dtype {tf_name_of_number(proto.dtype)} and shape {_shape_text(shape)} has no values "
            f"in {field} or tensor_content{hint}"
        )
    raise InvalidArgument(
        f"tensor of shape {_shape_text(shape)} needs {count} values (or 1 to fill it) but {field} has {got}"
    )


def encode_tensor(array: np.ndarray, proto: TensorProto | None = None) -> TensorProto:
    """A TensorProto of ``array``: ``tensor_content`` for numbers, ``string_val`` for strings.

    Fills ``proto`` when given (e.g. a map entry of a response), else a new message.
    """
    out: Any = TensorProto() if proto is None else proto
    array = np.asarray(array)
    if array.dtype.kind in "SU":
        array = array.astype(object)
    number = tf_type_number(array.dtype)
    if number == 0:
        raise InvalidArgument(f"cannot encode a tensor of numpy dtype {array.dtype} as a TensorProto")
    out.dtype = number
    dims = out.tensor_shape.dim
    for size in array.shape:
        dims.add().size = size
    if array.dtype == STRING:
        out.string_val.extend(
            item if type(item) is bytes else str(item).encode() for item in array.reshape(-1).tolist()
        )
    else:
        little = array.dtype.newbyteorder("<")
        out.tensor_content = np.ascontiguousarray(array, dtype=little).tobytes()
    return out
