"""Parsed JSON values -> numpy tensors, accepting and rejecting exactly what TF Serving does.

Two paths with one contract. The fast path hands the parsed lists to ``np.asarray`` and checks the result
with a few whole-array operations; anything it is not sure about (strings, ``b64`` objects, ragged lists,
bools, numbers near the precision limits) goes to the exact path, a re-implementation of TF Serving's
``FillTensorProto`` / ``AddValueToTensor`` / ``AddInstanceItem`` (``util/json_tensor.cc``) element by
element, which also produces TF Serving's error messages. The fast path never accepts a value the exact
path would reject; the tests run both on the same tables.

TF Serving's value rules, by input dtype:

- float, double: JSON numbers (not bools); an integer must fit the type's mantissa (|v| < 2**24 for float,
  2**53 for double) and a fraction must be within the float range, else "without loss of precision";
- int8, int16, int32, uint8: JSON integers in int32 range (int8/int16/uint8 then wrap, as TF's proto
  conversion does); int64: int64 range; uint32, uint64: their ranges;
- bool: JSON true/false; string: JSON strings (UTF-8 bytes) or ``{"b64": "..."}``.

Extensions where upstream TF Serving answers "Unimplemented": float16 follows the float rules, uint16 takes
JSON integers in its range. Other dtypes (complex, ...) get TF Serving's Unimplemented error.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from modelserve.codecs.rapidjson_text import json_type, value_text
from modelserve.codecs.tf_dtypes import tf_type_string
from modelserve.core.signature import TensorSpec
from modelserve.errors import InvalidArgument, ServingError, Unimplemented

_B64 = "b64"
_B64_CHARS = re.compile(r"[A-Za-z0-9+/]*")

# JSON integer range accepted per integer dtype (RapidJSON's IsInt / IsInt64 / IsUint / IsUint64).
_INT32 = (-(2**31), 2**31 - 1)
_INT_RANGE: dict[np.dtype, tuple[int, int]] = {
    np.dtype(np.int8): _INT32,
    np.dtype(np.int16): _INT32,
    np.dtype(np.int32): _INT32,
    np.dtype(np.uint8): _INT32,
    np.dtype(np.int64): (-(2**63), 2**63 - 1),
    np.dtype(np.uint16): (0, 2**16 - 1),
    np.dtype(np.uint32): (0, 2**32 - 1),
    np.dtype(np.uint64): (0, 2**64 - 1),
}
# Largest integer a float type holds exactly (IsLosslessDecimal's kMaxInt), and the type's finite range.
_FLOAT_LIMITS: dict[np.dtype, tuple[int, float, str]] = {
    np.dtype(np.float32): (2**24 - 1, 3.4028234663852886e38, "float"),
    np.dtype(np.float16): (2**24 - 1, 3.4028234663852886e38, "float"),
    np.dtype(np.float64): (2**53 - 1, 1.7976931348623157e308, "double"),
}


def is_b64(value: Any) -> bool:
    """``{"b64": "<string>"}`` and nothing else (TF Serving's IsValBase64Object)."""
    return type(value) is dict and len(value) == 1 and type(value.get(_B64)) is str


def decode_b64(value: dict[str, str]) -> bytes:
    """absl::Base64Unescape: standard alphabet, padding optional, whitespace ignored."""
    text = value[_B64]
    if any(ch.isspace() for ch in text):
        text = "".join(text.split())
    core = text.rstrip("=")
    padding = len(text) - len(core)
    if padding > 2 or len(core) % 4 == 1 or (padding and len(text) % 4) or not _B64_CHARS.fullmatch(core):
        raise InvalidArgument("Unable to base64 decode")
    try:
        return base64.b64decode(core + "=" * (-len(core) % 4))
    except (binascii.Error, ValueError):
        raise InvalidArgument("Unable to base64 decode") from None


def dense_shape(value: Any) -> list[int]:
    """GetDenseTensorShape: the sizes met following the first element down (stops at an empty list)."""
    shape: list[int] = []
    while type(value) is list:
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def shape_text(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(size) for size in shape) + "]"


def status_text(error: ServingError) -> str:
    """``Status::ToString()`` as TF Serving embeds it in wrapped messages: ``INVALID_ARGUMENT: ...``."""
    return f"{error.code.name}: {error.message}"


# -- the exact path ------------------------------------------------------------------------------------------


def _type_error(value: Any, dtype: np.dtype) -> InvalidArgument:
    return InvalidArgument(
        f"JSON Value: {value_text(value)} Type: {json_type(value)} "
        f"is not of expected type: {tf_type_string(dtype)}"
    )


def _scalar(value: Any, dtype: np.dtype) -> Any:
    """AddValueToTensor for one JSON leaf."""
    kind = dtype.kind
    if kind == "O":
        if type(value) is str:
            return value.encode("utf-8", "surrogateescape")
        if type(value) is dict:
            if not is_b64(value):
                raise InvalidArgument(
                    f"JSON Value: {value_text(value)} not formatted correctly for base64 data"
                )
            return decode_b64(value)
        raise _type_error(value, dtype)
    if type(value) is dict:
        raise _type_error(value, dtype)
    if kind == "b":
        if type(value) is not bool:
            raise _type_error(value, dtype)
        return value
    if kind in "iu":
        low, high = _INT_RANGE[dtype]
        if type(value) is not int or not low <= value <= high:
            raise _type_error(value, dtype)
        return value
    if kind == "f":
        if type(value) not in (int, float):
            raise _type_error(value, dtype)
        max_int, max_value, name = _FLOAT_LIMITS[dtype]
        if type(value) is int and -(2**63) <= value < 2**64:  # RapidJSON's Int64 / Uint64
            lossless = abs(value) <= max_int
        elif type(value) is int:  # RapidJSON reads longer integers as doubles
            try:
                lossless = abs(float(value)) <= max_value
            except OverflowError:
                lossless = False
        else:  # IsLosslessDecimal accepts every non-finite double
            lossless = not math.isfinite(value) or abs(value) <= max_value
        if not lossless:
            raise InvalidArgument(
                f"Cannot convert JSON value: {value_text(value)} to {name} without loss of precision."
            )
        return value
    raise Unimplemented(f"Conversion of JSON Value: {value_text(value)} to type: {tf_type_string(dtype)}")


def _fill(value: Any, level: int, shape: list[int], dtype: np.dtype, out: list[Any]) -> None:
    """FillTensorProto: every leaf at depth len(shape), every list as long as the first one at its depth."""
    rank = len(shape)
    if type(value) is not list:
        if level != rank:
            raise InvalidArgument(
                f"JSON Value: {value_text(value)} found at incorrect level: {level + 1} in the JSON DOM. "
                f"Expected at level: {rank}"
            )
        out.append(_scalar(value, dtype))
        return
    if level >= rank:
        raise InvalidArgument(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise InvalidArgument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} "
            f"expected size: {shape[level]}"
        )
    for element in value:
        _fill(element, level + 1, shape, dtype, out)


def _array(flat: list[Any], shape: Sequence[int], dtype: np.dtype) -> np.ndarray:
    if dtype.kind == "O":
        tensor = np.empty(len(flat), dtype=object)
        tensor[:] = flat
        return tensor.reshape(shape)
    if dtype.kind in "iu":  # int8/int16/uint8 wrap like TF's int_val -> tensor conversion
        wide = np.uint64 if dtype == np.uint64 else np.int64
        return np.array(flat, dtype=wide).astype(dtype).reshape(shape)
    return np.array(flat, dtype=dtype).reshape(shape)


def exact_tensor(value: Any, dtype: np.dtype) -> np.ndarray:
    """One columnar tensor the way TF Serving converts it, element by element."""
    shape = dense_shape(value)
    flat: list[Any] = []
    _fill(value, 0, shape, dtype, flat)
    return _array(flat, shape, dtype)


class _Column:
    """AddInstanceItem's per-input state: every instance must yield the same size and shape."""

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype
        self.flat: list[Any] = []
        self.shape: list[int] | None = None
        self.size = 0

    def add(self, item: Any) -> None:
        shape = dense_shape(item)
        before = len(self.flat)
        _fill(item, 0, shape, self.dtype, self.flat)
        size = len(self.flat) - before
        if self.shape is None:
            self.shape, self.size = shape, size
        elif size != self.size:
            raise InvalidArgument(f"Expecting tensor size: {self.size} but got: {size}")
        elif shape != self.shape:
            raise InvalidArgument(f"Expecting shape {shape_text(self.shape)} but got: {shape_text(shape)}")

    def tensor(self, count: int) -> np.ndarray:
        return _array(self.flat, [count, *(self.shape or [])], self.dtype)


def _is_named_object(value: Any) -> bool:
    return type(value) is dict and not is_b64(value)


def exact_instances(instances: list[Any], inputs: Mapping[str, TensorSpec]) -> dict[str, np.ndarray]:
    """FillTensorMapFromInstancesList: row format, element by element, with TF Serving's messages."""
    names = sorted(inputs)  # TF iterates a protobuf map; its "keys must be equal to" list is sorted
    if type(instances[0]) is not dict and len(names) > 1:
        raise InvalidArgument(
            "instances is a plain list, but expecting list of objects as multiple input tensors required "
            "as per tensorinfo_map"
        )
    objects = _is_named_object(instances[0])
    columns = {name: _Column(inputs[name].dtype) for name in names}
    for index, element in enumerate(instances):
        if not objects:
            if _is_named_object(element):
                raise InvalidArgument(f"Expecting value/list but got object at item {index} of input list")
            try:
                columns[names[0]].add(element)
            except ServingError as error:
                raise InvalidArgument(
                    f"Failed to process element: {index} of 'instances' list. Error: {status_text(error)}"
                ) from None
            continue
        if not _is_named_object(element):
            raise InvalidArgument(f"Expecting object but got list at item {index} of input list")
        for key, item in element.items():
            try:
                if key not in columns:
                    raise InvalidArgument(f"JSON object: does not have named input: {key}")
                columns[key].add(item)
            except ServingError as error:
                raise InvalidArgument(
                    f"Failed to process element: {index} key: {key} of 'instances' list. "
                    f"Error: {status_text(error)}"
                ) from None
        if element.keys() != columns.keys():
            raise InvalidArgument(
                f"Failed to process element: {index} of 'instances' list. JSON object: {value_text(element)} "
                f"keys must be equal to: {','.join(names)}"
            )
    used = names if objects else names[:1]
    return {name: columns[name].tensor(len(instances)) for name in used}


# -- the fast path -------------------------------------------------------------------------------------------


def fast_tensor(value: Any, dtype: np.dtype) -> np.ndarray | None:
    """``np.asarray`` plus whole-array checks; None when only the exact path can decide.

    The caller must route values that may contain JSON bools to the exact path for non-bool dtypes:
    ``np.asarray`` turns ``[1, true]`` into integers.
    """
    target = dtype.kind
    if target not in "fiub":
        return None
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError):  # ragged lists, mixed nesting
        return None
    kind = array.dtype.kind
    if array.size == 0:
        return None
    if target == "f":
        if kind not in "iuf":
            return None
        limit = _FLOAT_LIMITS[dtype][0]
        # Beyond the exact-integer limit TF still takes fractions up to the type's range, but not integers;
        # the array no longer tells which was which, so the exact path decides (NaN fails "<=" too).
        if not np.abs(array).max() <= limit:
            return None
        return array.astype(dtype)
    if target in "iu":
        if kind not in "iu":
            return None
        low, high = _INT_RANGE[dtype]
        if array.min() < low or array.max() > high:
            return None
        return array.astype(dtype)
    return array if kind == "b" else None


def to_tensor(value: Any, dtype: np.dtype, may_have_bools: bool = True) -> np.ndarray:
    """One columnar value as a tensor of ``dtype``; InvalidArgument with TF Serving's message otherwise."""
    if not may_have_bools or dtype.kind == "b":
        tensor = fast_tensor(value, dtype)
        if tensor is not None:
            return tensor
    return exact_tensor(value, dtype)


def instances_to_tensors(
    instances: list[Any], inputs: Mapping[str, TensorSpec], may_have_bools: bool = True
) -> dict[str, np.ndarray]:
    """Row format: every input's instances stacked on a new dim 0; TF Serving's messages on error."""
    first = instances[0]
    names = inputs.keys()
    if len(inputs) == 1 and type(first) is not dict:
        (name,) = names
        dtype = inputs[name].dtype
        if not may_have_bools or dtype.kind == "b":
            tensor = fast_tensor(instances, dtype)
            if tensor is not None:
                return {name: tensor}
    elif (
        type(first) is dict
        and not is_b64(first)
        and all(type(item) is dict and item.keys() == names for item in instances)
    ):
        tensors: dict[str, np.ndarray] = {}
        for name, spec in inputs.items():
            tensor = None
            if not may_have_bools or spec.dtype.kind == "b":
                tensor = fast_tensor([item[name] for item in instances], spec.dtype)
            if tensor is None:
                break
            tensors[name] = tensor
        else:
            return tensors
    return exact_instances(instances, inputs)
