"""The one exception every failed client call raises, whatever the transport or protocol.

A gateway maps model-server failures to its own responses in one ``except ModelServerError`` clause, by
``code`` (the server's canonical code, `modelserve.errors.Code`), never by transport-specific exception
types::

    ModelServerError            code + the server's message (+ the HTTP status on REST)
        from an HTTP reply      status -> code (TF Serving's table, read backwards)
        from a gRPC status      same number -> same code
        from the transport      timeouts -> DEADLINE_EXCEEDED, refused/reset connections -> UNAVAILABLE
        from the client         inputs it cannot encode -> INVALID_ARGUMENT
"""

from __future__ import annotations

from typing import Any

import orjson

from modelserve.errors import Code

__all__ = ["ClosedBeforeReply", "ConnectFailed", "ModelServerError", "error_from_grpc", "error_from_http"]


class ConnectFailed(ConnectionError):
    """REST: the connection could not be opened (refused, unreachable, unresolvable), so nothing was sent.

    The ``__cause__`` of an UNAVAILABLE `ModelServerError`, whichever REST transport failed, so a caller that
    retries only what never reached the server need not know the transport's own exception types.
    """


class ClosedBeforeReply(ConnectionError):
    """REST: the server closed or reset the connection before the reply's head. Usually an idle keep-alive
    connection it closed just as the request went out (which then never reached a handler); but a server
    that died while running the request looks the same. The ``__cause__`` of an UNAVAILABLE error."""


def describe(error: BaseException) -> str:
    """``ErrorType: message`` (just the type when there is no message): how a cause is named in ours."""
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def restate(kind: type[ConnectionError], error: BaseException) -> ConnectionError:
    """A transport's ``error`` restated as one of the transport-neutral causes above, chained to it."""
    cause = kind(describe(error))
    cause.__cause__ = error
    return cause


# HTTP status -> code. Several codes share a status (400: INVALID_ARGUMENT, FAILED_PRECONDITION,
# OUT_OF_RANGE); the most common one wins, as nothing else in the reply tells them apart.
_CODE_BY_HTTP: dict[int, Code] = {
    400: Code.INVALID_ARGUMENT,
    401: Code.UNAUTHENTICATED,
    403: Code.PERMISSION_DENIED,
    404: Code.NOT_FOUND,
    408: Code.DEADLINE_EXCEEDED,
    409: Code.ABORTED,
    413: Code.RESOURCE_EXHAUSTED,
    429: Code.RESOURCE_EXHAUSTED,
    499: Code.CANCELLED,
    500: Code.INTERNAL,
    501: Code.UNIMPLEMENTED,
    502: Code.UNAVAILABLE,  # a proxy in front of a server that is down
    503: Code.UNAVAILABLE,
    504: Code.DEADLINE_EXCEEDED,
}


class ModelServerError(Exception):
    """A call failed: ``code`` says how (NOT_FOUND, INVALID_ARGUMENT, ...); ``message`` says why."""

    def __init__(self, code: Code, message: str, http_status: int | None = None) -> None:
        super().__init__(code, message, http_status)
        self.code = code
        self.message = message
        self.http_status = http_status

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    def __repr__(self) -> str:
        return f"ModelServerError({self.code.name}, {self.message!r}, http_status={self.http_status})"


def error_from_http(status: int, body: bytes) -> ModelServerError:
    """The error an HTTP reply with a non-2xx status stands for; the message is the body's ``error``."""
    message = body.decode("utf-8", "replace").strip()
    try:
        document: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        document = None
    if isinstance(document, dict) and isinstance(document.get("error"), str):
        message = document["error"]
    code = _CODE_BY_HTTP.get(status, Code.UNKNOWN)
    return ModelServerError(code, message or f"HTTP status {status}", http_status=status)


def error_from_grpc(error: Any) -> ModelServerError:
    """The error a ``grpc.RpcError`` (sync or aio) carries: gRPC status numbers are our codes."""
    status = error.code()
    try:
        code = Code(status.value[0])
    except (AttributeError, ValueError, IndexError, TypeError):
        code = Code.UNKNOWN
    return ModelServerError(code, error.details() or code.name)
