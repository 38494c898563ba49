"""The V2 REST JSON tensor format, with Triton's binary tensor data extension.

A request body is a JSON object, optionally followed by raw tensor bytes when the request carries the
``Inference-Header-Content-Length`` header (the length of the JSON part). Each input gives ``name``,
``shape``, ``datatype`` and either ``data`` (flat or nested, row-major) or the parameter
``binary_data_size`` (its bytes come next in the binary part, in input order). Decoding checks the wire
format only; names, shapes and dtypes against the model are the core's job (``validate_inputs``), except
the datatype, which V2 requires to match the model exactly (`v2_datatypes.check_input_datatypes`).

A response is ``{"model_name", "model_version", "id"?, "outputs": [{"name", "datatype", "shape", "data"}]}``
written by orjson straight from numpy; outputs asked for in binary carry ``binary_data_size`` instead of
``data`` and their bytes follow the JSON, whose length goes back as ``Inference-Header-Content-Length``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from modelserve.codecs.v2_binary import element_count, tensor_from_raw, tensor_to_raw
from modelserve.codecs.v2_datatypes import BYTES, datatype_name, numpy_dtype
from modelserve.core.signature import STRING, Signature
from modelserve.errors import InvalidArgument

__all__ = [
    "DecodedInput",
    "InferRequest",
    "RequestedOutput",
    "encode_error",
    "encode_infer_response",
    "parse_header_length",
    "parse_infer_request",
]


@dataclass(frozen=True, slots=True)
class DecodedInput:
    """One input tensor as sent: its V2 datatype (checked against the model later) and its values."""

    datatype: str
    array: np.ndarray


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    """An entry of the request's ``outputs``; ``binary`` is None when the output did not say."""

    name: str
    binary: bool | None = None


@dataclass(frozen=True, slots=True)
class InferRequest:
    """A decoded inference request, independent of the transport (REST JSON or gRPC)."""

    id: str
    inputs: dict[str, DecodedInput]
    outputs: list[RequestedOutput]
    # The request parameter ``binary_data_output``: the default for outputs that do not say.
    binary_output: bool = False

    @property
    def output_names(self) -> list[str] | None:
        """The requested output names, or None for "every output of the model"."""
        return [output.name for output in self.outputs] or None

    def model_inputs(self, model: str, signature: Signature) -> dict[str, np.ndarray]:
        """The input arrays, after checking that each datatype is exactly the model's (V2 never casts).

        Inputs the signature does not know are passed on: ``validate_inputs`` names them all at once.
        """
        arrays: dict[str, np.ndarray] = {}
        for name, decoded in self.inputs.items():
            spec = signature.inputs.get(name)
            if spec is not None:
                expected = datatype_name(spec.dtype)
                if decoded.datatype != expected:
                    raise InvalidArgument(
                        f"input '{name}' has datatype {decoded.datatype} "
                        f"but model '{model}' expects {expected}"
                    )
            arrays[name] = decoded.array
        return arrays

    def binary_outputs(self, names: Sequence[str]) -> set[str]:
        """Which of the outputs ``names`` go back as raw bytes."""
        chosen = {output.name: output.binary for output in self.outputs}
        return {
            name for name in names if (chosen.get(name) is None and self.binary_output) or chosen.get(name)
        }


def encode_error(message: str) -> bytes:
    """The V2 error body."""
    return orjson.dumps({"error": message})


# -- requests ------------------------------------------------------------------------------------------------


def parse_header_length(value: bytes | None) -> int | None:
    """The ``Inference-Header-Content-Length`` header as a number (None when absent)."""
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit():
        raise InvalidArgument(
            f"Inference-Header-Content-Length must be a non-negative integer, got '{value.decode('latin-1')}'"
        )
    return int(text)


def parse_infer_request(body: bytes, header_length: int | None = None) -> InferRequest:
    """Decode an infer request body: the JSON document, then the binary tensors after it, if any."""
    if header_length is None:
        header: bytes | memoryview = body
        binary = memoryview(b"")
    else:
        if header_length > len(body):
            raise InvalidArgument(
                f"Inference-Header-Content-Length is {header_length} but the request body has only "
                f"{len(body)} bytes"
            )
        view = memoryview(body)
        header, binary = view[:header_length], view[header_length:]
    try:
        document = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"malformed JSON in the request body: {exc}") from None
    if type(document) is not dict:
        raise InvalidArgument("the request body must be a JSON object")
    request_id = document.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidArgument("'id' must be a string")
    parameters = _parameters(document, "the request")
    binary_output = parameters.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise InvalidArgument("request parameter 'binary_data_output' must be a boolean")
    inputs = _inputs(document.get("inputs"), binary, header_length is not None)
    outputs = _requested_outputs(document.get("outputs"))
    return InferRequest(request_id, inputs, outputs, binary_output)


def _parameters(holder: Mapping[str, Any], what: str) -> dict[str, Any]:
    parameters = holder.get("parameters", {})
    if type(parameters) is not dict:
        raise InvalidArgument(f"'parameters' of {what} must be a JSON object")
    return parameters


def _inputs(raw_inputs: Any, binary: memoryview, has_binary: bool) -> dict[str, DecodedInput]:
    if type(raw_inputs) is not list or not raw_inputs:
        raise InvalidArgument("the request must have a non-empty 'inputs' list")
    inputs: dict[str, DecodedInput] = {}
    offset = 0
    for position, item in enumerate(raw_inputs):
        if type(item) is not dict:
            raise InvalidArgument(f"inputs[{position}] must be a JSON object")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidArgument(f"inputs[{position}] has no 'name'")
        if name in inputs:
            raise InvalidArgument(f"input '{name}' is given more than once")
        datatype = item.get("datatype")
        if not isinstance(datatype, str):
            raise InvalidArgument(f"input '{name}' has no 'datatype'")
        numpy_dtype(datatype)  # unknown datatype: fail before looking at the data
        shape = item.get("shape")
        if type(shape) is not list or not all(type(d) is int for d in shape):
            raise InvalidArgument(f"input '{name}' needs a 'shape' list of integers")
        count = element_count(name, shape)
        size = _parameters(item, f"input '{name}'").get("binary_data_size")
        if size is not None:
            if "data" in item:
                raise InvalidArgument(f"input '{name}' has both 'data' and 'binary_data_size'")
            if not has_binary:
                raise InvalidArgument(
                    f"input '{name}' has 'binary_data_size' but the request has no "
                    "Inference-Header-Content-Length header"
                )
            if type(size) is not int or size < 0:
                raise InvalidArgument(f"input '{name}': 'binary_data_size' must be a non-negative integer")
            if offset + size > len(binary):
                raise InvalidArgument(
                    f"input '{name}' needs {size} bytes of binary data at offset {offset} but the binary "
                    f"part of the body has only {len(binary)} bytes"
                )
            array = tensor_from_raw(name, datatype, shape, binary[offset : offset + size])
            offset += size
        else:
            if "data" not in item:
                raise InvalidArgument(f"input '{name}' has neither 'data' nor a 'binary_data_size' parameter")
            array = _from_json(name, datatype, shape, count, item["data"])
        inputs[name] = DecodedInput(datatype, array)
    if offset != len(binary):
        raise InvalidArgument(
            f"the binary part of the body has {len(binary)} bytes but the inputs' binary_data_size "
            f"add up to {offset}"
        )
    return inputs


def _from_json(name: str, datatype: str, shape: list[int], count: int, data: Any) -> np.ndarray:
    """JSON values (flat or nested) -> an array of ``shape``; strict about value kinds."""
    dtype = numpy_dtype(datatype)
    try:
        if datatype == BYTES:
            array = _bytes_from_json(name, data)
        else:
            # Infer first, then convert: numpy would silently turn "1.5" or 1.5 into a number of any dtype.
            inferred = np.asarray(data)
            kind = inferred.dtype.kind
            if dtype.kind in "iu" and kind in "fO" and _all_ints(data):
                # Integers beyond int64 next to others make numpy infer float64 (or object): convert
                # directly, which raises OverflowError for values out of range.
                inferred = np.array(data, dtype=dtype)
                kind = dtype.kind
            allowed = "b" if dtype.kind == "b" else ("iu" if dtype.kind in "iu" else "biuf")
            if kind not in allowed and inferred.size:
                raise InvalidArgument(
                    f"input '{name}' of datatype {datatype} holds {_kind_text(kind)} values"
                )
            if dtype.kind in "iu" and inferred.size:
                info = np.iinfo(dtype)
                if inferred.min() < info.min or inferred.max() > info.max:
                    raise InvalidArgument(f"input '{name}' holds values out of the range of {datatype}")
            array = inferred.astype(dtype, copy=False)
    except OverflowError:
        raise InvalidArgument(f"input '{name}' holds values out of the range of {datatype}") from None
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(f"input '{name}' has malformed data for datatype {datatype}: {exc}") from None
    if array.size != count:
        raise InvalidArgument(
            f"input '{name}' has {array.size} elements in 'data' but shape "
            f"[{','.join(str(d) for d in shape)}] needs {count}"
        )
    return array.reshape(shape)


def _all_ints(data: Any) -> bool:
    flat: list[Any] = []
    _flatten(data, flat)
    return all(type(item) is int for item in flat)


def _bytes_from_json(name: str, data: Any) -> np.ndarray:
    flat: list[Any] = []
    _flatten(data, flat)
    out = np.empty(len(flat), dtype=STRING)
    for index, item in enumerate(flat):
        if not isinstance(item, str):
            raise InvalidArgument(f"input '{name}' of datatype BYTES holds a non-string value: {item!r}")
        out[index] = item.encode()
    return out


def _flatten(data: Any, into: list[Any]) -> None:
    if type(data) is list:
        for item in data:
            _flatten(item, into)
    else:
        into.append(data)


def _kind_text(kind: str) -> str:
    return {"b": "boolean", "i": "integer", "u": "integer", "f": "floating-point", "U": "string"}.get(
        kind, "mixed or non-numeric"
    )


def _requested_outputs(raw_outputs: Any) -> list[RequestedOutput]:
    if raw_outputs is None:
        return []
    if type(raw_outputs) is not list:
        raise InvalidArgument("'outputs' must be a list")
    outputs: list[RequestedOutput] = []
    for position, item in enumerate(raw_outputs):
        if type(item) is not dict or not isinstance(item.get("name"), str):
            raise InvalidArgument(f"outputs[{position}] must be an object with a 'name'")
        name = item["name"]
        parameters = _parameters(item, f"output '{name}'")
        binary = parameters.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise InvalidArgument(f"output '{name}': parameter 'binary_data' must be a boolean")
        if parameters.get("classification"):
            raise InvalidArgument(f"output '{name}': the 'classification' extension is not supported")
        outputs.append(RequestedOutput(name, binary))
    return outputs


# -- responses -----------------------------------------------------------------------------------------------


def encode_infer_response(
    model: str,
    version: int,
    request_id: str,
    outputs: Mapping[str, np.ndarray],
    order: Sequence[str],
    binary: set[str],
) -> tuple[bytes, int | None]:
    """The response body and, when some outputs are binary, the length of its JSON part."""
    described: list[dict[str, Any]] = []
    raw_parts: list[bytes] = []
    for name in order:
        array = outputs[name]
        if array.dtype.kind in "US":  # a runtime that returns numpy strings: carry them as BYTES
            array = array.astype(STRING)
        entry: dict[str, Any] = {"name": name, "datatype": datatype_name(array.dtype), "shape": array.shape}
        if name in binary:
            raw = tensor_to_raw(array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            raw_parts.append(raw)
        else:
            entry["data"] = _json_data(name, array)
        described.append(entry)
    document: dict[str, Any] = {"model_name": model, "model_version": str(version)}
    if request_id:
        document["id"] = request_id
    document["outputs"] = described
    head = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not raw_parts:
        return head, None
    return b"".join([head, *raw_parts]), len(head)


def _json_data(name: str, array: np.ndarray) -> Any:
    if array.dtype == STRING:
        try:
            return [item.decode() if isinstance(item, bytes) else str(item) for item in array.ravel()]
        except UnicodeDecodeError:
            raise InvalidArgument(
                f"output '{name}' holds bytes that are not UTF-8 text; request it with the "
                "'binary_data' parameter"
            ) from None
    flat = array.ravel()
    if not flat.dtype.isnative:
        flat = flat.astype(flat.dtype.newbyteorder("="))
    return flat
