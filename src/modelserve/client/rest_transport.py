"""REST transports on httpx: one-connection httpx clients lent to threads (sync), or one pooled
``httpx.AsyncClient`` (asyncio).

Either way at most ``max_connections`` connections are open and idle ones are reused (keep-alive), so one
transport per process is the pool. Replies with a non-2xx status and transport failures become
`ModelServerError` here, so no httpx type leaks out.

Why the sync side does not share one ``httpx.Client`` between threads: httpcore 1.0's pool runs its
bookkeeping pass in whichever thread calls, and that pass can close a connection another thread has just
been handed (it still looks idle; encode/httpcore#1110). The caller then reads a closed socket
(``EBADF``) or waits out its read timeout. `_Lender` gives each thread a client of its own for the
length of a call, so no pass ever runs beside a request on the same pool. The asyncio pool runs its
passes on one loop, between awaits, and keeps httpx's.

``timeout`` is httpx's: it bounds connecting, each write and each read (not the whole call).
"""

from __future__ import annotations

import threading
import time

import httpx

from modelserve.client.calls import HttpRequest, HttpResponse, Request
from modelserve.client.errors import ModelServerError, error_from_http
from modelserve.client.settings import Settings
from modelserve.errors import Code


def _limits(settings: Settings) -> httpx.Limits:
    keepalive = settings.max_keepalive_connections
    return httpx.Limits(
        max_connections=settings.max_connections,
        max_keepalive_connections=settings.max_connections if keepalive is None else keepalive,
        keepalive_expiry=settings.keepalive_expiry,
    )


def _timeout(settings: Settings, timeout: float | None) -> httpx.Timeout:
    if timeout is None:
        return httpx.Timeout(None, connect=settings.connect_timeout)
    return httpx.Timeout(timeout, connect=min(timeout, settings.connect_timeout))


def _client_options(settings: Settings) -> dict[str, object]:
    # trust_env=False: a model server is a private backend; HTTP(S)_PROXY meant for the internet must not
    # reroute it.
    return {"base_url": settings.target, "headers": dict(settings.headers), "trust_env": False}


def _reply(response: httpx.Response) -> HttpResponse:
    if not 200 <= response.status_code < 300:
        raise error_from_http(response.status_code, response.content)
    return HttpResponse(response.status_code, response.headers, response.content)


def _failure(error: httpx.HTTPError) -> ModelServerError:
    if isinstance(error, httpx.TimeoutException):
        return ModelServerError(Code.DEADLINE_EXCEEDED, f"timed out: {type(error).__name__}: {error}")
    if isinstance(error, httpx.TransportError):
        return ModelServerError(Code.UNAVAILABLE, f"cannot reach the server: {type(error).__name__}: {error}")
    return ModelServerError(Code.UNKNOWN, f"{type(error).__name__}: {error}")


class _Lender:
    """Up to ``max_connections`` one-connection httpx clients, each lent to one caller at a time.

    A call borrows the most recently returned client (its connection is the warmest), or makes one while
    fewer than ``max_connections`` exist, or waits for one to come back (as httpx's pool waits, bounded by
    the call's timeout). Returned clients beyond ``max_keepalive_connections`` are closed, so that many
    idle connections stay open at most, as with httpx's own limits.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._keepalive = settings.max_connections
        if settings.max_keepalive_connections is not None:
            self._keepalive = settings.max_keepalive_connections
        self._ssl = httpx.create_ssl_context()  # one for all clients: making one takes ~20 ms
        self._idle: list[httpx.Client] = []
        self._made = 0  # clients idle or lent
        self._returned = threading.Condition()
        self._closed = False

    def borrow(self, timeout: float | None) -> httpx.Client:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._returned:
            while True:
                if self._closed:
                    raise RuntimeError("the client is closed")
                if self._idle:
                    return self._idle.pop()
                if self._made < self._settings.max_connections:
                    self._made += 1
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise httpx.PoolTimeout(
                        f"all {self._settings.max_connections} connections stayed busy for {timeout} s"
                    )
                self._returned.wait(left)
        try:
            return self._make()
        except BaseException:
            self._forget()
            raise

    def give_back(self, client: httpx.Client) -> None:
        with self._returned:
            keep = not self._closed and len(self._idle) < self._keepalive
            if keep:
                self._idle.append(client)
                self._returned.notify()
        if not keep:
            self._forget()
            client.close()

    def close(self) -> None:
        with self._returned:
            self._closed = True
            idle, self._idle = self._idle, []
            self._returned.notify_all()
        for client in idle:
            client.close()

    def _forget(self) -> None:
        with self._returned:
            self._made -= 1
            self._returned.notify()

    def _make(self) -> httpx.Client:
        limits = httpx.Limits(
            max_connections=1,
            max_keepalive_connections=1,
            keepalive_expiry=self._settings.keepalive_expiry,
        )
        return httpx.Client(limits=limits, verify=self._ssl, **_client_options(self._settings))  # type: ignore[arg-type]


class RestTransport:
    """Blocking REST calls, each on a connection of its own for its length; safe to share between threads."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lender = _Lender(settings)

    def send(self, request: Request, timeout: float | None) -> HttpResponse:
        assert isinstance(request, HttpRequest)
        try:
            client = self._lender.borrow(timeout)
            try:
                response = client.request(
                    request.method,
                    request.path,
                    content=request.body or None,
                    headers=request.headers,
                    timeout=_timeout(self._settings, timeout),
                )
            finally:
                self._lender.give_back(client)
        except httpx.HTTPError as error:
            raise _failure(error) from error
        return _reply(response)

    def close(self) -> None:
        self._lender.close()


class AsyncRestTransport:
    """REST calls over one pooled ``httpx.AsyncClient``; safe to share between the tasks of one loop."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client = httpx.AsyncClient(limits=_limits(settings), **_client_options(settings))  # type: ignore[arg-type]

    async def send(self, request: Request, timeout: float | None) -> HttpResponse:
        assert isinstance(request, HttpRequest)
        try:
            response = await self._client.request(
                request.method,
                request.path,
                content=request.body or None,
                headers=request.headers,
                timeout=_timeout(self._settings, timeout),
            )
        except httpx.HTTPError as error:
            raise _failure(error) from error
        return _reply(response)

    async def close(self) -> None:
        await self._client.aclose()
