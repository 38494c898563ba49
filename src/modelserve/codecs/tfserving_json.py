"""TF Serving's REST JSON (``tensorflow_serving/util/json_tensor.cc``): request bodies -> numpy, numpy ->
response bodies byte-identical to TF Serving's.

Requests: ``:predict`` takes ``instances`` (row format: one value, or one ``{input: value}`` object, per
batch item) or ``inputs`` (columnar: one value, or an ``{input: tensor}`` object); ``:classify`` and
``:regress`` take ``examples`` (plus an optional ``context``) that become serialized ``tf.Example``\\ s.
Checks happen in TF Serving's order, so a bad request gets the error TF Serving would give first: JSON syntax
and ``signature_name`` while parsing, then (after the front-end resolved model and signature) the
``instances``/``inputs`` structure and the values. Messages are TF Serving's own texts.

Responses are RapidJSON ``PrettyWriter`` output (see `rapidjson_text`) with TF Serving's number formatting
(see `json_numbers`): ``{"predictions": [...]}`` for row requests, ``{"outputs": ...}`` for columnar ones,
``{"results": ...}`` for classify/regress (the docs say ``result``; the code and the server say ``results``),
``{"error": ...}`` for errors. Several outputs are written in name order: TF Serving iterates a protobuf map,
whose order is unspecified. Status and metadata JSON live in `tfserving_status`.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from modelserve.codecs import tfserving_status
from modelserve.codecs.json_numbers import compact_json, float_tokens
from modelserve.codecs.rapidjson_text import (
    b64_object,
    indent,
    json_string,
    multi_line,
    rows,
    single_line,
    tokens_multi_line,
    tokens_single_line,
    value_text,
)
from modelserve.codecs.tensor_values import instances_to_tensors, is_b64, shape_text, to_tensor
from modelserve.codecs.tf_dtypes import tf_type_name, tf_type_string
from modelserve.codecs.tf_example_json import example_from_json
from modelserve.core.signature import Signature
from modelserve.errors import InvalidArgument

encode_model_status = tfserving_status.encode_model_status
encode_model_metadata = tfserving_status.encode_model_metadata

__all__ = [
    "ExamplesBody",
    "PredictBody",
    "decode_predict_inputs",
    "encode_classify_response",
    "encode_error",
    "encode_model_metadata",
    "encode_model_status",
    "encode_predict_response",
    "encode_regress_response",
    "examples_to_tensor",
    "parse_classify_regress_body",
    "parse_predict_body",
]

_BYTES_SUFFIX = "_bytes"

# -- JSON syntax ---------------------------------------------------------------------------------------------

# RapidJSON's GetParseError_En texts for the errors Python's json module reports (TF appends the offset).
_PARSE_ERRORS = {
    "Expecting value": "Invalid value.",
    "Extra data": "The document root must not be followed by other values.",
    "Expecting property name enclosed in double quotes": "Missing a name for object member.",
    "Expecting ':' delimiter": "Missing a colon after a name of object member.",
    "Unterminated string starting at": "Missing a closing quotation mark in string.",
    "Invalid control character at": "Invalid encoding in string.",
    "Invalid \\escape": "Invalid escape character in string.",
    "Invalid \\uXXXX escape": "Incorrect hex digit after \\u escape in string.",
}
_INF_TOKEN = re.compile(r"-?Inf(?!inity)")


def _container_at(text: str, position: int) -> str:
    """The innermost bracket open at ``position`` (``[`` or ``{``), skipping strings."""
    stack: list[str] = []
    in_string = escaped = False
    for ch in text[:position]:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            stack.append(ch)
        elif ch in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else ""


def _parse_error(text: str, reason: str, position: int) -> InvalidArgument:
    """RapidJSON's message for the error Python's json module found at ``position`` (a str index)."""
    offset = len(text[:position].encode("utf-8", "surrogateescape"))
    if reason == "Expecting value" and not text[position:].strip() and not text[:position].strip():
        return InvalidArgument(f"JSON Parse error: The document is empty. at offset: {offset}")
    if reason == "Expecting ',' delimiter":
        closer = "]" if _container_at(text, position) == "[" else "}"
        what = "an array element" if closer == "]" else "an object member"
        message = f"Missing a comma or '{closer}' after {what}."
    else:
        message = _PARSE_ERRORS.get(reason, "Invalid value.")
    if message.startswith("Missing a closing quotation"):
        offset = len(text.encode("utf-8", "surrogateescape"))
    return InvalidArgument(f"JSON Parse error: {message} at offset: {offset}")


def _loads(body: bytes) -> Any:
    """Parse a request body: orjson when it can, else the stdlib (NaN/Infinity, invalid UTF-8)."""
    if not body:
        raise InvalidArgument("JSON Parse error: The document is empty")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    # RapidJSON (kParseNanAndInfFlag) also reads NaN, Infinity, Inf with signs, and copies invalid UTF-8.
    text = original = body.decode("utf-8", "surrogateescape")
    spelled_out: list[int] = []  # where "inity" was inserted, to report offsets in the original body
    for _ in range(64):
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            inf = _INF_TOKEN.match(text, error.pos)  # "Inf" where a value belongs: spell it out, retry
            if inf is None:
                shift = 5 * sum(1 for at in spelled_out if at <= error.pos)
                raise _parse_error(original, error.msg, error.pos - shift) from None
            spelled_out.append(inf.end())
            text = text[: inf.end()] + "inity" + text[inf.end() :]
    raise InvalidArgument("JSON Parse error: Invalid value.")


def _document(body: bytes) -> dict[str, Any]:
    """ParseJson + FillSignature: a JSON object whose ``signature_name``, if any, is a string."""
    document = _loads(body)
    if type(document) is not dict:
        raise InvalidArgument(f"JSON Value: {value_text(document)} Is not object")
    signature_name = document.get("signature_name")
    if "signature_name" in document and type(signature_name) is not str:
        raise InvalidArgument(
            f"JSON Value: {value_text(document)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return document


# -- predict -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PredictBody:
    """A parsed ``:predict`` body, before the signature (and so the input dtypes) is known.

    ``problem`` is a structural error TF Serving reports only after resolving model and signature (so a
    request for a missing model says so first); `decode_predict_inputs` raises it. ``may_have_bools`` is
    False when the body has no ``true``/``false`` anywhere, so numeric inputs can skip per-element checks.
    """

    signature_name: str | None
    row_format: bool  # True for "instances", False for "inputs"
    payload: Any  # the raw JSON value of instances/inputs
    problem: str | None = None
    may_have_bools: bool = True


def parse_predict_body(body: bytes) -> PredictBody:
    """Parse a ``:predict`` body; malformed JSON or a non-string ``signature_name`` is InvalidArgument."""
    document = _document(body)
    signature_name = document.get("signature_name")
    # A numeric body's only 'u' and 'l' are in true/false/null, and looking for one byte is cheap.
    may_have_bools = (b"u" in body or b"l" in body) and (b"true" in body or b"false" in body)
    instances = document.get("instances")
    has_inputs = "inputs" in document
    problem = None
    if "instances" in document:
        if has_inputs:
            problem = "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist "
        elif type(instances) is not list:
            problem = "Excepting 'instances' to be an list/array"  # sic
        elif not instances:
            problem = "No values in 'instances' array"
        if problem is None:
            return PredictBody(signature_name, True, instances, None, may_have_bools)
        return PredictBody(signature_name, True, None, f"JSON Value: {value_text(document)} {problem}")
    if has_inputs:
        return PredictBody(signature_name, False, document["inputs"], None, may_have_bools)
    return PredictBody(signature_name, False, None, "Missing 'inputs' or 'instances' key")


def decode_predict_inputs(body: PredictBody, signature: Signature) -> dict[str, np.ndarray]:
    """The request's tensors with the signature's dtypes, keyed by input name.

    Shapes are not checked against the signature here (the core does that), but every tensor is dense:
    ragged lists, wrong names and wrong value types are InvalidArgument with TF Serving's message.
    """
    inputs = signature.inputs
    if not inputs:
        raise InvalidArgument(f"Failed to get input map for signature: {body.signature_name or 'DEFAULT'}")
    if body.problem is not None:
        raise InvalidArgument(body.problem)
    if body.row_format:
        return instances_to_tensors(body.payload, inputs, body.may_have_bools)
    payload = body.payload
    if type(payload) is not dict or is_b64(payload):
        if len(inputs) > 1:
            raise InvalidArgument(
                "inputs is a plain value/list, but expecting an object as multiple input tensors required "
                "as per tensorinfo_map"
            )
        ((name, spec),) = inputs.items()
        return {name: to_tensor(payload, spec.dtype, body.may_have_bools)}
    tensors = {}
    for name in sorted(inputs):
        if name not in payload:
            raise InvalidArgument(f"Missing named input: {name} in 'inputs' object.")
        tensors[name] = to_tensor(payload[name], inputs[name].dtype, body.may_have_bools)
    return tensors


def _string_tokens(name: str, values: np.ndarray, depth: int) -> list[bytes]:
    """DT_STRING elements: JSON strings, or ``{"b64": ...}`` objects for outputs named ``*_bytes``."""
    raw = [item if type(item) is bytes else str(item).encode() for item in values.reshape(-1).tolist()]
    if name.endswith(_BYTES_SUFFIX):
        return [b64_object(base64.b64encode(item), depth) for item in raw]
    return [json_string(item) for item in raw]


def _check_writable(tensor: np.ndarray) -> None:
    if tensor.dtype.kind not in "fiubOSU":
        raise InvalidArgument(f"Failed to write JSON value for tensor type: {tf_type_string(tensor.dtype)}")


def _row_texts(name: str, tensor: np.ndarray, depth: int) -> list[bytes]:
    """Each dim-0 slice in single-line format; ``depth`` is where the slice's values sit."""
    if tensor.dtype.kind in "OSU" or tensor.size == 0:
        tokens = _string_tokens(name, tensor, depth + tensor.ndim - 1)
        step = len(tokens) // tensor.shape[0] if tensor.shape[0] else 0
        return [
            tokens_single_line(tokens[i * step : (i + 1) * step], tensor.shape[1:])
            for i in range(tensor.shape[0])
        ]
    return rows(compact_json(tensor), tensor.ndim)


def _columnar_text(name: str, tensor: np.ndarray, depth: int) -> bytes:
    """A whole tensor in the default format, opened at ``depth``."""
    if tensor.dtype.kind in "OSU":
        return tokens_multi_line(_string_tokens(name, tensor, depth + tensor.ndim), tensor.shape, depth)
    if tensor.size == 0:
        return tokens_multi_line([], tensor.shape, depth)
    return multi_line(compact_json(tensor), tensor.ndim, depth)


def encode_predict_response(outputs: Mapping[str, np.ndarray], row_format: bool) -> bytes:
    """``{"predictions": ...}`` (row) or ``{"outputs": ...}`` (columnar), byte-identical to TF Serving."""
    if not outputs:
        raise InvalidArgument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    if not row_format:
        for name in names:
            _check_writable(outputs[name])
        if len(names) == 1:
            return b'{\n    "outputs": ' + _columnar_text(names[0], outputs[names[0]], 1) + b"\n}"
        members = (
            indent(2) + json_string(name) + b": " + _columnar_text(name, outputs[name], 2) for name in names
        )
        return b'{\n    "outputs": {' + b",".join(members) + b"\n    }\n}"
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
    for name in names:  # TF Serving checks every batch size before it writes anything
        _check_writable(outputs[name])
    if batch == 0:
        return b'{\n    "predictions": []\n}'
    if len(names) == 1:
        tensor = outputs[names[0]]
        if tensor.dtype.kind in "OSU":
            text = b", ".join(_row_texts(names[0], tensor, 2))
        else:
            text = single_line(compact_json(tensor))[1:-1]
        return b'{\n    "predictions": [' + text + b"\n    ]\n}"
    keys = [indent(3) + json_string(name) + b": " for name in names]
    columns = [_row_texts(name, outputs[name], 3) for name in names]
    items = (
        indent(2)
        + b"{"
        + b",".join(key + column[i] for key, column in zip(keys, columns, strict=True))
        + indent(2)
        + b"}"
        for i in range(batch)
    )
    return b'{\n    "predictions": [' + b",".join(items) + b"\n    ]\n}"


def encode_error(message: str) -> bytes:
    """``{"error": "..."}`` as TF Serving's MakeJsonFromStatus writes it."""
    return b'{\n    "error": ' + json_string(message) + b"\n}"


# -- classify / regress --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExamplesBody:
    """A parsed ``:classify`` / ``:regress`` body; the examples are already serialized ``tf.Example``\\ s."""

    signature_name: str | None
    context: dict[str, Any] | None
    examples: list[Any]
    serialized: tuple[bytes, ...]


def parse_classify_regress_body(body: bytes) -> ExamplesBody:
    """Parse and convert a classify/regress body, failing with TF Serving's message in TF Serving's order."""
    document = _document(body)
    context = document.get("context")
    prefix = example_from_json(context) if "context" in document else b""
    examples = document.get("examples")
    if "examples" not in document:
        raise InvalidArgument(
            f"JSON Value: {value_text(document)} When method is classify, key 'examples' is expected and "
            "was not found"
        )
    if type(examples) is not list:
        raise InvalidArgument(
            f"JSON Value: {value_text(document)} Expecting 'examples' value to be an list/array"
        )
    if not examples:
        raise InvalidArgument(f"JSON Value: {value_text(document)} 'examples' value is an empty array")
    serialized = tuple(prefix + example_from_json(item) for item in examples)
    return ExamplesBody(document.get("signature_name"), context, examples, serialized)


def examples_to_tensor(body: ExamplesBody) -> np.ndarray:
    """The model input: a 1-D object array of serialized ``tf.Example`` bytes (context merged into each)."""
    tensor = np.empty(len(body.serialized), dtype=object)
    tensor[:] = body.serialized
    return tensor


def _label(value: Any) -> bytes:
    return value if type(value) is bytes else str(value).encode()


def encode_classify_response(
    classes: np.ndarray | None, scores: np.ndarray | None, num_examples: int | None = None
) -> bytes:
    """``{"results": [[[label, score], ...], ...]}`` (PostProcessClassificationResult + its JSON writer).

    Scores in another float type are accepted and written as floats (TF Serving wants DT_FLOAT), labels of
    another type as their decimal text (TF Serving wants DT_STRING).
    """
    if classes is None and scores is None:
        raise InvalidArgument("Expected classification signature outputs to contain classes or scores")
    for tensor, what in ((classes, "classes"), (scores, "scores")):
        if tensor is None:
            continue
        if tensor.ndim != 2:
            raise InvalidArgument(
                f"Expected Tensor shape: [batch_size num_classes] but got {shape_text(tensor.shape)}"
            )
        if num_examples is not None and tensor.shape[0] != num_examples:
            raise InvalidArgument(
                f"Expected {what} output batch size of {num_examples}. Got: {tensor.shape[0]}"
            )
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise InvalidArgument(
            "Tensors class and score should match in dim_size(1). "
            f"Got {classes.shape[1]} vs. {scores.shape[1]}"
        )
    reference = scores if scores is not None else classes
    assert reference is not None
    batch, width = reference.shape
    if batch == 0:
        raise InvalidArgument("Cannot convert empty ClassificationResults to JSON")
    labels = [json_string(_label(v)) for v in classes.reshape(-1).tolist()] if classes is not None else None
    values = float_tokens(scores.astype(np.float32, copy=False)) if scores is not None else None
    out = []
    for i in range(batch):
        pairs = (
            b"["
            + (labels[i * width + c] if labels is not None else b'""')
            + b", "
            + (values[i * width + c].encode() if values is not None else b"0.0")
            + b"]"
            for c in range(width)
        )
        out.append(b"[" + b", ".join(pairs) + b"]")
    return b'{\n    "results": [' + b", ".join(out) + b"\n    ]\n}"


def encode_regress_response(values: np.ndarray, num_examples: int | None = None) -> bytes:
    """``{"results": [v, ...]}`` (PostProcessRegressionResult + its JSON writer); floats of any width."""
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise InvalidArgument(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
            + shape_text(values.shape)
        )
    if num_examples is not None and values.shape[0] != num_examples:
        raise InvalidArgument(
            f"Input batch size did not match output batch size: {num_examples} vs. {values.shape[0]}"
        )
    if values.dtype.kind not in "fiu":
        raise InvalidArgument(f"Expected output Tensor of DT_FLOAT.  Got: {tf_type_name(values.dtype)}")
    if values.shape[0] == 0:
        raise InvalidArgument("Cannot convert empty RegressionResults to JSON")
    tokens = float_tokens(values.astype(np.float32, copy=False).reshape(-1))
    return b'{\n    "results": [' + ", ".join(tokens).encode() + b"]\n}"
