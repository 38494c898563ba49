"""The framework-free core: routing, the handler exchange and the error mapping, driven by a fake upstream.

No processes, no sockets: a plan is driven with a recording `execute`, sync and async, as the WSGI and ASGI
apps drive it with the real upstreams.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest

from modelserve.client import ModelServerError
from modelserve.errors import Code
from modelserve.gateway.handler import Handler, HttpError, ModelCall, Request, Response
from modelserve.gateway.pipeline import (
    CheckReady,
    Gateway,
    Op,
    Predict,
    Readiness,
    Reply,
    drive,
    drive_async,
)

READY = Readiness(True)


class FakeUpstream:
    """Answers every Predict with ``outputs`` (or raises ``error``); records the operations it ran."""

    def __init__(
        self,
        outputs: dict[str, np.ndarray] | None = None,
        error: Exception | None = None,
        readiness: Readiness = READY,
    ) -> None:
        self.outputs = outputs if outputs is not None else {"y": np.array([[1.5, 2.5]], np.float32)}
        self.error = error
        self.readiness = readiness
        self.ops: list[Op] = []

    def execute(self, op: Op) -> Any:
        self.ops.append(op)
        if isinstance(op, Predict):
            if self.error is not None:
                raise self.error
            return self.outputs
        if isinstance(op, CheckReady):
            return self.readiness
        raise AssertionError(op)

    async def execute_async(self, op: Op) -> Any:
        await asyncio.sleep(0)
        return self.execute(op)


def make_handler(
    preprocess: Callable[[Request], Any] | None = None,
    postprocess: Callable[[Request, dict[str, np.ndarray]], Any] | None = None,
    **defaults: Any,
) -> Handler:
    return Handler(
        name="test_handler",
        model="m",
        preprocess=preprocess or (lambda request: {"x": np.asarray(request.json()["x"], np.float32)}),
        postprocess=postprocess or (lambda request, outputs: {"y": outputs["y"]}),
        **defaults,
    )


def request(method: str = "POST", path: str = "/predict", body: bytes = b'{"x": [[1, 2]]}') -> Request:
    return Request(method=method, path=path, query={}, headers={}, body=body)


def run(handler: Handler, req: Request, upstream: FakeUpstream | None = None) -> tuple[Reply, Any]:
    """Drive the plan both ways; the replies must agree. Returns the reply and its JSON body (or None)."""
    gateway = Gateway(handler, "sync")
    upstream = upstream or FakeUpstream()
    reply = drive(gateway.respond(req), upstream.execute)
    again = asyncio.run(drive_async(gateway.respond(req), upstream.execute_async))
    assert again == reply
    document = orjson.loads(reply.body) if reply.content_type == "application/json" else None
    return reply, document


def test_a_request_runs_preprocess_the_model_and_postprocess() -> None:
    upstream = FakeUpstream()
    reply, document = run(make_handler(version=3, signature="sig"), request(), upstream)
    assert (reply.status, document) == (200, {"y": [[1.5, 2.5]]})
    assert ("content-type", "application/json") in reply.header_list()
    call = upstream.ops[0].call  # type: ignore[union-attr]
    assert (call.model, call.version, call.signature, call.label) == ("m", 3, "sig", None)
    np.testing.assert_array_equal(call.inputs["x"], [[1, 2]])


def test_a_model_call_from_preprocess_overrides_the_module_defaults() -> None:
    handler = make_handler(
        preprocess=lambda r: ModelCall({"x": np.zeros(2)}, model="other", label="canary"), version=None
    )
    upstream = FakeUpstream()
    run(handler, request(), upstream)
    call = upstream.ops[0].call  # type: ignore[union-attr]
    assert (call.model, call.label) == ("other", "canary")


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ({"a": np.arange(3, dtype=np.int64)}, {"a": [0, 1, 2]}),
        (
            {"a": np.arange(6, dtype=np.float32).reshape(2, 3).T},
            {"a": [[0, 3], [1, 4], [2, 5]]},
        ),  # not C order
        ({"a": np.float32(0.5), "b": np.int64(7), "c": np.bool_(True)}, {"a": 0.5, "b": 7, "c": True}),
        ({"a": np.array([b"x", b"y"], dtype=object)}, {"a": ["x", "y"]}),
        ([1, "two", None], [1, "two", None]),
    ],
)
def test_numpy_results_are_json(result: Any, expected: Any) -> None:
    _, document = run(make_handler(postprocess=lambda r, o: result), request())
    assert document == expected


def test_a_response_from_postprocess_is_sent_as_it_is() -> None:
    response = Response("<p>hi</p>", status=201, headers={"X-Id": "7"}, content_type="text/html")
    reply, _ = run(make_handler(postprocess=lambda r, o: response), request())
    assert (reply.status, reply.body, reply.content_type) == (201, b"<p>hi</p>", "text/html")
    assert ("x-id", "7") in reply.header_list()
    assert reply.status_line == "201 Created"


def raise_(error: Exception) -> Any:
    raise error


@pytest.mark.parametrize(
    ("handler", "status", "message"),
    [
        (make_handler(preprocess=lambda r: raise_(HttpError(422, "no x"))), 422, "no x"),
        (make_handler(postprocess=lambda r, o: raise_(HttpError(409, "late"))), 409, "late"),
        (make_handler(), 400, None),  # the body is not JSON (below): Request.json() says why
        (make_handler(preprocess=lambda r: raise_(KeyError("x"))), 500, "handler error: KeyError: 'x'"),
        (
            make_handler(postprocess=lambda r, o: raise_(ValueError("bad"))),
            500,
            "handler error: ValueError: bad",
        ),
        (make_handler(postprocess=lambda r, o: {"s": {1, 2}}), 500, None),  # a set is not JSON
        (make_handler(preprocess=lambda r: [1, 2]), 500, None),  # neither a dict nor a ModelCall
        (make_handler(preprocess=lambda r: raise_(HttpError(200, "ok?"))), 500, None),  # not an error status
    ],
)
def test_handler_failures(handler: Handler, status: int, message: str | None) -> None:
    body = b"{not json" if status == 400 else b'{"x": [[1]]}'
    reply, document = run(handler, request(body=body))
    assert reply.status == status, document
    assert set(document) == {"error"}
    if message is not None:
        assert document["error"] == message
    if status == 500:
        assert document["error"].startswith("handler error: ")


@pytest.mark.parametrize(
    ("code", "http_status", "expected"),
    [
        (Code.INVALID_ARGUMENT, 400, 400),
        (Code.NOT_FOUND, None, 404),
        (Code.RESOURCE_EXHAUSTED, 429, 429),
        (Code.RESOURCE_EXHAUSTED, 413, 413),
        (Code.UNAVAILABLE, None, 503),
        (Code.DEADLINE_EXCEEDED, None, 504),
        (Code.INTERNAL, 500, 502),
    ],
)
def test_model_server_errors_keep_their_message(code: Code, http_status: int | None, expected: int) -> None:
    upstream = FakeUpstream(error=ModelServerError(code, "the server's words", http_status))
    reply, document = run(make_handler(), request(), upstream)
    assert (reply.status, document) == (expected, {"error": "the server's words"})


def test_reserved_paths_and_methods() -> None:
    handler = make_handler()
    reply, document = run(handler, request("GET", "/healthz", b""))
    assert (reply.status, document) == (200, {"status": "ok"})
    reply, _ = run(handler, request("POST", "/healthz"))
    assert reply.status == 405 and ("allow", "GET") in reply.header_list()
    reply, document = run(handler, request("GET", "/predict", b""))
    assert reply.status == 405 and ("allow", "POST") in reply.header_list() and "error" in document
    reply, _ = run(handler, request("PUT", "/"))
    assert reply.status == 405


def test_readiness_asks_for_the_handlers_model() -> None:
    handler = make_handler(label="stable")
    upstream = FakeUpstream()
    reply, document = run(handler, request("GET", "/readyz", b""), upstream)
    assert (reply.status, document) == (200, {"status": "ready", "model": "m"})
    assert upstream.ops[0] == CheckReady("m", None, "stable")
    down = FakeUpstream(readiness=Readiness(False, "model server: UNAVAILABLE: refused"))
    reply, document = run(handler, request("GET", "/readyz", b""), down)
    assert reply.status == 503
    assert document == {"status": "not ready", "model": "m", "error": "model server: UNAVAILABLE: refused"}
