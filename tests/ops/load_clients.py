"""Clients that keep a server busy until it refuses them, and the outcome of every request they sent.

Each request opens its own connection (``Connection: close``), so "the server accepted it" is exact: the
connection was established. A clean refusal is ``ConnectionRefusedError`` or an HTTP 503; anything else
after a connection was made (a reset, a closed connection without reply, another 5xx) is a lost request.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Outcome:
    """One request: when it was sent and answered, and how (HTTP status, 'refused' or an error)."""

    sent: float
    done: float
    result: int | str


@dataclass
class LoadClients:
    """``clients`` threads POSTing ``body`` to ``url`` back to back until refused (or ``seconds`` pass)."""

    url: str
    body: bytes
    clients: int = 16
    seconds: float = 60.0
    outcomes: list[Outcome] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> LoadClients:
        for _ in range(self.clients):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _run(self) -> None:
        parts = urlsplit(self.url)
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:
            sent = time.monotonic()
            result = self._send(parts.hostname or "127.0.0.1", parts.port or 80, parts.path)
            with self._lock:
                self.outcomes.append(Outcome(sent, time.monotonic(), result))
            if result != 200:
                return

    def _send(self, host: str, port: int, path: str) -> int | str:
        connection = http.client.HTTPConnection(host, port, timeout=30)
        try:
            connection.connect()
        except ConnectionRefusedError:
            return "refused"
        except OSError as error:
            return f"connect failed: {error!r}"
        try:
            headers = {"Content-Type": "application/json", "Connection": "close"}
            connection.request("POST", path, self.body, headers)
            reply = connection.getresponse()
            reply.read()
            return reply.status
        except (OSError, http.client.HTTPException) as error:
            return f"lost after connecting: {error!r}"
        finally:
            connection.close()

    def wait_for_successes(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while sum(o.result == 200 for o in self.outcomes) < count:
            assert time.monotonic() < deadline, f"load did not start: {self.outcomes[:5]}"
            time.sleep(0.01)

    def join(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(thread.is_alive() for thread in self._threads), "clients still running"

    def check_nothing_lost(self, stopped_at: float) -> None:
        """Every request got 200 until the server refused cleanly; some were in flight at the stop."""
        lost = [o for o in self.outcomes if o.result not in (200, 503, "refused")]
        assert not lost, f"{len(lost)} requests lost: {lost[:5]}"
        endings = [o.result for o in self.outcomes if o.result != 200]
        assert len(endings) == self.clients, f"every client ends refused: {endings}"
        drained = [o for o in self.outcomes if o.result == 200 and o.sent < stopped_at < o.done]
        assert drained, "no request was in flight when the stop began: the test proves nothing"
