"""One error taxonomy for the whole server, converted to HTTP or gRPC status only at the edge.

The codes are gRPC's canonical codes (TF Serving's ``tensorflow::error::Code`` uses the same numbers)::

    ServingError              code + message; every error the core raises
    ├── InvalidArgument       bad request content (400)
    ├── NotFound              unknown model, version, label or signature (404)
    ├── FailedPrecondition    request valid but the server is not in a state to serve it (400)
    ├── ResourceExhausted     queue full, body too large (429 / 413 at the edge)
    ├── Unavailable           model or server not ready (503)
    ├── DeadlineExceeded      request ran past its deadline (504)
    ├── Unimplemented         method not supported for this model (501)
    └── Internal              a runtime failed while running a valid request (500)
"""

from __future__ import annotations

import enum


class Code(enum.IntEnum):
    """gRPC canonical status codes; the names are what TF Serving prints in status JSON."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


# TF Serving's mapping (model_servers/http_server.cc ToHTTPStatusCode).
HTTP_STATUS: dict[Code, int] = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}


class ServingError(Exception):
    """An error with a canonical code; the message is shown to the caller verbatim."""

    code: Code = Code.UNKNOWN

    def __init__(self, message: str, *, code: Code | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.name}: {self.message!r})"


class InvalidArgument(ServingError):
    """The request content is wrong: names, shapes, dtypes, JSON."""

    code = Code.INVALID_ARGUMENT


class NotFound(ServingError):
    """The model, version, label or signature the request names does not exist (now)."""

    code = Code.NOT_FOUND


class FailedPrecondition(ServingError):
    """The request is well-formed but cannot be served in the current state."""

    code = Code.FAILED_PRECONDITION


class ResourceExhausted(ServingError):
    """A bounded resource is full: a batching queue, a memory budget, a body size limit."""

    code = Code.RESOURCE_EXHAUSTED


class Unavailable(ServingError):
    """The server or model cannot serve right now; retrying later may succeed."""

    code = Code.UNAVAILABLE


class DeadlineExceeded(ServingError):
    """The request's deadline passed before it completed."""

    code = Code.DEADLINE_EXCEEDED


class Unimplemented(ServingError):
    """The method exists in the protocol but this model or server does not support it."""

    code = Code.UNIMPLEMENTED


class Internal(ServingError):
    """The runtime failed on a request that passed validation."""

    code = Code.INTERNAL
