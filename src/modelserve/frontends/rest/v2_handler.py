"""The Open Inference Protocol (V2) REST API on the REST port, beside TF Serving's ``/v1`` API.

``RestHandler`` hands every ``/v2`` path here. Like the TF Serving handler, a request whose model call is
cheap enough runs inline and is answered synchronously; the rest return a coroutine. Errors are V2's
``{"error": "..."}`` with the HTTP status of the error taxonomy (unknown model 404, bad input 400).

Routes (Triton's, case-sensitive)::

    GET  /v2                                          server metadata
    GET  /v2/health/live | /v2/health/ready           200, or 400 when not ready (empty body)
    GET  /v2/models/{m}[/versions/{v}]                model metadata
    GET  /v2/models/{m}[/versions/{v}]/ready          200, or 400 when not ready (empty body)
    POST /v2/models/{m}[/versions/{v}]/infer          inference (JSON, or JSON + binary tensors)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Coroutine, Mapping
from dataclasses import replace
from typing import Any

import orjson

from modelserve.codecs import v2_json
from modelserve.codecs.v2_metadata import available_versions, model_metadata, server_metadata, v2_model_spec
from modelserve.core.inference import InferenceService, ModelSpec, PreparedCall
from modelserve.errors import InvalidArgument, NotFound, ServingError
from modelserve.frontends.health import Health, health_of
from modelserve.frontends.rest.served_version import ROUTING_KEY, json_head, version_line

log = logging.getLogger("modelserve.rest.v2")

# The same shapes as handler.Reply / PendingReply (that module imports this one).
V2Reply = tuple[int, bytes] | tuple[int, bytes, bytes]
PendingV2Reply = Coroutine[Any, Any, V2Reply]

HEADER_LENGTH = b"inference-header-content-length"
V2_REQUEST_HEADERS = frozenset({HEADER_LENGTH})
"""The request headers the V2 API reads (lower-case), collected for it by the HTTP server."""

_BINARY_FIELDS = b"content-type: application/octet-stream\r\ninference-header-content-length: "
_MODEL_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]*))?(?:/(ready|infer))?")
_EMPTY: V2Reply = (200, b"")
_NOT_READY: V2Reply = (400, b"")


def error_reply(error: ServingError) -> V2Reply:
    return error.http_status, v2_json.encode_error(error.message)


class V2Handler:
    """Stateless apart from its reference to the core; ``RestHandler`` owns one."""

    def __init__(
        self, service: InferenceService, timeout_seconds: float | None = 30.0, health: Health | None = None
    ) -> None:
        self.service = service
        self.timeout_seconds = timeout_seconds
        self.health = health_of(service.manager, health)

    def handle(
        self, method: str, path: str, body: bytes, headers: Mapping[bytes, bytes]
    ) -> V2Reply | PendingV2Reply:
        """A reply now, or a coroutine producing it (when the model runs on the inference threads)."""
        try:
            return self._dispatch(method, path, body, headers)
        except ServingError as exc:
            return error_reply(exc)
        except (RecursionError, ValueError) as exc:  # Python's own decoding limits
            return 400, v2_json.encode_error(f"malformed request: {type(exc).__name__}: {exc}")
        except Exception as exc:  # never let one request take the server down
            log.exception("unhandled error on %s %s", method, path)
            return 500, v2_json.encode_error(f"Internal error: {type(exc).__name__}: {exc}")

    def _dispatch(
        self, method: str, path: str, body: bytes, headers: Mapping[bytes, bytes]
    ) -> V2Reply | PendingV2Reply:
        if path in ("/v2", "/v2/"):
            _expect(method, "GET", path)
            return 200, orjson.dumps(server_metadata())
        if path == "/v2/health/live":
            _expect(method, "GET", path)
            return _EMPTY
        if path == "/v2/health/ready":
            _expect(method, "GET", path)
            return _EMPTY if self.health.ready() else _NOT_READY
        found = _MODEL_PATH.fullmatch(path)
        if found is None:
            raise NotFound(f"Not found: {method} {path}")
        name, version_text, action = found.groups()
        spec = v2_model_spec(name, version_text)
        key = headers.get(ROUTING_KEY)
        if key is not None:
            spec = replace(spec, routing_key=key.decode("latin-1"))
        if action == "infer":
            _expect(method, "POST", path)
            return self._infer(spec, body, headers)
        _expect(method, "GET", path)
        if action == "ready":
            return self._ready(spec)
        return 200, self._metadata(spec)

    # -- metadata and readiness ------------------------------------------------------------------

    def _metadata(self, spec: ModelSpec) -> bytes:
        with self.service.handle(spec) as handle:
            signature = handle.signature(None)
            versions = available_versions(self.service.manager.statuses(spec.name))
            metadata = model_metadata(handle.model, versions, handle.servable.platform, signature)
        return orjson.dumps(metadata)

    def _ready(self, spec: ModelSpec) -> V2Reply:
        try:
            self.service.handle(spec).close()
        except (NotFound, InvalidArgument):  # no such model, version or label
            return _NOT_READY
        return _EMPTY

    # -- inference -------------------------------------------------------------------------------

    def _infer(
        self, spec: ModelSpec, body: bytes, headers: Mapping[bytes, bytes]
    ) -> V2Reply | PendingV2Reply:
        request = v2_json.parse_infer_request(body, v2_json.parse_header_length(headers.get(HEADER_LENGTH)))
        handle = self.service.handle(spec)
        deferred = False
        try:
            signature = handle.signature(None)
            inputs = request.model_inputs(handle.model, signature)
            call = self.service.prepare(handle, signature, inputs, request.output_names)
            if call.inline:
                return _infer_reply(call, request, self.service.run_inline(call))
            deferred = True  # the coroutine below (then service.run) now owns the handle
            return self._infer_later(call, request)
        finally:
            if not deferred:
                handle.close()

    async def _infer_later(self, call: PreparedCall, request: v2_json.InferRequest) -> V2Reply:
        try:
            outputs = await self.service.run(call, self.timeout_seconds)
            return _infer_reply(call, request, outputs)
        except ServingError as exc:
            return error_reply(exc)


def _infer_reply(call: PreparedCall, request: v2_json.InferRequest, outputs: Mapping[str, Any]) -> V2Reply:
    body, header_length = v2_json.encode_infer_response(
        call.handle.model,
        call.handle.version,
        request.id,
        outputs,
        call.outputs,
        request.binary_outputs(call.outputs),
    )
    version = call.handle.version
    if header_length is None:
        return 200, body, json_head(version)
    return 200, body, _BINARY_FIELDS + str(header_length).encode() + b"\r\n" + version_line(version)


def _expect(method: str, allowed: str, path: str) -> None:
    if method != allowed:
        raise InvalidArgument(f"{method} is not allowed on {path}; use {allowed}")
