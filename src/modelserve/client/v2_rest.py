"""The V2 REST API (``/v2/models/...``) as plans, with Triton's binary tensor data extension by default.

In binary mode every tensor travels as raw little-endian bytes after the JSON header (one ``tobytes`` per
input, one ``np.frombuffer`` per output: no per-element work, exact values), the header's length in
``Inference-Header-Content-Length``. JSON mode (``binary=False``) writes ``data`` arrays with orjson, for
servers without the extension; BYTES tensors must then be UTF-8.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import numpy as np
import orjson

from modelserve.client.calls import HttpRequest, HttpResponse, ModelRef, Plan
from modelserve.client.errors import ModelServerError
from modelserve.client.metadata import ModelMetadata, ModelStatus, v2_metadata, v2_status
from modelserve.client.protocol import NOT_READY, Api, Inputs, codec_error
from modelserve.codecs.v2_binary import tensor_from_raw, tensor_to_raw
from modelserve.codecs.v2_datatypes import BYTES, datatype_name, numpy_dtype
from modelserve.errors import Code, ServingError

_HEADER_LENGTH = "inference-header-content-length"
_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def model_path(ref: ModelRef) -> str:
    """``/v2/models/{name}[/versions/{v}]``; V2 has no labels and serves only the default signature."""
    check_v2(ref)
    path = "/v2/models/" + quote(ref.name, safe="")
    return path if ref.version is None else f"{path}/versions/{ref.version}"


def check_v2(ref: ModelRef) -> None:
    """V2 addresses a model by name and version only."""
    if ref.label is not None:
        raise ValueError("the V2 protocol has no version labels; use version= or protocol='tfserving'")
    if ref.signature_name not in (None, "serving_default"):
        raise ValueError("the V2 protocol serves only the default signature; use protocol='tfserving'")


def datatype(name: str, array: np.ndarray) -> str:
    """The V2 datatype of an input array; INVALID_ARGUMENT when V2 has none (complex numbers)."""
    found = datatype_name(array.dtype)
    if found == "INVALID":
        raise ModelServerError(Code.INVALID_ARGUMENT, f"input '{name}': V2 has no datatype for {array.dtype}")
    return found


def _json_data(name: str, array: np.ndarray) -> Any:
    if array.dtype.kind != "O":
        return np.ascontiguousarray(array.reshape(-1), dtype=array.dtype.newbyteorder("="))
    try:
        return [item.decode("utf-8") if isinstance(item, bytes) else str(item) for item in array.reshape(-1)]
    except UnicodeDecodeError:
        raise ModelServerError(
            Code.INVALID_ARGUMENT, f"input '{name}' holds bytes that are not UTF-8: send it binary"
        ) from None


def encode_infer(
    arrays: dict[str, np.ndarray], output_filter: Sequence[str] | None, binary: bool
) -> tuple[bytes, dict[str, str]]:
    """The request body (JSON header, then raw tensors in input order) and its headers."""
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, array in arrays.items():
        tensor: dict[str, Any] = {"name": name, "shape": list(array.shape), "datatype": datatype(name, array)}
        if binary:
            blob = tensor_to_raw(array)
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = _json_data(name, array)
        tensors.append(tensor)
    document: dict[str, Any] = {"inputs": tensors}
    if output_filter:
        document["outputs"] = [
            {"name": name, "parameters": {"binary_data": binary}} for name in output_filter
        ]
    elif binary:
        document["parameters"] = {"binary_data_output": True}
    header = orjson.dumps(document, option=_NUMPY)
    if not binary:
        return header, {"content-type": "application/json"}
    headers = {"content-type": "application/octet-stream", _HEADER_LENGTH: str(len(header))}
    return header + b"".join(blobs), headers


def decode_infer(reply: HttpResponse) -> dict[str, np.ndarray]:
    """The outputs of an infer reply, binary (zero-copy views on the body) or JSON."""
    length = reply.headers.get(_HEADER_LENGTH)
    body = memoryview(reply.body)
    header_end = int(length) if length is not None else len(body)
    document = orjson.loads(body[:header_end])
    offset = header_end
    outputs: dict[str, np.ndarray] = {}
    try:
        for output in document.get("outputs", []):
            name, kind, shape = output["name"], output["datatype"], output["shape"]
            size = (output.get("parameters") or {}).get("binary_data_size")
            if size is not None:
                outputs[name] = tensor_from_raw(name, kind, shape, body[offset : offset + size])
                offset += size
            elif kind == BYTES:
                values = [item.encode("utf-8") for item in output["data"]]
                array = np.empty(len(values), dtype=object)
                array[:] = values
                outputs[name] = array.reshape(shape)
            else:
                outputs[name] = np.asarray(output["data"], dtype=numpy_dtype(kind)).reshape(shape)
    except ServingError as error:
        raise codec_error(error) from None
    return outputs


class V2Rest(Api):
    """The V2 REST API."""

    def __init__(self, binary: bool = True) -> None:
        super().__init__()
        self.binary = binary

    def predict(
        self, ref: ModelRef, inputs: Inputs, output_filter: Sequence[str] | None
    ) -> Plan[dict[str, np.ndarray]]:
        path = model_path(ref) + "/infer"
        arrays = yield from self.named_inputs(ref, inputs)
        body, headers = encode_infer(arrays, output_filter, self.binary)
        reply: HttpResponse = yield HttpRequest("POST", path, body, headers)
        return decode_infer(reply)

    def fetch_metadata(self, ref: ModelRef) -> Plan[ModelMetadata]:
        reply: HttpResponse = yield HttpRequest("GET", model_path(ref), idempotent=True)
        document = orjson.loads(reply.body)

        def tensors(key: str) -> list[tuple[str, str, list[int]]]:
            return [(t["name"], t["datatype"], t["shape"]) for t in document.get(key, [])]

        return v2_metadata(
            document["name"],
            document.get("versions", []),
            document.get("platform", ""),
            tensors("inputs"),
            tensors("outputs"),
        )

    def model_status(self, ref: ModelRef) -> Plan[ModelStatus]:
        metadata = yield from self.model_metadata(ref)
        return v2_status(metadata)

    def is_ready(self, ref: ModelRef | None) -> Plan[bool]:
        path = "/v2/health/ready" if ref is None else model_path(ref) + "/ready"
        try:
            yield HttpRequest("GET", path, idempotent=True)
        except ModelServerError as error:
            if error.code in NOT_READY:
                return False
            raise
        return True
