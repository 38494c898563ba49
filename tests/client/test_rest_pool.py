"""The REST clients' connection pools: how many connections they open, keep and lend, and to whom.

Connections are counted from the operating system's side (psutil: this process's ESTABLISHED TCP
connections to the server's port), not from the client's bookkeeping.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import psutil
import pytest

from modelserve.client import AsyncClient, Client, ModelServerError
from modelserve.client.http_pool import Connection
from modelserve.errors import Code

ROWS = np.ones((2, 64), np.float32)


def open_connections(port: int) -> int:
    """This process's established TCP connections to ``port`` on loopback."""
    process = psutil.Process()
    listing = getattr(process, "net_connections", None) or process.connections
    return sum(
        1
        for conn in listing(kind="tcp")
        if conn.raddr and conn.raddr.port == port and conn.status == psutil.CONN_ESTABLISHED
    )


def server_port(server_url: Any) -> int:
    return int(server_url("rest").rsplit(":", 1)[1])


def hammer(client: Client, threads: int, calls: int) -> None:
    def work(_: int) -> None:
        for _ in range(calls):
            client.predict("tiny", {"x": ROWS})

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(threads)))


@pytest.fixture
def peak_connections(server_url: Any) -> Iterator[list[int]]:
    """Samples the open connections to the server every millisecond; yields a list holding the peak."""
    port = server_port(server_url)
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], open_connections(port))
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    yield peak
    stop.set()
    sampler.join()


def test_a_connection_serves_one_thread_at_a_time(server_url: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The invariant that keeps threads from closing or reading each other's connections (what httpcore's
    shared pool gets wrong under load, encode/httpcore#1110: EBADF): each connection carries one caller's
    exchange at a time, and there are at most ``max_connections`` of them."""
    in_flight: Counter[int] = Counter()
    peak: Counter[int] = Counter()
    lock = threading.Lock()
    exchange = Connection.exchange

    def counting_exchange(self: Connection, *args: Any, **kwargs: Any) -> Any:
        with lock:
            in_flight[id(self)] += 1
            peak[id(self)] = max(peak[id(self)], in_flight[id(self)])
        try:
            return exchange(self, *args, **kwargs)
        finally:
            with lock:
                in_flight[id(self)] -= 1

    monkeypatch.setattr(Connection, "exchange", counting_exchange)
    with Client(server_url("rest"), max_connections=4) as client:
        hammer(client, threads=16, calls=10)
    assert sum(peak.values()) > 0, "no call went through Connection.exchange"
    assert max(peak.values()) == 1, f"a connection carried {max(peak.values())} calls at once"
    assert len(peak) <= 4


def test_at_most_max_connections_are_open_and_idle_ones_are_kept(
    server_url: Any, peak_connections: list[int]
) -> None:
    port = server_port(server_url)
    with Client(server_url("rest"), max_connections=3) as client:
        hammer(client, threads=12, calls=15)
        kept = open_connections(port)
        # Kept alive: more calls open no new connection.
        hammer(client, threads=3, calls=5)
        assert open_connections(port) == kept
    assert 1 <= kept <= 3
    assert 1 <= peak_connections[0] <= 3
    deadline = time.monotonic() + 5
    while open_connections(port) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert open_connections(port) == 0, "close() left connections open"


def test_max_keepalive_connections_bounds_the_idle_ones(server_url: Any) -> None:
    port = server_port(server_url)
    with Client(server_url("rest"), max_connections=4, max_keepalive_connections=1) as client:
        hammer(client, threads=8, calls=10)
        assert open_connections(port) <= 1
        assert client.predict("tiny", {"x": ROWS})["y"].shape == (2, 10)


def test_no_keepalive_closes_every_connection_after_its_call(server_url: Any) -> None:
    port = server_port(server_url)
    with Client(server_url("rest"), max_connections=2, max_keepalive_connections=0) as client:
        hammer(client, threads=4, calls=5)
        assert open_connections(port) == 0


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP listener that accepts connections and never answers: every call on it stays busy."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    acceptor.join()
    for conn in accepted:
        conn.close()
    listener.close()


@pytest.fixture
def exchange_started(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Set once some call has its connection and is sending on it."""
    started = threading.Event()
    exchange = Connection.exchange

    def exchange_and_tell(self: Connection, *args: Any, **kwargs: Any) -> Any:
        started.set()
        return exchange(self, *args, **kwargs)

    monkeypatch.setattr(Connection, "exchange", exchange_and_tell)
    return started


def test_a_call_waiting_for_a_busy_pool_times_out_with_deadline_exceeded(
    silent_server: str, exchange_started: threading.Event
) -> None:
    with Client(silent_server, max_connections=1) as client:

        def hold() -> None:
            with pytest.raises(ModelServerError):
                client.predict("tiny", {"x": ROWS}, timeout=2)

        holder = threading.Thread(target=hold)
        holder.start()
        assert exchange_started.wait(10)  # the holder has the only connection
        started = time.monotonic()
        with pytest.raises(ModelServerError) as caught:
            client.predict("tiny", {"x": ROWS}, timeout=0.3)
        waited = time.monotonic() - started
        holder.join()
    assert caught.value.code == Code.DEADLINE_EXCEEDED
    assert "all 1 connections stayed busy" in str(caught.value)
    assert 0.25 <= waited < 1.5


def test_closing_the_client_wakes_a_call_waiting_for_a_connection(
    silent_server: str, exchange_started: threading.Event
) -> None:
    client = Client(silent_server, max_connections=1)
    outcome: dict[str, BaseException] = {}

    def call(name: str, timeout: float | None) -> None:
        try:
            client.predict("tiny", {"x": ROWS}, timeout=timeout)
        except BaseException as error:  # recorded for the assertions below
            outcome[name] = error

    holder = threading.Thread(target=call, args=("holder", 2.0))
    holder.start()
    assert exchange_started.wait(10)  # the holder has the only connection
    waiter = threading.Thread(target=call, args=("waiter", None))
    waiter.start()
    time.sleep(0.2)  # the waiter waits for it, with no timeout (or, if slower, finds the client closed)
    client.close()
    waiter.join(timeout=1)
    assert not waiter.is_alive(), "close() left a waiting call blocked"
    holder.join()
    assert isinstance(outcome["waiter"], RuntimeError)
    assert "closed" in str(outcome["waiter"])
    assert isinstance(outcome["holder"], ModelServerError)
    assert outcome["holder"].code == Code.DEADLINE_EXCEEDED


def test_asyncio_tasks_share_at_most_max_connections(server_url: Any, peak_connections: list[int]) -> None:
    port = server_port(server_url)

    async def main() -> int:
        async with AsyncClient(server_url("rest"), max_connections=3) as client:

            async def work() -> None:
                for _ in range(10):
                    await client.predict("tiny", {"x": ROWS})

            await asyncio.gather(*(work() for _ in range(24)))
            return open_connections(port)

    kept = asyncio.run(main())
    assert 1 <= kept <= 3
    assert 1 <= peak_connections[0] <= 3


def test_asyncio_client_without_keepalive_leaves_no_connection_open(server_url: Any) -> None:
    port = server_port(server_url)

    async def main() -> int:
        async with AsyncClient(server_url("rest"), max_connections=2, max_keepalive_connections=0) as client:
            await asyncio.gather(*(client.predict("tiny", {"x": ROWS}) for _ in range(6)))
            await asyncio.sleep(0.05)  # closed connections leave ESTABLISHED
            return open_connections(port)

    assert asyncio.run(main()) == 0


def test_an_upload_the_server_never_reads_times_out(silent_server: str, make_client: Any) -> None:
    """A body larger than the socket buffers, to a server that stops reading: the call's timeout bounds
    the upload too (sync: the socket's send timeout; asyncio: aiohttp's read timeout, which already runs
    while the body is sent)."""
    client = make_client(silent_server)
    rows = np.ones((100_000, 64), np.float32)  # ~100 MB of JSON
    started = time.monotonic()
    with pytest.raises(ModelServerError) as caught:
        client.predict("tiny", {"x": rows}, timeout=0.5)
    assert caught.value.code == Code.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 10  # JSON encoding of the rows takes its share
