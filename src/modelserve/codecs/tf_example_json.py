"""Classify/regress ``examples`` as serialized ``tensorflow.Example`` protos, by TF Serving's JSON rules.

``MakeExampleFromJsonObject`` in ``util/json_tensor.cc``: every member of an example object is a feature;
its value, or each element of its list, picks the feature's kind -- JSON integer or bool: ``int64_list``,
JSON number with a fraction or exponent: ``float_list``, string or ``{"b64": ...}``: ``bytes_list`` -- and
all elements must agree. With a ``context``, TF Serving's ``InputToSerializedExampleTensor`` feeds the model
``serialized(context) + serialized(example)`` (protobuf concatenation merges the two), so we do too.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from modelserve.codecs.rapidjson_text import json_type, value_text
from modelserve.codecs.tensor_values import decode_b64, is_b64
from modelserve.errors import InvalidArgument

_FLOAT_MAX = 3.4028234663852886e38
_KIND_NAMES = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}


def _kind_of(value: Any, name: str) -> tuple[str, Any]:
    """The feature kind one JSON element asks for, and the element converted for that kind."""
    if value is True or value is False:
        return "int64_list", int(value)
    if isinstance(value, int):
        if 2**63 <= value < 2**64:
            raise InvalidArgument(f"Feature: {name} has uint64 element. Only int64 is supported.")
        if -(2**63) <= value < 2**63:
            return "int64_list", value
        value = float(value)  # RapidJSON reads integers beyond uint64 as doubles
    if isinstance(value, float):
        if math.isfinite(value) and abs(value) > _FLOAT_MAX:
            raise InvalidArgument(
                f"Cannot convert JSON value: {value_text(value)} to float without loss of precision."
            )
        return "float_list", value
    if isinstance(value, str):
        return "bytes_list", value.encode("utf-8", "surrogateescape")
    if is_b64(value):
        return "bytes_list", decode_b64(value)
    raise InvalidArgument(f"Feature: {name} has element with unexpected JSON type: {json_type(value)}")


def example_from_json(value: Any) -> bytes:
    """One JSON example object as a serialized ``tensorflow.Example``."""
    from modelserve.proto.tensorflow.core.example import example_pb2

    if not isinstance(value, dict):
        raise InvalidArgument(f"Example must be JSON object but got JSON {json_type(value)}")
    example = example_pb2.Example()
    features = example.features.feature
    for name, content in value.items():
        kind: str | None = None
        values: list[Any] = []
        for element in content if isinstance(content, list) else [content]:
            element_kind, converted = _kind_of(element, name)
            if kind is not None and element_kind != kind:
                raise InvalidArgument(
                    f"Unexpected element type in feature: {name} expecting type: {_KIND_NAMES[kind]}"
                )
            kind = element_kind
            values.append(converted)
        feature = features[name]  # created even when empty: an empty list still names the feature
        if kind is not None:
            getattr(feature, kind).value.extend(values)
    return example.SerializeToString()


def serialized_examples(context: Any, examples: list[Any]) -> np.ndarray:
    """The model's input tensor: one serialized Example per JSON example, the context prepended to each."""
    prefix = example_from_json(context) if context is not None else b""
    serialized = [prefix + example_from_json(item) for item in examples]
    tensor = np.empty(len(serialized), dtype=object)
    tensor[:] = serialized
    return tensor
