"""TensorFlow's ``DataType`` enum (``tensorflow/core/framework/types.proto``) <-> numpy dtypes.

Metadata prints the enum names (``DT_FLOAT``), the gRPC API carries the numbers, and TF Serving's REST error
messages use ``DataTypeString`` (``float``, ``int32``, ``half``); all three are derived from one table so
they cannot drift apart. Types numpy cannot hold (bfloat16, the quantized and float8 types) have a name and
number but no dtype.
"""

from __future__ import annotations

import numpy as np

from modelserve.core.signature import STRING

# (enum name, enum number, numpy dtype or None), in types.proto order; the *_REF variants are omitted.
_TABLE: tuple[tuple[str, int, np.dtype | None], ...] = (
    ("DT_INVALID", 0, None),
    ("DT_FLOAT", 1, np.dtype(np.float32)),
    ("DT_DOUBLE", 2, np.dtype(np.float64)),
    ("DT_INT32", 3, np.dtype(np.int32)),
    ("DT_UINT8", 4, np.dtype(np.uint8)),
    ("DT_INT16", 5, np.dtype(np.int16)),
    ("DT_INT8", 6, np.dtype(np.int8)),
    ("DT_STRING", 7, STRING),
    ("DT_COMPLEX64", 8, np.dtype(np.complex64)),
    ("DT_INT64", 9, np.dtype(np.int64)),
    ("DT_BOOL", 10, np.dtype(np.bool_)),
    ("DT_QINT8", 11, None),
    ("DT_QUINT8", 12, None),
    ("DT_QINT32", 13, None),
    ("DT_BFLOAT16", 14, None),
    ("DT_QINT16", 15, None),
    ("DT_QUINT16", 16, None),
    ("DT_UINT16", 17, np.dtype(np.uint16)),
    ("DT_COMPLEX128", 18, np.dtype(np.complex128)),
    ("DT_HALF", 19, np.dtype(np.float16)),
    ("DT_RESOURCE", 20, None),
    ("DT_VARIANT", 21, None),
    ("DT_UINT32", 22, np.dtype(np.uint32)),
    ("DT_UINT64", 23, np.dtype(np.uint64)),
    ("DT_FLOAT8_E5M2", 24, None),
    ("DT_FLOAT8_E4M3FN", 25, None),
    ("DT_FLOAT8_E4M3FNUZ", 26, None),
    ("DT_FLOAT8_E4M3B11FNUZ", 27, None),
    ("DT_FLOAT8_E5M2FNUZ", 28, None),
    ("DT_INT4", 29, None),
    ("DT_UINT4", 30, None),
    ("DT_INT2", 31, None),
    ("DT_UINT2", 32, None),
    ("DT_FLOAT4_E2M1FN", 33, None),
)

_NUMBER_BY_NAME: dict[str, int] = {name: number for name, number, _ in _TABLE}
_NAME_BY_NUMBER: dict[int, str] = {number: name for name, number, _ in _TABLE}
_DTYPE_BY_NAME: dict[str, np.dtype] = {name: dtype for name, _, dtype in _TABLE if dtype is not None}
_NAME_BY_DTYPE: dict[np.dtype, str] = {dtype: name for name, dtype in _DTYPE_BY_NAME.items()}

# DataTypeString() spellings that are not simply the lower-cased enum name without "DT_".
_SHORT_EXCEPTIONS = {"DT_INVALID": "INVALID"}


def tf_type_name(dtype: np.dtype) -> str:
    """``DT_FLOAT`` for float32, ...; ``DT_INVALID`` for dtypes TensorFlow has no name for."""
    return _NAME_BY_DTYPE.get(np.dtype(dtype), "DT_INVALID")


def tf_type_number(dtype: np.dtype) -> int:
    """The ``DataType`` enum number of a numpy dtype (0, ``DT_INVALID``, when TF has none)."""
    return _NUMBER_BY_NAME[tf_type_name(dtype)]


def tf_type_string(dtype: np.dtype) -> str:
    """TF's ``DataTypeString``: ``float``, ``double``, ``int32``, ``string``, ``half`` (used in errors)."""
    name = tf_type_name(dtype)
    return _SHORT_EXCEPTIONS.get(name) or name.removeprefix("DT_").lower()


def numpy_dtype(tf_name_or_number: str | int) -> np.dtype | None:
    """The numpy dtype of a TF DataType given by enum name or number; None when numpy cannot hold it."""
    if isinstance(tf_name_or_number, int):
        name = _NAME_BY_NUMBER.get(tf_name_or_number, "")
    else:
        name = tf_name_or_number
    return _DTYPE_BY_NAME.get(name)


def tf_name_of_number(number: int) -> str:
    """The enum name of a DataType number (``DT_INVALID`` for numbers this table does not know)."""
    return _NAME_BY_NUMBER.get(number, "DT_INVALID")
