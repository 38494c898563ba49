"""TF Serving's REST API, independent of the HTTP server: (method, path, body) → (status, JSON body).

Requests whose model call is cheap enough to run inline are answered synchronously, without creating a
task or a future; the HTTP protocol awaits only the replies that need the inference threads. Every error
is a ``ServingError`` mapped to TF Serving's HTTP status and ``{"error": ...}`` body here, at the edge.

``handle`` is also where REST requests are counted and timed (``metrics.RequestMetrics``) and written to
the access log: one place for TF Serving's and V2's paths. With neither on, it costs one attribute test.
Besides the model APIs it answers ``/healthz`` (live), ``/readyz`` (ready: see ``frontends.health``; else
503 naming what is not), the status page and the Prometheus path.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

import orjson

from modelserve.codecs import tfserving_json as codec
from modelserve.core.inference import InferenceService, ModelSpec, PreparedCall
from modelserve.core.signature import CLASSIFY_METHOD, REGRESS_METHOD
from modelserve.errors import InvalidArgument, NotFound, ServingError
from modelserve.frontends.health import Health, health_of
from modelserve.frontends.rest.routes import Route, match_route
from modelserve.frontends.rest.served_version import ROUTING_KEY, json_head, served_version
from modelserve.frontends.rest.server_status import server_status
from modelserve.frontends.rest.v2_handler import V2_REQUEST_HEADERS, V2Handler
from modelserve.logs import event
from modelserve.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from modelserve.metrics import RequestMetrics, ServerMetrics

log = logging.getLogger("modelserve.rest")
access_log = logging.getLogger("modelserve.access")

STATUS_PATH = "/modelserve/status"  # every version's state, error and memory, and the routes
LIVE_PATH, READY_PATH = "/healthz", "/readyz"  # Kubernetes probes (V2's are under /v2/health/)

# TF Serving's API names (its request_latency ``API`` label); V2 inference is its RPC's name.
_API_NAMES = {"predict": "Predict", "classify": "Classify", "regress": "Regress"}
_V2_INFER = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]*))?/infer")
_MAX_CACHED_PATHS = 4096
RequestLabels = tuple[str, str, str]  # model, version asked for ("" when none), API

Reply = tuple[int, bytes] | tuple[int, bytes, bytes]
"""HTTP status and JSON body; a third item gives raw header lines (each ``name: value`` plus CRLF, a content
type among them) that replace the JSON content type, for replies that are not JSON (V2 binary tensors)."""

NO_HEADERS: Mapping[bytes, bytes] = MappingProxyType({})
"""The request headers handed to ``handle`` when none of ``RestHandler.wanted_headers`` was sent."""

PendingReply = Coroutine[Any, Any, Reply]


@dataclass(frozen=True, slots=True)
class RestSettings:
    """Edge limits of the REST front-end."""

    max_body_bytes: int = 64 * 1024 * 1024
    timeout_seconds: float | None = 30.0
    cors: bool = False
    # Where Prometheus scrapes (--monitoring_config_file); None: not exposed, as in TF Serving.
    metrics_path: str | None = None
    access_log: bool = False  # one line per request on the "modelserve.access" logger (--access_log)


def error_reply(error: ServingError) -> Reply:
    return error.http_status, codec.encode_error(error.message)


def failed_reply(error: BaseException | None) -> Reply:
    """The reply to a pending request that ended without one: cancelled at the drain deadline (``None`` or
    ``CancelledError``: 503), or an unexpected exception (500). The HTTP server sends it and the metrics
    count it, so both always agree."""
    if error is None or isinstance(error, asyncio.CancelledError):
        return 503, codec.encode_error("The server is shutting down")
    return 500, codec.encode_error(f"Internal error: {error}")


def body_too_large_reply(limit: int) -> Reply:
    return 413, codec.encode_error(
        f"Request body too large: the limit is {limit} bytes (--max_request_body_bytes)"
    )


class RestHandler:
    """Stateless apart from its reference to the core; one instance serves every connection."""

    # Request headers (lower-case) the HTTP server collects for ``handle``; it ignores every other one.
    wanted_headers: frozenset[bytes] = V2_REQUEST_HEADERS | {ROUTING_KEY}

    def __init__(
        self,
        service: InferenceService,
        settings: RestSettings | None = None,
        metrics: ServerMetrics | None = None,
        health: Health | None = None,
    ) -> None:
        self.service = service
        self.settings = settings or RestSettings()
        self.health = health_of(service.manager, health)
        self._metrics = metrics
        self._metrics_head = f"content-type: {METRICS_CONTENT_TYPE}\r\n".encode()
        self._v2 = V2Handler(service, self.settings.timeout_seconds, self.health)
        # Requests are counted only where they can be scraped.
        self._requests: RequestMetrics | None = (
            metrics.requests if metrics is not None and self.settings.metrics_path else None
        )
        self._observed = self._requests is not None or self.settings.access_log
        self._labels: dict[str, RequestLabels | None] = {}

    def handle(
        self, method: str, path: str, body: bytes, headers: Mapping[bytes, bytes] = NO_HEADERS
    ) -> Reply | PendingReply:
        """A reply now, or a coroutine producing it (only when the model runs on the inference threads).

        ``headers`` holds the ``wanted_headers`` the request sent, keyed by lower-case name.
        """
        if not self._observed:
            return self._answer(method, path, body, headers)
        started = time.perf_counter()
        reply = self._answer(method, path, body, headers)
        if isinstance(reply, tuple):
            self._done(method, path, reply, started)
            return reply
        return self._observe_later(method, path, reply, started)

    async def _observe_later(self, method: str, path: str, pending: PendingReply, started: float) -> Reply:
        requests = self._requests
        if requests is not None:
            requests.in_flight["rest"] += 1
        try:
            reply = await pending
        except BaseException as error:
            self._done(method, path, failed_reply(error), started)  # what the HTTP server answers
            raise
        finally:
            if requests is not None:
                requests.in_flight["rest"] -= 1
        self._done(method, path, reply, started)
        return reply

    def _done(self, method: str, path: str, reply: Reply, started: float) -> None:
        """Count a request answered by a model API, and write its access log line."""
        seconds = time.perf_counter() - started
        requests = self._requests
        if requests is not None and method == "POST":
            try:
                labels = self._labels[path]
            except KeyError:
                labels = self._request_labels(path)
            if labels is not None:
                model, version, api = labels
                if len(reply) == 3:
                    version = served_version(reply[2]) or version
                elif reply[0] >= 400:
                    version = ""  # no version answered: the one asked for would let clients add series
                requests.observe(model, version, api, "rest", str(reply[0]), seconds)
        if self.settings.access_log:
            event(
                access_log,
                "request",
                method=method,
                path=path,
                status=reply[0],
                duration_ms=round(seconds * 1000, 3),
                bytes=len(reply[1]),
            )

    def _request_labels(self, path: str) -> RequestLabels | None:
        """Model, version and API of an inference path (None: not one), cached per path."""
        labels: RequestLabels | None = None
        v2 = _V2_INFER.fullmatch(path)
        if v2 is not None:
            labels = (v2.group(1), v2.group(2) or "", "ModelInfer")
        else:
            try:
                route = match_route("POST", path)
            except ServingError:
                route = None
            if route is not None and route.method in _API_NAMES:
                version = "" if route.spec.version is None else str(route.spec.version)
                labels = (route.spec.name, version, _API_NAMES[route.method])
        if len(self._labels) < _MAX_CACHED_PATHS:
            self._labels[path] = labels
        return labels

    def _answer(
        self, method: str, path: str, body: bytes, headers: Mapping[bytes, bytes]
    ) -> Reply | PendingReply:
        try:
            return self._dispatch(method, path, body, headers)
        except ServingError as exc:
            return error_reply(exc)
        except (RecursionError, ValueError) as exc:
            # Decoding limits of Python itself: JSON nested too deep, integers with too many digits.
            return 400, codec.encode_error(f"JSON Parse error: {type(exc).__name__}: {exc}")
        except Exception as exc:  # never let one request take the server down
            log.exception("unhandled error on %s %s", method, path)
            return 500, codec.encode_error(f"Internal error: {type(exc).__name__}: {exc}")

    def _dispatch(
        self, method: str, path: str, body: bytes, headers: Mapping[bytes, bytes]
    ) -> Reply | PendingReply:
        route = match_route(method, path)
        if route is None:
            # V2 paths never match TF Serving's patterns, so the TF Serving fast path pays nothing here.
            if path[:4] == "/v2/" or path == "/v2":
                return self._v2.handle(method, path, body, headers)
            if path == LIVE_PATH and method in ("GET", "HEAD"):
                return 200, b'{"status":"ok"}'
            if path == READY_PATH and method in ("GET", "HEAD"):
                return self._readiness()
            if path == STATUS_PATH and method in ("GET", "HEAD"):
                return 200, orjson.dumps(server_status(self.service.manager))
            if path == self.settings.metrics_path and self._metrics is not None and method in ("GET", "HEAD"):
                return 200, self._metrics.render(), self._metrics_head
            if path[:4].lower() == "/v1/":
                raise InvalidArgument(f"Malformed request: {method} {path}")
            raise NotFound(f"Not found: {method} {path}")
        key = headers.get(ROUTING_KEY)
        if key is not None:
            route = Route(route.method, replace(route.spec, routing_key=key.decode("latin-1")))
        if route.method == "predict":
            return self._predict(route.spec, body)
        if route.method in ("classify", "regress"):
            return self._classify_or_regress(route, body)
        if route.method == "metadata":
            return 200, self._metadata(route.spec)
        return 200, self._status(route.spec)

    def _readiness(self) -> Reply:
        not_ready = self.health.not_ready()
        if not_ready:
            return 503, orjson.dumps({"status": "not ready", "not_ready": not_ready})
        unavailable = self.health.unavailable()  # models added by a reload, not loaded (yet)
        if unavailable:
            return 200, orjson.dumps({"status": "ready", "unavailable": unavailable})
        return 200, b'{"status":"ready"}'

    # -- predict ---------------------------------------------------------------------------------

    def _predict(self, spec: ModelSpec, body: bytes) -> Reply | PendingReply:
        request = codec.parse_predict_body(body)
        handle = self.service.handle(spec)
        deferred = False
        try:
            signature = handle.signature(request.signature_name)
            inputs = codec.decode_predict_inputs(request, signature)
            call = self.service.prepare(handle, signature, inputs)
            if call.inline:
                outputs = self.service.run_inline(call)
                return (
                    200,
                    codec.encode_predict_response(outputs, request.row_format),
                    json_head(handle.version),
                )
            deferred = True  # the coroutine below (then service.run) now owns the handle
            return self._predict_later(call, request.row_format)
        finally:
            if not deferred:
                handle.close()

    async def _predict_later(self, call: PreparedCall, row_format: bool) -> Reply:
        # service.run releases the call's handle when the model call returns.
        try:
            outputs = await self.service.run(call, self.settings.timeout_seconds)
            return 200, codec.encode_predict_response(outputs, row_format), json_head(call.handle.version)
        except ServingError as exc:
            return error_reply(exc)

    # -- classify / regress ----------------------------------------------------------------------

    def _classify_or_regress(self, route: Route, body: bytes) -> PendingReply:
        request = codec.parse_classify_regress_body(body)
        classify = route.method == "classify"
        expected_method = CLASSIFY_METHOD if classify else REGRESS_METHOD
        handle = self.service.handle(route.spec)
        try:
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
            call = self.service.prepare(handle, signature, {input_name: codec.examples_to_tensor(request)})
        except BaseException:
            handle.close()
            raise
        # The coroutine (then service.run) owns the handle from here.
        return self._classify_or_regress_later(call, classify, len(request.serialized))

    async def _classify_or_regress_later(
        self, call: PreparedCall, classify: bool, num_examples: int
    ) -> Reply:
        try:
            outputs = await self.service.run(call, self.settings.timeout_seconds)
            head = json_head(call.handle.version)
            if classify:
                body = codec.encode_classify_response(
                    outputs.get("classes"), outputs.get("scores"), num_examples
                )
                return 200, body, head
            if "outputs" not in outputs:
                raise InvalidArgument("Expected output Tensor 'outputs' in the regression signature")
            return 200, codec.encode_regress_response(outputs["outputs"], num_examples), head
        except ServingError as exc:
            return error_reply(exc)

    # -- status / metadata -----------------------------------------------------------------------

    def _status(self, spec: ModelSpec) -> bytes:
        statuses = self.service.manager.statuses(spec.name, spec.version, spec.label)
        return codec.encode_model_status(statuses)

    def _metadata(self, spec: ModelSpec) -> bytes:
        with self.service.handle(spec) as handle:
            return codec.encode_model_metadata(handle.model, handle.version, handle.servable.signatures)
