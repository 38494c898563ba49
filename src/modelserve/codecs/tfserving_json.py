"""TF Serving's REST JSON (``util/json_tensor.cc``): requests -> numpy, numpy -> byte-identical responses.

Decoding follows TF Serving's rules: ``instances`` (row format, every input shares dim 0) or ``inputs``
(columnar), ``{"b64": ...}`` for binary strings, ``NaN``/``Infinity`` accepted, JSON integers only for
integer inputs, numbers only for float inputs.

Encoding reproduces what TF Serving's RapidJSON PrettyWriter prints, byte for byte:

- floats: ``%g`` (six significant digits) when that round-trips, else ``%.9g`` (float32, float16) or
  ``%.17g`` (float64); ``.0`` appended to whole numbers written without exponent; ``NaN``, ``Infinity``,
  ``-Infinity`` as bare tokens;
- layout: 4-space indentation; row-format items on one line
  (``"predictions": [[1.0, 2.0], [3.0, 4.0]\\n    ]``), columnar tensors one value per line;
- output names ending in ``_bytes`` come back as ``{"b64": ...}``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from modelserve.codecs import tfserving_status
from modelserve.core.signature import Signature
from modelserve.errors import InvalidArgument

encode_model_status = tfserving_status.encode_model_status
encode_model_metadata = tfserving_status.encode_model_metadata

_INDENT = "    "
_B64 = "b64"
_BYTES_SUFFIX = "_bytes"


# -- request parsing ----------------------------------------------------------------------------------


def _loads(body: bytes) -> Any:
    """Parse JSON; orjson for speed, the stdlib only for NaN/Infinity (which orjson rejects)."""
    if not body:
        raise InvalidArgument("JSON Parse error: The document is empty")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            return json.loads(body)  # accepts NaN, Infinity, -Infinity like RapidJSON's kParseNanAndInfFlag
        except (ValueError, UnicodeDecodeError):
            raise InvalidArgument(f"JSON Parse error: {exc}") from None


def _json_text(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value)


def _parse_object(body: bytes) -> dict[str, Any]:
    document = _loads(body)
    if not isinstance(document, dict):
        raise InvalidArgument(f"JSON Value: {_json_text(document)} Is not object")
    signature_name = document.get("signature_name")
    if signature_name is not None and not isinstance(signature_name, str):
        raise InvalidArgument(
            f"JSON Value: {_json_text(document)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return document


@dataclass(frozen=True, slots=True)
class PredictBody:
    """A parsed ``:predict`` body, before the signature (and so the input dtypes) is known."""

    signature_name: str | None
    row_format: bool  # True for "instances", False for "inputs"
    payload: Any


def parse_predict_body(body: bytes) -> PredictBody:
    """Parse a ``:predict`` body; malformed JSON or a missing/duplicated tensor key is InvalidArgument."""
    document = _parse_object(body)
    has_instances = "instances" in document
    has_inputs = "inputs" in document
    if has_instances and has_inputs:
        raise InvalidArgument(
            f"JSON Value: {_json_text(document)} Not formatted correctly expecting only one of "
            "'inputs' or 'instances' keys to exist "
        )
    if has_instances:
        instances = document["instances"]
        if not isinstance(instances, list):
            raise InvalidArgument(
                f"JSON Value: {_json_text(document)} Excepting 'instances' to be an list/array"
            )
        if not instances:
            raise InvalidArgument(f"JSON Value: {_json_text(document)} No values in 'instances' array")
        return PredictBody(document.get("signature_name"), True, instances)
    if has_inputs:
        return PredictBody(document.get("signature_name"), False, document["inputs"])
    raise InvalidArgument("Missing 'inputs' or 'instances' key")


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(_B64), str)


def _is_named_object(value: Any) -> bool:
    return isinstance(value, dict) and not _is_b64(value)


def decode_predict_inputs(body: PredictBody, signature: Signature) -> dict[str, np.ndarray]:
    """The request's tensors as numpy arrays with the signature's dtypes, keyed by input name."""
    inputs = signature.inputs
    if not inputs:
        raise InvalidArgument(f"Failed to get input map for signature: {signature.name}")
    if body.row_format:
        return _decode_instances(body.payload, signature)
    payload = body.payload
    if not _is_named_object(payload):
        if len(inputs) > 1:
            raise InvalidArgument(
                "inputs is a plain value/list, but expecting an object as multiple input tensors "
                "required as per tensorinfo_map"
            )
        name = next(iter(inputs))
        return {name: to_array(payload, inputs[name].dtype)}
    tensors: dict[str, np.ndarray] = {}
    for name, spec in inputs.items():
        if name not in payload:
            raise InvalidArgument(f"Missing named input: {name} in 'inputs' object.")
        tensors[name] = to_array(payload[name], spec.dtype)
    return tensors


def _decode_instances(instances: list[Any], signature: Signature) -> dict[str, np.ndarray]:
    inputs = signature.inputs
    objects = _is_named_object(instances[0])
    if not objects and len(inputs) > 1:
        raise InvalidArgument(
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            "required as per tensorinfo_map"
        )
    if not objects:
        for index, item in enumerate(instances):
            if _is_named_object(item):
                raise InvalidArgument(f"Expecting value/list but got object at item {index} of input list")
        name = next(iter(inputs))
        return {name: _stack(instances, name, inputs[name].dtype)}
    columns: dict[str, list[Any]] = {name: [] for name in inputs}
    expected = set(inputs)
    for index, item in enumerate(instances):
        if not _is_named_object(item):
            raise InvalidArgument(f"Expecting object but got list at item {index} of input list")
        for key in item:
            if key not in inputs:
                raise InvalidArgument(
                    f"Failed to process element: {index} key: {key} of 'instances' list. "
                    f"Error: Invalid argument: JSON object: does not have named input: {key}"
                )
        if set(item) != expected:
            raise InvalidArgument(
                f"Failed to process element: {index} of 'instances' list. JSON object: "
                f"{_json_text(item)} keys must be equal to: {','.join(sorted(expected))}"
            )
        for name in inputs:
            columns[name].append(item[name])
    return {name: _stack(values, name, inputs[name].dtype) for name, values in columns.items()}


def _stack(items: list[Any], name: str, dtype: np.dtype) -> np.ndarray:
    """Stack row-format items into one tensor; every item must have the same shape."""
    try:
        return to_array(items, dtype)
    except InvalidArgument as error:
        # Find the first item whose shape differs, for TF Serving's "element N" message.
        first = _shape_of(items[0])
        for index, item in enumerate(items[1:], start=1):
            shape = _shape_of(item)
            if shape != first:
                raise InvalidArgument(
                    f"Failed to process element: {index} of 'instances' list. Error: Invalid argument: "
                    f"Expecting shape {_shape_text(first)} but got: {_shape_text(shape)}"
                ) from None
        raise error


def _shape_of(value: Any) -> tuple[int, ...]:
    shape: list[int] = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return tuple(shape)


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def to_array(value: Any, dtype: np.dtype) -> np.ndarray:
    """Convert a JSON value (scalar or nested lists) to an array of ``dtype`` with TF Serving's type rules."""
    if dtype == np.dtype(object):
        return _to_string_array(value)
    try:
        array = np.asarray(value)
    except ValueError:
        raise InvalidArgument(
            f"JSON Value: {_json_text(value)[:200]} is ragged: every list at the same level must have "
            "the same length"
        ) from None
    kind = array.dtype.kind
    if kind == "O" or kind in "US":
        bad = _first_offending(value, dtype)
        raise InvalidArgument(
            f"JSON Value: {_json_text(bad)} Type: {_json_type(bad)} is not of expected type: "
            f"{_tf_name(dtype)}"
        )
    target = dtype.kind
    if target == "b":
        ok = kind == "b"
    elif target in "iu":
        ok = kind in "iu"
    else:  # float
        ok = kind in "iuf"
    if not ok:
        bad = _first_offending(value, dtype)
        raise InvalidArgument(
            f"JSON Value: {_json_text(bad)} Type: {_json_type(bad)} is not of expected type: "
            f"{_tf_name(dtype)}"
        )
    if target in "iu" and array.size:
        info = np.iinfo(dtype)
        if array.min() < info.min or array.max() > info.max:
            raise InvalidArgument(f"JSON Value out of range for type {_tf_name(dtype)}")
    return array.astype(dtype, copy=False)


def _first_offending(value: Any, dtype: np.dtype) -> Any:
    """The first leaf whose JSON type does not fit ``dtype`` (for the error message)."""
    stack = [value]
    while stack:
        item = stack.pop(0)
        if isinstance(item, list):
            stack = list(item) + stack
            continue
        if dtype.kind == "b" and not isinstance(item, bool):
            return item
        if dtype.kind in "iu" and (isinstance(item, bool) or not isinstance(item, int)):
            return item
        if dtype.kind == "f" and (isinstance(item, bool) or not isinstance(item, (int, float))):
            return item
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _tf_name(dtype: np.dtype) -> str:
    from modelserve.codecs.tf_dtypes import tf_type_name

    return tf_type_name(dtype).removeprefix("DT_").lower()


def _to_string_array(value: Any) -> np.ndarray:
    shape = _shape_of(value)
    flat: list[bytes] = []

    def walk(item: Any, level: int) -> None:
        if isinstance(item, list):
            if level >= len(shape) or len(item) != shape[level]:
                raise InvalidArgument(
                    f"Encountered list at unexpected size: {len(item)} at level: {level} expected size: "
                    f"{shape[level] if level < len(shape) else 0}"
                )
            for element in item:
                walk(element, level + 1)
            return
        if level != len(shape):
            raise InvalidArgument(
                f"JSON Value: {_json_text(item)} found at incorrect level: {level + 1} in the JSON DOM. "
                f"Expected at level: {len(shape)}"
            )
        flat.append(_to_bytes(item))

    walk(value, 0)
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
    return array.reshape(shape)


def _to_bytes(item: Any) -> bytes:
    if isinstance(item, str):
        return item.encode()
    if _is_b64(item):
        try:
            return base64.b64decode(item[_B64], validate=True)
        except (binascii.Error, ValueError):
            raise InvalidArgument("Unable to base64 decode") from None
    if isinstance(item, dict):
        raise InvalidArgument(f"JSON Value: {_json_text(item)} not formatted correctly for base64 data")
    raise InvalidArgument(
        f"JSON Value: {_json_text(item)} Type: {_json_type(item)} is not of expected type: string"
    )


# -- number formatting --------------------------------------------------------------------------------


_SPECIAL_FLOATS = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def format_floats(values: np.ndarray) -> list[str]:
    """TF Serving's WriteDecimal for every element of a float array (float16/32/64), flattened.

    ``%g`` first; the round trip is checked for the whole array at once (parse back, round to the
    element type, compare), and only the elements that lose precision are formatted again with more digits.
    """
    flat = values.reshape(-1)
    is_double = flat.dtype == np.float64
    typed = flat if is_double else flat.astype(np.float32, copy=False)
    python_values = typed.tolist()
    texts = [f"{v:g}" for v in python_values]
    parsed = np.array(list(map(float, texts)), dtype=np.float64)
    if not is_double:
        parsed = parsed.astype(np.float32)
    with np.errstate(invalid="ignore"):
        lossy = np.flatnonzero(parsed != typed)  # NaN is never equal: it is skipped below
    if lossy.size:
        digits = 17 if is_double else 9
        for index in lossy.tolist():
            value = python_values[index]
            if math.isfinite(value):
                texts[index] = f"{value:.{digits}g}"
    return [
        text if ("." in text or "e" in text) else _SPECIAL_FLOATS.get(text, text + ".0") for text in texts
    ]


def _format_strings(values: np.ndarray, as_b64: bool) -> list[str]:
    out: list[str] = []
    for item in values.reshape(-1).tolist():
        raw = item if isinstance(item, bytes) else str(item).encode()
        if as_b64:
            out.append('{"b64": ' + _string(base64.b64encode(raw).decode()) + "}")
        else:
            out.append(_string(raw.decode("utf-8", errors="replace")))
    return out


def _string(text: str) -> str:
    return orjson.dumps(text).decode()


def format_values(name: str, values: np.ndarray) -> list[str]:
    """Every element of one output tensor as TF Serving writes it, flattened in row-major order."""
    kind = values.dtype.kind
    if kind == "f":
        return format_floats(values)
    if kind == "b":
        return ["true" if v else "false" for v in values.reshape(-1).tolist()]
    if kind in "iu":
        return [str(v) for v in values.reshape(-1).tolist()]
    if kind in "OSU":
        return _format_strings(values, as_b64=name.endswith(_BYTES_SUFFIX))
    raise InvalidArgument(f"Failed to write JSON value for tensor type: {values.dtype}")


# -- layout (RapidJSON PrettyWriter) -------------------------------------------------------------------


def _single_line(texts: list[str], shape: tuple[int, ...], offset: int) -> tuple[str, int]:
    """A (sub)tensor on one line: ``[[1.0, 2.0], [3.0, 4.0]]``; returns the text and the next offset."""
    if not shape:
        return texts[offset], offset + 1
    if len(shape) == 1:
        count = shape[0]
        return "[" + ", ".join(texts[offset : offset + count]) + "]", offset + count
    parts = []
    for _ in range(shape[0]):
        part, offset = _single_line(texts, shape[1:], offset)
        parts.append(part)
    return "[" + ", ".join(parts) + "]", offset


def _multi_line(texts: list[str], shape: tuple[int, ...], offset: int, depth: int) -> tuple[str, int]:
    """A (sub)tensor with one element per line, indented as PrettyWriter does at nesting ``depth``."""
    if not shape:
        return texts[offset], offset + 1
    if shape[0] == 0:
        return "[]", offset
    inner = "\n" + _INDENT * (depth + 1)
    parts = []
    for _ in range(shape[0]):
        part, offset = _multi_line(texts, shape[1:], offset, depth + 1)
        parts.append(part)
    return "[" + inner + ("," + inner).join(parts) + "\n" + _INDENT * depth + "]", offset


def encode_predict_response(outputs: Mapping[str, np.ndarray], row_format: bool) -> bytes:
    """``{"predictions": ...}`` (row) or ``{"outputs": ...}`` (columnar), as TF Serving prints them.

    Several outputs are written in name order (TF Serving iterates a protobuf map).
    """
    if not outputs:
        raise InvalidArgument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    if row_format:
        return _encode_rows(names, outputs).encode()
    if len(names) == 1:
        name = names[0]
        text, _ = _multi_line(format_values(name, outputs[name]), outputs[name].shape, 0, 1)
        return ('{\n    "outputs": ' + text + "\n}").encode()
    members = []
    for name in names:
        text, _ = _multi_line(format_values(name, outputs[name]), outputs[name].shape, 0, 2)
        members.append("\n" + _INDENT * 2 + _string(name) + ": " + text)
    return ('{\n    "outputs": {' + ",".join(members) + "\n    }\n}").encode()


def _encode_rows(names: list[str], outputs: Mapping[str, np.ndarray]) -> str:
    batch = -1
    for name in names:
        shape = outputs[name].shape
        if not shape:
            raise InvalidArgument(f"Tensor name: {name} has no shape information ")
        if batch >= 0 and shape[0] != batch:
            raise InvalidArgument(
                f"Tensor name: {name} has inconsistent batch size: {shape[0]} expecting: {batch}"
            )
        batch = shape[0]
    columns = {name: format_values(name, outputs[name]) for name in names}
    offsets = dict.fromkeys(names, 0)
    items = []
    for _ in range(batch):
        members = []
        for name in names:
            text, offsets[name] = _single_line(columns[name], outputs[name].shape[1:], offsets[name])
            members.append((name, text))
        if len(names) == 1:
            items.append(members[0][1])
        else:
            body = ",".join("\n" + _INDENT * 3 + _string(n) + ": " + t for n, t in members)
            items.append("{" + body + "\n" + _INDENT * 2 + "}")
    if batch <= 0:
        return '{\n    "predictions": []\n}'
    if len(names) == 1:
        return '{\n    "predictions": [' + ", ".join(items) + "\n    ]\n}"
    return '{\n    "predictions": [' + ",".join("\n" + _INDENT * 2 + i for i in items) + "\n    ]\n}"


def encode_error(message: str) -> bytes:
    """``{"error": "..."}`` as TF Serving's MakeJsonFromStatus prints it."""
    return ('{\n    "error": ' + _string(message) + "\n}").encode()


# -- classify / regress -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExamplesBody:
    """A parsed ``:classify`` / ``:regress`` body."""

    signature_name: str | None
    context: dict[str, Any] | None
    examples: list[dict[str, Any]]


def parse_classify_regress_body(body: bytes) -> ExamplesBody:
    document = _parse_object(body)
    context = document.get("context")
    if context is not None and not isinstance(context, dict):
        raise InvalidArgument(f"Example must be JSON object but got JSON {_json_type(context)}")
    if "examples" not in document:
        raise InvalidArgument(
            f"JSON Value: {_json_text(document)} When method is classify, key 'examples' is expected and "
            "was not found"
        )
    examples = document["examples"]
    if not isinstance(examples, list):
        raise InvalidArgument(
            f"JSON Value: {_json_text(document)} Expecting 'examples' value to be an list/array"
        )
    if not examples:
        raise InvalidArgument(f"JSON Value: {_json_text(document)} 'examples' value is an empty array")
    for example in examples:
        if not isinstance(example, dict):
            raise InvalidArgument(f"Example must be JSON object but got JSON {_json_type(example)}")
    return ExamplesBody(document.get("signature_name"), context, examples)


def examples_to_tensor(body: ExamplesBody) -> np.ndarray:
    """Serialized ``tensorflow.Example`` protos, one per example, with the context merged into each."""
    from modelserve.proto.tensorflow.core.example import example_pb2

    context = example_pb2.Example()
    if body.context:
        _fill_example(body.context, context)
    serialized = []
    for item in body.examples:
        example = example_pb2.Example()
        example.CopyFrom(context)
        _fill_example(item, example)
        serialized.append(example.SerializeToString())
    array = np.empty(len(serialized), dtype=object)
    array[:] = serialized
    return array


def _fill_example(features: dict[str, Any], example: Any) -> None:
    for name, content in features.items():
        feature = example.features.feature[name]
        feature.Clear()
        values = content if isinstance(content, list) else [content]
        for value in values:
            _add_feature_value(name, value, feature)


def _add_feature_value(name: str, value: Any, feature: Any) -> None:
    kind = feature.WhichOneof("kind")

    def require(expected: str) -> None:
        if kind is not None and kind != expected:
            label = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}[kind]
            raise InvalidArgument(f"Unexpected element type in feature: {name} expecting type: {label}")

    if isinstance(value, bool):
        require("int64_list")
        feature.int64_list.value.append(int(value))
    elif isinstance(value, int):
        require("int64_list")
        if value > 2**63 - 1:
            raise InvalidArgument(f"Feature: {name} has uint64 element. Only int64 is supported.")
        feature.int64_list.value.append(value)
    elif isinstance(value, float):
        require("float_list")
        feature.float_list.value.append(value)
    elif isinstance(value, str):
        require("bytes_list")
        feature.bytes_list.value.append(value.encode())
    elif _is_b64(value):
        require("bytes_list")
        feature.bytes_list.value.append(_to_bytes(value))
    else:
        raise InvalidArgument(f"Feature: {name} has element with unexpected JSON type: {_json_type(value)}")


def encode_classify_response(classes: np.ndarray | None, scores: np.ndarray | None) -> bytes:
    """``{"results": [[[label, score], ...], ...]}`` as TF Serving prints a ClassificationResult."""
    if classes is None and scores is None:
        raise InvalidArgument("Expected classification signature outputs to contain classes or scores")
    reference = scores if scores is not None else classes
    assert reference is not None
    batch = reference.shape[0] if reference.ndim else 1
    width = reference.reshape(batch, -1).shape[1] if batch else 0
    labels = (
        [["" for _ in range(width)] for _ in range(batch)]
        if classes is None
        else [[_label(c) for c in row] for row in classes.reshape(batch, -1).tolist()]
    )
    score_texts = (
        [["0.0"] * width for _ in range(batch)]
        if scores is None
        else np.array(format_floats(scores.astype(np.float32)), dtype=object).reshape(batch, -1).tolist()
    )
    rows = []
    for row_labels, row_scores in zip(labels, score_texts, strict=True):
        pairs = ", ".join(f"[{_string(lab)}, {s}]" for lab, s in zip(row_labels, row_scores, strict=True))
        rows.append("[" + pairs + "]")
    return ('{\n    "results": [' + ", ".join(rows) + "\n    ]\n}").encode()


def _label(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def encode_regress_response(values: np.ndarray) -> bytes:
    """``{"results": [v, ...]}`` as TF Serving prints a RegressionResult (float values)."""
    flat = values.reshape(values.shape[0], -1) if values.ndim else values.reshape(1, 1)
    if flat.shape[1] != 1:
        raise InvalidArgument(
            f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
            f"{_shape_text(values.shape)}"
        )
    texts = format_floats(flat.reshape(-1).astype(np.float32))
    return ('{\n    "results": [' + ", ".join(texts) + "]\n}").encode()
