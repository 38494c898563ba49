"""Clients that keep a server busy until it refuses them, and the outcome of every request they sent.

By default each request opens its own connection (``Connection: close``), so "the server accepted it" is
exact: the connection was established. A clean refusal is ``ConnectionRefusedError`` or an HTTP 503;
anything else after a connection was made (a reset, a closed connection without reply, another 5xx) is a
lost request.

With ``keep_alive`` each client sends its requests back to back on one persistent connection, as a
pooled client (the gateway's) does, and opens a new one only after a reply that says ``connection:
close``. Then the only clean refusal is a refused connection attempt: a 503 or a reset on a connection
the server had accepted is a lost request.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests
from prometheus_client.parser import text_string_to_metric_families


def rest_in_flight(url: str) -> float:
    """REST requests a model server (with its metrics on) has received and not answered yet."""
    reply = requests.get(f"{url}/monitoring/prometheus/metrics", timeout=10)
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            if sample.name == "modelserve_requests_in_flight" and sample.labels == {"protocol": "rest"}:
                return sample.value
    raise AssertionError("no in-flight gauge: are metrics on?")


def wait_until_in_flight(url: str, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while rest_in_flight(url) < count:
        assert time.monotonic() < deadline, f"{count} requests never reached the model"
        time.sleep(0.01)


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
    keep_alive: bool = False
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
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        deadline = time.monotonic() + self.seconds
        connection: http.client.HTTPConnection | None = None
        try:
            while time.monotonic() < deadline:
                sent = time.monotonic()
                result: int | str | None = None
                if connection is None:
                    connection = http.client.HTTPConnection(host, port, timeout=30)
                    result = self._connect(connection)
                if result is None:
                    result, reusable = self._send(connection, parts.path)
                    if not reusable:
                        connection.close()
                        connection = None
                with self._lock:
                    self.outcomes.append(Outcome(sent, time.monotonic(), result))
                if result != 200:
                    return
        finally:
            if connection is not None:
                connection.close()

    @staticmethod
    def _connect(connection: http.client.HTTPConnection) -> str | None:
        try:
            connection.connect()
        except ConnectionRefusedError:
            return "refused"
        except OSError as error:
            return f"connect failed: {error!r}"
        return None

    def _send(self, connection: http.client.HTTPConnection, path: str) -> tuple[int | str, bool]:
        """The request's result, and whether the connection may carry the next one."""
        headers = {"Content-Type": "application/json"}
        if not self.keep_alive:
            headers["Connection"] = "close"
        try:
            connection.request("POST", path, self.body, headers)
            reply = connection.getresponse()
            reply.read()
        except (OSError, http.client.HTTPException) as error:
            return f"lost after connecting: {error!r}", False
        return reply.status, self.keep_alive and not reply.will_close

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
        clean = (200, "refused") if self.keep_alive else (200, 503, "refused")
        lost = [o for o in self.outcomes if o.result not in clean]
        assert not lost, f"{len(lost)} requests lost: {lost[:5]}"
        endings = [o.result for o in self.outcomes if o.result != 200]
        assert len(endings) == self.clients, f"every client ends refused: {endings}"
        drained = [o for o in self.outcomes if o.result == 200 and o.sent < stopped_at < o.done]
        assert drained, "no request was in flight when the stop began: the test proves nothing"
