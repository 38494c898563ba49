"""TF Serving's REST API as a raw ASGI app: status, metadata, predict, classify, regress.

No web framework sits in the hot path: one regex match, one body read, the codec, the core. Every error is a
``ServingError`` mapped to TF Serving's HTTP status and ``{"error": ...}`` body here, at the edge.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from modelserve.codecs import tfserving_json as codec
from modelserve.core.inference import InferenceService, ModelSpec
from modelserve.core.signature import CLASSIFY_METHOD, REGRESS_METHOD
from modelserve.errors import InvalidArgument, NotFound, ServingError
from modelserve.frontends.rest.routes import Route, match_route

log = logging.getLogger("modelserve.rest")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON = (b"content-type", b"application/json")
_CORS = (
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"POST, GET"),
    (b"access-control-allow-headers", b"Content-Type"),
)


@dataclass(frozen=True, slots=True)
class RestSettings:
    """Edge limits of the REST front-end."""

    max_body_bytes: int = 64 * 1024 * 1024
    timeout_seconds: float | None = 30.0
    cors: bool = False


class BodyTooLarge(Exception):
    """The request body exceeds ``max_body_bytes`` (answered with 413, not a ServingError code)."""


class RestApp:
    """The ASGI callable; stateless apart from its references to the core."""

    def __init__(self, service: InferenceService, settings: RestSettings | None = None) -> None:
        self.service = service
        self.settings = settings or RestSettings()
        self._headers = [_JSON, *(_CORS if self.settings.cors else ())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method: str = scope["method"]
        path: str = scope["path"]
        try:
            if method == "OPTIONS" and self.settings.cors:
                await self._respond(send, 204, b"")
                return
            body = await self._read_body(scope, receive)
            status, payload = await self._dispatch(method, path, body)
        except BodyTooLarge:
            limit = self.settings.max_body_bytes
            status, payload = (
                413,
                codec.encode_error(
                    f"Request body too large: the limit is {limit} bytes (--max_request_body_bytes)"
                ),
            )
        except ServingError as exc:
            status, payload = exc.http_status, codec.encode_error(exc.message)
        except Exception as exc:  # never let one request take the server down
            log.exception("unhandled error on %s %s", method, path)
            status, payload = (
                500,
                codec.encode_error(f"Internal error: {type(exc).__name__}: {exc}"),
            )
        await self._respond(send, status, payload)

    async def _respond(self, send: Send, status: int, payload: bytes) -> None:
        await send({"type": "http.response.start", "status": status, "headers": self._headers})
        await send({"type": "http.response.body", "body": payload})

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.settings.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    if int(value) > limit:
                        raise BodyTooLarge
                except ValueError:
                    raise InvalidArgument("Content-Length header is not a number") from None
                break
        message = await receive()
        body: bytes = message.get("body", b"")
        if len(body) > limit:
            raise BodyTooLarge
        if not message.get("more_body", False):
            return body
        chunks = [body]
        size = len(body)
        while message.get("more_body", False):
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    async def _dispatch(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        route = match_route(method, path)
        if route is None:
            if path.lower().startswith("/v1/"):
                raise InvalidArgument(f"Malformed request: {method} {path}")
            raise NotFound(f"Not found: {method} {path}")
        if route.method == "predict":
            return 200, await self._predict(route.spec, body)
        if route.method in ("classify", "regress"):
            return 200, await self._classify_or_regress(route, body)
        if route.method == "metadata":
            return 200, self._metadata(route.spec)
        return 200, self._status(route.spec)

    async def _predict(self, spec: ModelSpec, body: bytes) -> bytes:
        request = codec.parse_predict_body(body)
        with self.service.handle(spec) as handle:
            signature = handle.signature(request.signature_name)
            inputs = codec.decode_predict_inputs(request, signature)
            outputs = await self.service.predict(
                handle, signature, inputs, timeout_seconds=self.settings.timeout_seconds
            )
        return codec.encode_predict_response(outputs, request.row_format)

    async def _classify_or_regress(self, route: Route, body: bytes) -> bytes:
        request = codec.parse_classify_regress_body(body)
        classify = route.method == "classify"
        expected_method = CLASSIFY_METHOD if classify else REGRESS_METHOD
        with self.service.handle(route.spec) as handle:
            signature = handle.signature(request.signature_name)
            if signature.method_name != expected_method:
                # TF Serving's wording (servables/tensorflow/classifier.cc / regressor.cc).
                kind = "classification" if classify else "regression"
                raise InvalidArgument(
                    f"Expected {kind} signature method_name to be {expected_method}. "
                    f"Was: {signature.method_name}"
                )
            if len(signature.inputs) != 1:
                raise InvalidArgument(
                    f"Expected one input Tensor in the {route.method} signature, "
                    f"found {len(signature.inputs)}"
                )
            input_name = next(iter(signature.inputs))
            examples = codec.examples_to_tensor(request)
            outputs = await self.service.predict(
                handle,
                signature,
                {input_name: examples},
                timeout_seconds=self.settings.timeout_seconds,
            )
        if classify:
            return codec.encode_classify_response(outputs.get("classes"), outputs.get("scores"))
        if "outputs" not in outputs:
            raise InvalidArgument("Expected output Tensor 'outputs' in the regression signature")
        return codec.encode_regress_response(outputs["outputs"])

    def _status(self, spec: ModelSpec) -> bytes:
        statuses = self.service.manager.statuses(spec.name, spec.version, spec.label)
        return codec.encode_model_status(statuses)

    def _metadata(self, spec: ModelSpec) -> bytes:
        with self.service.handle(spec) as handle:
            return codec.encode_model_metadata(handle.model, handle.version, handle.servable.signatures)
