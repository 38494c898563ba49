"""The seam between protocols and transports: requests as plain values, and plans that yield them.

A protocol (TF Serving or V2, over REST or gRPC) never does I/O. Each operation is a *plan*: a generator
that yields the requests it needs (`HttpRequest` or `RpcRequest`), receives each reply, and returns the
result. A plan may need several round trips (a predict that first fetches the signature to learn output
names and dtypes) and may catch a failed request (a readiness probe answering "no"): the driver throws the
`ModelServerError` into the plan. `drive` and `drive_async` are the only code that differs between the sync
and the asyncio clients; the protocols are written once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from modelserve.client.errors import ModelServerError
from modelserve.errors import Code

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One HTTP exchange; ``path`` is relative to the client's base URL."""

    method: str
    path: str
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    idempotent: bool = False  # safe to send again when the connection failed (no side effects)


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A 2xx reply (the transport turns every other status into a `ModelServerError`)."""

    status: int
    headers: Mapping[str, str]  # looked up by lower-case name
    body: bytes


@dataclass(frozen=True, slots=True)
class RpcRequest:
    """One unary gRPC call: the full method path, the request message and the reply's message class."""

    method: str
    message: Any
    response_type: Any
    idempotent: bool = False


Request = HttpRequest | RpcRequest
Plan = Generator[Request, Any, T]
"""Yields requests, is sent each reply (an `HttpResponse` or a response message), returns the result."""


@dataclass(frozen=True, slots=True)
class ModelRef:
    """Which model a call is about: a name, at most one of version and label, and a signature name."""

    name: str
    version: int | None = None
    label: str | None = None
    signature_name: str | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a model name is required")
        if self.version is not None and self.label is not None:
            raise ValueError("give version or version_label, not both")


def drive(plan: Plan[T], send: Callable[[Request], Any]) -> T:
    """Run a plan with a blocking ``send``."""
    try:
        request = next(plan)
        while True:
            try:
                reply = send(request)
            except ModelServerError as error:
                request = plan.throw(error)
            else:
                request = plan.send(reply)
    except StopIteration as stop:
        result: T = stop.value
        return result


async def drive_async(plan: Plan[T], send: Callable[[Request], Awaitable[Any]]) -> T:
    """Run a plan with an awaitable ``send``."""
    try:
        request = next(plan)
        while True:
            try:
                reply = await send(request)
            except ModelServerError as error:
                request = plan.throw(error)
            else:
                request = plan.send(reply)
    except StopIteration as stop:
        result: T = stop.value
        return result


def retry_delay(error: ModelServerError, request: Request, attempt: int, retries: int) -> float | None:
    """Seconds to wait before sending ``request`` again, or None to give up.

    Only idempotent requests (status, metadata, readiness) are retried, and only when the server could not
    be reached or said it is unavailable: a predict may have run even if its reply was lost.
    """
    if attempt >= retries or not request.idempotent or error.code != Code.UNAVAILABLE:
        return None
    return min(0.05 * 2**attempt, 1.0)
