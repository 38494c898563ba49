"""The gRPC edge: ``ServingError`` → gRPC status, the request deadline, and the A/B routing key.

``ServingError.code`` already is a gRPC canonical code number, so the mapping is by value and the message
goes to the client verbatim. Every servicer method is wrapped by `at_edge`, so no exception escapes as a
generic "Unexpected error" and one bad request never affects another. Inference methods use
`counted_at_edge` instead, which also counts and times each call on the servicer's ``requests``
(``metrics.RequestMetrics``; None: not counted) with the status the client got. V2's streaming
``ModelStreamInfer`` is not counted: one call carries many requests, each with its own status.

Servicer methods are *sync-first* (see ``transport``): a method returns its reply when it could answer on
the spot (a model cheap enough to run inline), or a coroutine when it must wait. The wrappers keep that
shape, so the fast path never creates a coroutine, and `then` chains a step onto either kind of result.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar, cast

import grpc  # type: ignore[import-untyped]

from modelserve.core.inference import ModelSpec
from modelserve.core.manager import ModelManager
from modelserve.errors import Code, ServingError
from modelserve.frontends.grpc.transport import AbortError, pending

log = logging.getLogger("modelserve.grpc")

_STATUS_BY_NUMBER: dict[int, Any] = {status.value[0]: status for status in grpc.StatusCode}

A = TypeVar("A")
B = TypeVar("B")
Servicer = TypeVar("Servicer")
Method = Callable[[Servicer, Any, Any], Any]
"""A servicer method: ``(self, request, context) -> reply | Awaitable[reply]``."""


def grpc_status(code: Code) -> Any:
    """The ``grpc.StatusCode`` with the same number as ``code``."""
    return _STATUS_BY_NUMBER.get(int(code), grpc.StatusCode.UNKNOWN)


def deadline_seconds(context: Any, default: float | None) -> float | None:
    """Seconds left of the caller's deadline (gRPC propagates it); the server default when none was set."""
    remaining = context.time_remaining()
    return default if remaining is None else max(remaining, 0.0)


def then(value: A | Awaitable[A], step: Callable[[A], B]) -> B | Awaitable[B]:
    """``step(value)`` now when ``value`` is ready, else a coroutine that awaits it first."""
    if pending(value):
        return _then(cast(Awaitable[A], value), step)
    return step(cast(A, value))


async def _then(value: Awaitable[A], step: Callable[[A], B]) -> B:
    return step(await value)


def _abort(exc: Exception, context: Any, name: str) -> None:
    """End the call with the status of ``exc``; returns only by raising."""
    if isinstance(exc, ServingError):
        context.abort(grpc_status(exc.code), exc.message)
    if isinstance(exc, AbortError):
        raise exc
    log.exception("unhandled error in %s", name, exc_info=exc)  # never let one request take the server down
    context.abort(grpc.StatusCode.INTERNAL, f"Internal error: {type(exc).__name__}: {exc}")


def at_edge(method: Method[Servicer]) -> Method[Servicer]:
    """Turn a servicer method's ``ServingError`` into its gRPC status, and anything else into INTERNAL."""
    name = method.__name__

    @functools.wraps(method)
    def wrapper(self: Servicer, request: Any, context: Any) -> Any:
        try:
            reply = method(self, request, context)
        except Exception as exc:
            _abort(exc, context, name)
        if pending(reply):
            return _awaited_at_edge(reply, context, name)
        return reply

    return wrapper


async def _awaited_at_edge(reply: Awaitable[Any], context: Any, name: str) -> Any:
    try:
        return await reply
    except Exception as exc:
        _abort(exc, context, name)


def _sent_code(context: Any) -> str:
    """The name of the status the call ended with (set by ``context.abort``)."""
    sent = context.code()
    if isinstance(sent, grpc.StatusCode):
        return str(sent.name)
    return grpc_status(Code(sent)).name if isinstance(sent, int) else "UNKNOWN"


def counted_at_edge(
    api: str, model_of: Callable[[Any], str], version_of: Callable[[Any], str]
) -> Callable[[Method[Servicer]], Method[Servicer]]:
    """`at_edge` that also counts the call as ``api`` on ``self.requests``, with the model its request
    names and the version its reply reports (``model_of(request)``, ``version_of(response)``)."""

    def decorate(method: Method[Servicer]) -> Method[Servicer]:
        edged = at_edge(method)

        @functools.wraps(method)
        def wrapper(self: Any, request: Any, context: Any) -> Any:
            requests = self.requests
            if requests is None:
                return edged(self, request, context)
            started = time.perf_counter()
            requests.in_flight["grpc"] += 1
            try:
                reply = edged(self, request, context)
            except BaseException:
                _observe(requests, request, "", context, started)
                raise
            if pending(reply):
                return _counted(reply, requests, request, context, started)
            _observe(requests, request, version_of(reply), context, started, "OK")
            return reply

        async def _counted(
            reply: Awaitable[Any], requests: Any, request: Any, context: Any, started: float
        ) -> Any:
            try:
                response = await reply
            except Exception:
                _observe(requests, request, "", context, started)
                raise
            except BaseException:
                # Cancelled: by the transport at the deadline (which set DEADLINE_EXCEEDED on the
                # context first), or because the client went away or the server stopped.
                code = None if context.code() is not None else "CANCELLED"
                _observe(requests, request, "", context, started, code)
                raise
            _observe(requests, request, version_of(response), context, started, "OK")
            return response

        def _observe(
            requests: Any, request: Any, version: str, context: Any, started: float, code: str | None = None
        ) -> None:
            requests.in_flight["grpc"] -= 1
            sent = code or _sent_code(context)  # what the client got, even if the servicer aborted itself
            requests.observe(model_of(request), version, api, "grpc", sent, time.perf_counter() - started)

        return wrapper

    return decorate


ROUTING_KEY = "x-routing-key"  # request metadata that makes an A/B split sticky (as the REST header)


def with_routing_key(spec: ModelSpec, context: Any, manager: ModelManager) -> ModelSpec:
    """``spec`` with the call's ``x-routing-key`` metadata, when the client sent one and it matters."""
    if not manager.has_splits(spec.name):
        return spec  # reading the call's metadata costs more than the lookup above
    for key, value in context.invocation_metadata() or ():
        if key == ROUTING_KEY:
            return replace(spec, routing_key=value if isinstance(value, str) else value.decode("latin-1"))
    return spec
