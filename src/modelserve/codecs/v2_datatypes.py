"""The Open Inference Protocol (V2) datatype names <-> numpy dtypes.

V2 names tensor types with strings (``FP32``, ``INT64``, ``BYTES``); the core carries numpy arrays.
``BYTES`` is our ``STRING`` dtype: an object array whose elements are ``bytes``. Triton's ``BF16`` has no
numpy dtype and is refused with a message that names the accepted types.
"""

from __future__ import annotations

import numpy as np

from modelserve.core.signature import STRING
from modelserve.errors import InvalidArgument

BYTES = "BYTES"

# In the order the V2 documentation lists them.
_TABLE: tuple[tuple[str, np.dtype], ...] = (
    ("BOOL", np.dtype(np.bool_)),
    ("UINT8", np.dtype(np.uint8)),
    ("UINT16", np.dtype(np.uint16)),
    ("UINT32", np.dtype(np.uint32)),
    ("UINT64", np.dtype(np.uint64)),
    ("INT8", np.dtype(np.int8)),
    ("INT16", np.dtype(np.int16)),
    ("INT32", np.dtype(np.int32)),
    ("INT64", np.dtype(np.int64)),
    ("FP16", np.dtype(np.float16)),
    ("FP32", np.dtype(np.float32)),
    ("FP64", np.dtype(np.float64)),
    (BYTES, STRING),
)

_DTYPE_BY_NAME: dict[str, np.dtype] = dict(_TABLE)
_NAME_BY_DTYPE: dict[np.dtype, str] = {dtype: name for name, dtype in _TABLE}
# Little-endian views of every fixed-size dtype: the binary extension and gRPC raw contents are little-endian.
_WIRE_DTYPE: dict[str, np.dtype] = {
    name: dtype.newbyteorder("<") for name, dtype in _TABLE if dtype != STRING
}

DATATYPES: tuple[str, ...] = tuple(name for name, _ in _TABLE)
"""Every datatype name this server accepts."""


def numpy_dtype(datatype: str) -> np.dtype:
    """The numpy dtype of a V2 datatype name; InvalidArgument naming the accepted names otherwise."""
    dtype = _DTYPE_BY_NAME.get(datatype)
    if dtype is None:
        raise InvalidArgument(
            f"unsupported datatype '{datatype}'; supported datatypes: {', '.join(DATATYPES)}"
        )
    return dtype


def wire_dtype(datatype: str) -> np.dtype:
    """The little-endian dtype raw tensor bytes of ``datatype`` are read as (not for BYTES)."""
    return _WIRE_DTYPE[datatype]


def datatype_name(dtype: np.dtype) -> str:
    """The V2 name of a numpy dtype; ``INVALID`` (Triton's spelling) for dtypes V2 cannot express."""
    return _NAME_BY_DTYPE.get(dtype) or _NAME_BY_DTYPE.get(np.dtype(dtype).newbyteorder("="), "INVALID")
