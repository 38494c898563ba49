"""TF Serving's REST API (``/v1/models/...``) as plans: columnar ``inputs`` JSON in, ``outputs`` JSON back.

JSON carries no dtypes, so a predict first fetches the signature once per model/version/signature (cached)
to name a single unnamed output and give each output its dtype; float32 values then round-trip exactly
(TF Serving writes up to 9 significant digits, orjson writes the shortest text that reads back the same).
Strings go out as JSON strings, or as ``{"b64": ...}`` when they are not UTF-8. TF Serving's REST API has
no output filter: the client receives every output and keeps the ones asked for.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import numpy as np
import orjson

from modelserve.client.calls import HttpRequest, HttpResponse, ModelRef, Plan
from modelserve.client.errors import ModelServerError
from modelserve.client.metadata import ModelMetadata, ModelStatus, TensorInfo, tf_metadata, tf_status
from modelserve.client.protocol import NOT_READY, Api, Inputs, as_array, select
from modelserve.errors import Code

_JSON = {"content-type": "application/json"}
_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def model_path(ref: ModelRef) -> str:
    """``/v1/models/{name}[/versions/{v} | /labels/{l}]``."""
    path = "/v1/models/" + quote(ref.name, safe="")
    if ref.version is not None:
        return f"{path}/versions/{ref.version}"
    if ref.label is not None:
        return f"{path}/labels/{quote(ref.label, safe='')}"
    return path


def loads(body: bytes) -> Any:
    """Parse a reply; TF Serving writes NaN and infinities as bare ``NaN``/``Infinity``, which only the
    standard library reads."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            return json.loads(body)
        except ValueError as error:
            raise ModelServerError(Code.DATA_LOSS, f"the server's reply is not JSON: {error}") from None


# -- tensors <-> JSON ----------------------------------------------------------------------------------------


def _string_item(item: Any) -> Any:
    if isinstance(item, bytes):
        try:
            return item.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(item).decode("ascii")}
    return item if isinstance(item, str) else str(item)


def json_tensor(name: str, value: Any) -> Any:
    """A tensor as a JSON-ready value: numeric arrays go to orjson as they are (no per-element Python)."""
    array = as_array(name, value)
    if array.dtype.kind == "O":
        flat = np.empty(array.size, dtype=object)
        flat[:] = [_string_item(item) for item in array.reshape(-1).tolist()]
        return flat.reshape(array.shape).tolist()
    if array.dtype.kind == "c":
        raise ModelServerError(
            Code.INVALID_ARGUMENT, f"input '{name}': JSON has no complex numbers; use gRPC"
        )
    if array.ndim == 0:
        return array.item()
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("="))


def _bytes_item(item: Any) -> bytes:
    if isinstance(item, dict) and "b64" in item:
        return base64.b64decode(item["b64"])
    return item.encode("utf-8") if isinstance(item, str) else str(item).encode("utf-8")


def array_from_json(value: Any, info: TensorInfo | None) -> np.ndarray:
    """A reply tensor with the signature's dtype (strings as an object array of ``bytes``)."""
    dtype = info.dtype if info is not None else None
    if dtype is not None and dtype.kind != "O":
        return np.asarray(value, dtype=dtype)
    array = np.array(value, dtype=object)
    if dtype is None and array.size and not isinstance(array.reshape(-1)[0], (str, dict)):
        return np.asarray(value)  # no signature entry: let numpy pick (float64, int64, bool)
    flat = array.reshape(-1)
    flat[:] = [_bytes_item(item) for item in flat.tolist()]
    return flat.reshape(array.shape)


def _named(value: Any, metadata: ModelMetadata) -> dict[str, Any] | None:
    """The reply's ``outputs`` keyed by name, or None when its layout does not fit the signature."""
    names = list(metadata.outputs)
    if len(names) == 1:  # one output: TF Serving writes the bare value
        return {names[0]: value}
    if isinstance(value, dict) and set(value) <= set(names):
        return value
    return None


# -- the API -------------------------------------------------------------------------------------------------


class TfServingRest(Api):
    """TF Serving's REST API; ``/v2/health/ready`` (modelserve's) answers the whole-server readiness probe."""

    def predict(
        self, ref: ModelRef, inputs: Inputs, output_filter: Sequence[str] | None
    ) -> Plan[dict[str, np.ndarray]]:
        metadata = yield from self.signature(ref)
        if isinstance(inputs, Mapping):
            payload: Any = {name: json_tensor(name, value) for name, value in inputs.items()}
        else:
            payload = json_tensor("inputs", inputs)
        document: dict[str, Any] = {"inputs": payload}
        if ref.signature_name:
            document["signature_name"] = ref.signature_name
        reply: HttpResponse = yield HttpRequest(
            "POST", model_path(ref) + ":predict", orjson.dumps(document, option=_NUMPY), _JSON
        )
        outputs = loads(reply.body).get("outputs")
        named = _named(outputs, metadata)
        if named is None:  # a new version changed the signature: learn it again and read the reply with it
            self.forget(ref)
            metadata = yield from self.model_metadata(ref)
            named = _named(outputs, metadata) or {}
        decoded = {name: array_from_json(value, metadata.outputs.get(name)) for name, value in named.items()}
        return select(decoded, output_filter)

    def fetch_metadata(self, ref: ModelRef) -> Plan[ModelMetadata]:
        reply: HttpResponse = yield HttpRequest("GET", model_path(ref) + "/metadata", idempotent=True)
        return tf_metadata(ref.name, loads(reply.body), ref.signature_name)

    def model_status(self, ref: ModelRef) -> Plan[ModelStatus]:
        reply: HttpResponse = yield HttpRequest("GET", model_path(ref), idempotent=True)
        return tf_status(ref.name, loads(reply.body))

    def is_ready(self, ref: ModelRef | None) -> Plan[bool]:
        try:
            if ref is None:
                yield HttpRequest("GET", "/v2/health/ready", idempotent=True)
                return True
            status = yield from self.model_status(ref)
        except ModelServerError as error:
            if error.code in NOT_READY:
                return False
            raise
        return status.available
