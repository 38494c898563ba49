"""The sync REST client's connections: keep-alive HTTP/1.1 (``http.client``), each lent to one thread.

Why ``http.client`` and not ``httpx.Client`` for the blocking client: a model server call is one small
request and one reply on a trusted backend connection, and httpx spends 368 µs of CPU per call on it
against 83 µs for ``http.client`` (the same request and reply, tiny model, loopback, 2 cores). That CPU
is taken from the web worker's own pre- and post-processing. And one ``httpx.Client`` shared by threads
is unsafe under load: httpcore 1.0's pool runs its bookkeeping in whichever thread calls, and can close
a connection another thread has just been handed (encode/httpcore#1110), which then fails with
``[Errno 9] Bad file descriptor``. Here a connection belongs to exactly one caller between `borrow` and
`give_back`, so nothing else ever touches it mid-call.

Limits mirror httpx's: at most ``max_connections`` open, a caller beyond that waits (up to its timeout),
at most ``max_keepalive_connections`` idle ones kept, each for ``keepalive_expiry`` seconds. An idle
connection that the server closed (its socket reads as ready) is replaced before it is used.
"""

from __future__ import annotations

import contextlib
import http.client
import select
import socket
import ssl
import sys
import threading
import time
from typing import Any
from urllib.parse import quote, urlsplit

from modelserve.client.errors import ClosedBeforeReply, ConnectFailed, restate
from modelserve.client.settings import Settings


class PoolTimeout(TimeoutError):
    """Every connection stayed busy for the whole timeout."""


class Connection:
    """One keep-alive connection to the server; connects on first use and again after a close."""

    def __init__(self, conn: http.client.HTTPConnection, connect_timeout: float) -> None:
        self._http = conn
        self._connect_timeout = connect_timeout
        self.idle_since = time.monotonic()

    def exchange(
        self, method: str, path: str, body: bytes, headers: dict[str, str], timeout: float | None
    ) -> tuple[int, dict[str, str], bytes]:
        """Send one request and read its whole reply: (status, headers by lower-case name, body).

        ``timeout`` bounds connecting (with the connect timeout), each write and each read. Any failure
        closes the connection, whose state is then unknown; the caller sees the exception.
        """
        conn = self._http
        try:
            if conn.sock is None:
                connect = self._connect_timeout
                conn.timeout = connect if timeout is None else min(timeout, connect)
                try:
                    conn.connect()
                except TimeoutError:
                    raise
                except OSError as error:
                    raise restate(ConnectFailed, error) from error
            conn.sock.settimeout(timeout)
            # A server may answer before reading the whole body (413 for one over its limit) and close:
            # sending then fails, but its reply is waiting to be read.
            with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                conn.request(method, path, body or None, headers)
            try:
                response = conn.getresponse()
            except (ConnectionResetError, BrokenPipeError) as error:  # RemoteDisconnected is a reset
                raise restate(ClosedBeforeReply, error) from error
            data = response.read()  # after "connection: close", http.client has closed the socket
        except BaseException:
            conn.close()
            raise
        return response.status, {name.lower(): value for name, value in response.getheaders()}, data

    def reusable(self, expiry: float | None) -> bool:
        """Whether an idle connection can carry the next request: not past its keep-alive expiry, and not
        closed by the server (an idle HTTP/1.1 connection with something to read can only be at EOF)."""
        sock = self._http.sock
        if sock is None:
            return True  # closed: the next exchange connects afresh
        if expiry is not None and time.monotonic() - self.idle_since > expiry:
            return False
        return not _readable(sock)

    def close(self) -> None:
        self._http.close()


def _readable(sock: socket.socket) -> bool:
    """Whether ``sock`` has something to read, without waiting: ``poll`` (no FD_SETSIZE limit), or
    ``select`` where there is none (Windows)."""
    poll, select_ = _waiters()
    if poll is None:
        return bool(select_([sock], [], [], 0)[0])
    poller = poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def _waiters() -> tuple[Any, Any]:
    """``select.poll`` (None where missing) and ``select.select``; under gevent the originals, because
    gevent's own switch to its hub even for a zero timeout."""
    gevent_monkey = sys.modules.get("gevent.monkey")
    if gevent_monkey is None or not gevent_monkey.is_module_patched("select"):
        return getattr(select, "poll", None), select.select
    try:
        poll = gevent_monkey.get_original("select", "poll")
    except AttributeError:
        poll = None
    return poll, gevent_monkey.get_original("select", "select")


class ConnectionPool:
    """Up to ``max_connections`` connections to one server, each lent to one caller at a time.

    A caller gets the most recently returned connection (the warmest), or a new one while fewer than
    ``max_connections`` exist, or waits for one to come back. Idle connections past ``keepalive_expiry``
    are closed whenever the pool is used, the oldest first.
    """

    def __init__(self, settings: Settings) -> None:
        parts = urlsplit(settings.target)
        self.base_path = quote(parts.path.rstrip("/"), safe="/%:@!$&'()*+,;=-._~")
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if settings.secure else 80)
        self._tls = ssl.create_default_context() if settings.secure else None
        self._settings = settings
        self._keepalive = settings.max_connections
        if settings.max_keepalive_connections is not None:
            self._keepalive = settings.max_keepalive_connections
        self._idle: list[Connection] = []  # oldest first; calls take the newest
        self._made = 0  # connections idle or lent
        self._returned = threading.Condition()
        self._closed = False

    def borrow(self, timeout: float | None) -> Connection:
        """A connection for one call; PoolTimeout if none frees up within ``timeout`` seconds."""
        connection = self._take(timeout)  # None: a slot for a new connection is ours
        try:
            if connection is not None:
                if connection.reusable(self._settings.keepalive_expiry):
                    return connection
                connection.close()  # the server closed it while idle: a new one takes its slot
            return self._new_connection()
        except BaseException:
            if connection is not None:
                connection.close()
            self._forget(1)
            raise

    def give_back(self, connection: Connection) -> None:
        """Return a connection after its call; beyond the keep-alive limit (or once closed) it is closed."""
        connection.idle_since = time.monotonic()
        with self._returned:
            expired = self._expired()
            keep = not self._closed and len(self._idle) < self._keepalive
            if keep:
                self._idle.append(connection)
            else:
                self._made -= 1
            self._returned.notify()
        if not keep:
            connection.close()
        for old in expired:
            old.close()

    def close(self) -> None:
        """Close the idle connections now and the lent ones as they come back; wake every waiter."""
        with self._returned:
            self._closed = True
            idle, self._idle = self._idle, []
            self._made -= len(idle)
            self._returned.notify_all()
        for connection in idle:
            connection.close()

    def _take(self, timeout: float | None) -> Connection | None:
        """The newest idle connection, or None with a slot reserved for a new one; waits while all are out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        expired: list[Connection] = []
        try:
            with self._returned:
                while True:
                    if self._closed:
                        raise RuntimeError("the client is closed")
                    expired += self._expired()
                    if self._idle:
                        return self._idle.pop()
                    if self._made < self._settings.max_connections:
                        self._made += 1
                        return None
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise PoolTimeout(
                            f"all {self._settings.max_connections} connections stayed busy for {timeout} s"
                        )
                    self._returned.wait(left)
        finally:
            for connection in expired:
                connection.close()

    def _expired(self) -> list[Connection]:
        """Under the lock: take the idle connections past their keep-alive expiry out of the pool."""
        expiry = self._settings.keepalive_expiry
        if expiry is None or not self._idle:
            return []
        cutoff = time.monotonic() - expiry
        count = 0
        while count < len(self._idle) and self._idle[count].idle_since < cutoff:
            count += 1
        if not count:
            return []
        expired, self._idle = self._idle[:count], self._idle[count:]
        self._made -= count
        self._returned.notify(count)
        return expired

    def _forget(self, count: int) -> None:
        with self._returned:
            self._made -= count
            self._returned.notify(count)

    def _new_connection(self) -> Connection:
        # Nothing is connected here (that happens in the caller's exchange, outside the lock).
        timeout = self._settings.connect_timeout
        conn: http.client.HTTPConnection
        if self._tls is not None:
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=timeout, context=self._tls)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        return Connection(conn, timeout)
