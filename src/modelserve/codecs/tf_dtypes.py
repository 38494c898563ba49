"""TensorFlow's DataType enum (types.proto) <-> numpy dtypes, for metadata and the gRPC API."""

from __future__ import annotations

import numpy as np

from modelserve.core.signature import STRING

# name -> (enum number, numpy dtype)
_TYPES: dict[str, tuple[int, np.dtype]] = {
    "DT_FLOAT": (1, np.dtype(np.float32)),
    "DT_DOUBLE": (2, np.dtype(np.float64)),
    "DT_INT32": (3, np.dtype(np.int32)),
    "DT_UINT8": (4, np.dtype(np.uint8)),
    "DT_INT16": (5, np.dtype(np.int16)),
    "DT_INT8": (6, np.dtype(np.int8)),
    "DT_STRING": (7, STRING),
    "DT_INT64": (9, np.dtype(np.int64)),
    "DT_BOOL": (10, np.dtype(np.bool_)),
    "DT_UINT16": (17, np.dtype(np.uint16)),
    "DT_HALF": (19, np.dtype(np.float16)),
    "DT_UINT32": (22, np.dtype(np.uint32)),
    "DT_UINT64": (23, np.dtype(np.uint64)),
}
_BY_DTYPE: dict[np.dtype, str] = {dtype: name for name, (_, dtype) in _TYPES.items()}
_BY_NUMBER: dict[int, str] = {number: name for name, (number, _) in _TYPES.items()}


def tf_type_name(dtype: np.dtype) -> str:
    """``DT_FLOAT`` for float32, ...; ``DT_INVALID`` for dtypes TensorFlow has no name for."""
    return _BY_DTYPE.get(np.dtype(dtype), "DT_INVALID")


def tf_type_number(dtype: np.dtype) -> int:
    name = _BY_DTYPE.get(np.dtype(dtype))
    return 0 if name is None else _TYPES[name][0]


def numpy_dtype(tf_name_or_number: str | int) -> np.dtype | None:
    """The numpy dtype of a TF DataType given by name or enum number; None if unsupported."""
    name = _BY_NUMBER.get(tf_name_or_number) if isinstance(tf_name_or_number, int) else tf_name_or_number
    entry = _TYPES.get(name or "")
    return None if entry is None else entry[1]
