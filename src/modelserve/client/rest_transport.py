"""REST transports: keep-alive ``http.client`` connections lent to threads (sync, see `http_pool`), and
an ``aiohttp`` session (asyncio).

Either way at most ``max_connections`` connections are open and idle ones are reused (keep-alive), so one
transport per process (per event loop) is the pool. Replies with a non-2xx status and transport failures
become `ModelServerError` here, so no transport's own exception type leaks out: a connection that could not
be opened has a `ConnectFailed` cause, one closed before the reply's head a `ClosedBeforeReply` cause.

Why not httpx: a call to the tiny model through httpx costs the caller 365 µs of CPU (sync) and 791 µs
(asyncio); through these transports, with the client's codecs, 126 and 173 µs. And httpx's shared sync pool
can close one thread's connection under another (encode/httpcore#1110). See benchmarks/client_calls.py.

``timeout`` bounds connecting, each write and each read (not the whole call), and the wait for a free
connection when all are busy.
"""

from __future__ import annotations

import base64
import errno
import http.client
import ssl
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit, urlunsplit

from modelserve import __version__
from modelserve.client.calls import HttpRequest, HttpResponse, Request
from modelserve.client.errors import (
    ClosedBeforeReply,
    ConnectFailed,
    ModelServerError,
    describe,
    error_from_http,
    restate,
)
from modelserve.client.http_pool import ConnectionPool, PoolTimeout
from modelserve.client.settings import Settings
from modelserve.errors import Code

if TYPE_CHECKING:
    import aiohttp

USER_AGENT = f"modelserve-client/{__version__}"


def _default_headers(settings: Settings) -> dict[str, str]:
    """Sent with every call: our user agent, Basic credentials from the URL (``http://user:pass@host``),
    and the client's ``headers``, lower-cased so that a caller's ``User-Agent`` or ``Authorization``
    replaces ours instead of adding a second."""
    headers = {"user-agent": USER_AGENT}
    parts = urlsplit(settings.target)
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers["authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    return headers | {name.lower(): value for name, value in settings.headers}


def _without_credentials(target: str) -> str:
    """The base URL without its ``user:pass@``: they travel as the Authorization header instead."""
    parts = urlsplit(target)
    if parts.username is None:
        return target
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _unavailable(error: BaseException) -> ModelServerError:
    return ModelServerError(Code.UNAVAILABLE, f"cannot reach the server: {describe(error)}")


def _timed_out(error: BaseException) -> ModelServerError:
    return ModelServerError(Code.DEADLINE_EXCEEDED, f"timed out: {describe(error)}")


def _reply(status: int, headers: dict[str, str], body: bytes) -> HttpResponse:
    if not 200 <= status < 300:
        raise error_from_http(status, body)
    return HttpResponse(status, headers, body)


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
            raise _timed_out(error) from error
        except (OSError, http.client.HTTPException) as error:
            raise _unavailable(error) from error
        return _reply(status, reply_headers, body)

    def close(self) -> None:
        self._pool.close()


class AsyncRestTransport:
    """REST calls over one ``aiohttp.ClientSession``; safe to share between the tasks of one event loop.

    Made inside the loop that uses it (aiohttp's session belongs to one loop). Differences from the sync
    pool, all aiohttp's: it keeps every released connection up to ``max_connections`` for
    ``keepalive_expiry`` seconds (``max_keepalive_connections=0`` turns keep-alive off; a value in between
    is not enforced); it reuses the connection idle longest first; and it learns that the server closed an
    idle connection when the loop reads the FIN, not by checking before use.
    """

    def __init__(self, settings: Settings) -> None:
        import aiohttp

        self._aiohttp = aiohttp
        self._settings = settings
        self._base = _without_credentials(settings.target)
        no_keepalive = settings.max_keepalive_connections == 0
        connector = aiohttp.TCPConnector(
            limit=settings.max_connections,
            force_close=no_keepalive,
            keepalive_timeout=None if no_keepalive else settings.keepalive_expiry,
            ssl=ssl.create_default_context() if settings.secure else False,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            # identity: the codecs read the body as sent, and the sync client asks for the same.
            headers={"accept-encoding": "identity", **_default_headers(settings)},
            trust_env=False,  # a private backend: HTTP(S)_PROXY meant for the internet must not reroute it
            auto_decompress=False,
        )

    def _timeout(self, timeout: float | None) -> aiohttp.ClientTimeout:
        connect = self._settings.connect_timeout
        if timeout is not None:
            connect = min(timeout, connect)
        # connect: the wait for a free connection plus opening it; sock_read: each read of the reply.
        return self._aiohttp.ClientTimeout(
            total=None, connect=timeout, sock_connect=connect, sock_read=timeout
        )

    async def send(self, request: Request, timeout: float | None) -> HttpResponse:
        assert isinstance(request, HttpRequest)
        aiohttp = self._aiohttp
        try:
            try:  # until the reply's head: a connection lost here never carried a reply
                response = await self._session.request(
                    request.method,
                    self._base + request.path,
                    data=request.body or None,
                    headers=request.headers,
                    timeout=self._timeout(timeout),
                    allow_redirects=False,
                )
            except aiohttp.ServerDisconnectedError as error:  # EOF
                raise _unavailable(error) from restate(ClosedBeforeReply, error)
            except aiohttp.ClientOSError as error:
                if isinstance(error, aiohttp.ClientConnectorError):
                    raise _unavailable(error) from restate(ConnectFailed, error)
                if error.errno in (errno.ECONNRESET, errno.EPIPE):
                    raise _unavailable(error) from restate(ClosedBeforeReply, error)
                raise
            try:
                body = await response.read()
            finally:
                response.release()
        except TimeoutError as error:  # asyncio's, and aiohttp's own (which subclass it)
            raise _timed_out(error) from error
        except (aiohttp.ClientError, OSError) as error:
            raise _unavailable(error) from error
        headers = {name.lower(): value for name, value in response.headers.items()}
        return _reply(response.status, headers, body)

    async def close(self) -> None:
        await self._session.close()
