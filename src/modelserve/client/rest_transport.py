"""REST transports: keep-alive ``http.client`` connections lent to threads (sync, see `http_pool`), or one
pooled ``httpx.AsyncClient`` (asyncio).

Either way at most ``max_connections`` connections are open and idle ones are reused (keep-alive), so one
transport per process is the pool. Replies with a non-2xx status and transport failures become
`ModelServerError` here, so no transport's own exception type leaks out.

``timeout`` bounds connecting, each write and each read (not the whole call), as httpx's does.
"""

from __future__ import annotations

import http.client

import httpx

from modelserve import __version__
from modelserve.client.calls import HttpRequest, HttpResponse, Request
from modelserve.client.errors import ModelServerError, error_from_http
from modelserve.client.http_pool import ConnectionPool, PoolTimeout
from modelserve.client.settings import Settings
from modelserve.errors import Code

USER_AGENT = f"modelserve-client/{__version__}"


def _default_headers(settings: Settings) -> dict[str, str]:
    """Sent with every call: our user agent and the client's ``headers`` (lower-cased, so a caller's
    ``User-Agent`` replaces ours instead of adding a second)."""
    return {"user-agent": USER_AGENT, **{name.lower(): value for name, value in settings.headers}}


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
    return {"base_url": settings.target, "headers": _default_headers(settings), "trust_env": False}


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


class RestTransport:
    """Blocking REST calls, each on a connection of its own for its length; safe to share between threads."""

    def __init__(self, settings: Settings) -> None:
        self._pool = ConnectionPool(settings)
        self._headers = _default_headers(settings)

    def send(self, request: Request, timeout: float | None) -> HttpResponse:
        assert isinstance(request, HttpRequest)
        headers = {**self._headers, **request.headers} if request.headers else self._headers
        try:
            connection = self._pool.borrow(timeout)
            try:
                status, reply_headers, body = connection.exchange(
                    request.method, self._pool.base_path + request.path, request.body, headers, timeout
                )
            finally:
                self._pool.give_back(connection)
        except PoolTimeout as error:
            raise ModelServerError(Code.DEADLINE_EXCEEDED, f"timed out: {error}") from error
        except TimeoutError as error:
            raise ModelServerError(Code.DEADLINE_EXCEEDED, f"timed out: {_describe(error)}") from error
        except (OSError, http.client.HTTPException) as error:
            message = f"cannot reach the server: {_describe(error)}"
            raise ModelServerError(Code.UNAVAILABLE, message) from error
        if not 200 <= status < 300:
            raise error_from_http(status, body)
        return HttpResponse(status, reply_headers, body)

    def close(self) -> None:
        self._pool.close()


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


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
