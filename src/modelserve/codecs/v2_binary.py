"""Raw tensor bytes of the V2 protocol: Triton's binary tensor data extension and gRPC ``raw_*_contents``.

Both carry a tensor as its flattened, row-major elements, little-endian, without padding; a ``BYTES``
tensor is each element as a 4-byte little-endian length followed by its bytes. Fixed-size tensors are read
with ``np.frombuffer`` (no copy: the array views the request body), so the body must outlive the request.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import numpy as np

from modelserve.codecs.v2_datatypes import numpy_dtype, wire_dtype
from modelserve.core.signature import STRING
from modelserve.errors import InvalidArgument

_LENGTH = struct.Struct("<I")


def element_count(name: str, shape: Sequence[int]) -> int:
    """The number of elements of ``shape``; InvalidArgument for negative dimensions."""
    for dim in shape:
        if dim < 0:
            shape_text = "[" + ",".join(str(d) for d in shape) + "]"
            raise InvalidArgument(f"input '{name}' has a negative dimension in shape {shape_text}")
    return math.prod(shape)


def tensor_from_raw(name: str, datatype: str, shape: Sequence[int], raw: bytes | memoryview) -> np.ndarray:
    """Read one tensor from its raw bytes; InvalidArgument when the size does not match the shape."""
    dtype = numpy_dtype(datatype)
    count = element_count(name, shape)
    if dtype == STRING:
        return unpack_bytes(name, raw, count).reshape(shape)
    wire = wire_dtype(datatype)
    expected = count * wire.itemsize
    if len(raw) != expected:
        raise InvalidArgument(
            f"input '{name}' has {len(raw)} bytes of {datatype} data but shape "
            f"[{','.join(str(d) for d in shape)}] needs {expected}"
        )
    array = np.frombuffer(raw, dtype=wire)
    if wire != dtype:  # big-endian host: bring the values into native order
        array = array.astype(dtype)
    return array.reshape(shape)


def tensor_to_raw(array: np.ndarray) -> bytes:
    """The raw bytes of one output tensor (BYTES length-prefixed, everything else little-endian)."""
    if array.dtype == STRING:
        return pack_bytes(array)
    wire = array.dtype.newbyteorder("<")
    if array.dtype != wire:  # big-endian data or host
        array = array.astype(wire)
    return np.ascontiguousarray(array).tobytes()


def unpack_bytes(name: str, raw: bytes | memoryview, count: int) -> np.ndarray:
    """``count`` length-prefixed elements filling ``raw`` exactly, as an object array of ``bytes``."""
    view = memoryview(raw)
    out = np.empty(count, dtype=STRING)
    offset = 0
    size = len(view)
    for index in range(count):
        if offset + 4 > size:
            raise InvalidArgument(
                f"input '{name}': BYTES data ends after {index} of {count} elements "
                "(each element is a 4-byte little-endian length, then the bytes)"
            )
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > size:
            raise InvalidArgument(
                f"input '{name}': BYTES element {index} claims {length} bytes but only {size - offset} remain"
            )
        out[index] = bytes(view[offset : offset + length])
        offset += length
    if offset != size:
        raise InvalidArgument(f"input '{name}': {size - offset} bytes left over after {count} BYTES elements")
    return out


def pack_bytes(array: np.ndarray) -> bytes:
    """Length-prefix every element (``bytes``, or ``str`` encoded as UTF-8) in row-major order."""
    parts: list[bytes] = []
    for item in array.ravel():
        data = item.encode() if isinstance(item, str) else bytes(item)
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)
