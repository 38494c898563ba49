"""REST transports on httpx: a pooled ``httpx.Client`` (sync) or ``httpx.AsyncClient`` (asyncio).

httpx keeps up to ``max_connections`` connections per client and reuses idle ones (keep-alive), so one
client per process is the pool; its pool is thread-safe (sync) or task-safe (async). Replies with a
non-2xx status and transport failures become `ModelServerError` here, so no httpx type leaks out.

``timeout`` is httpx's: it bounds connecting, each write and each read (not the whole call).
"""

from __future__ import annotations

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


class RestTransport:
    """Blocking REST calls over one pooled ``httpx.Client``; safe to share between threads."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client = httpx.Client(limits=_limits(settings), **_client_options(settings))  # type: ignore[arg-type]

    def send(self, request: Request, timeout: float | None) -> HttpResponse:
        assert isinstance(request, HttpRequest)
        try:
            response = self._client.request(
                request.method,
                request.path,
                content=request.body or None,
                headers=request.headers,
                timeout=_timeout(self._settings, timeout),
            )
        except httpx.HTTPError as error:
            raise _failure(error) from error
        return _reply(response)

    def close(self) -> None:
        self._client.close()


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
