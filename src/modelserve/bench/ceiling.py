"""bench's own ceiling: its requests/s against a trivial local server that costs almost nothing per request.

A load generator that cannot send faster than the server answers measures itself. Against this server (a raw
asyncio protocol answering every request with a fixed 200 and a 2-byte body, in its own process, uvloop when
installed) the answer costs a few microseconds, so the requests/s reached is bench's upper limit on this
machine: figures for a real server near it are suspect. On a machine with few cores the server and bench
share them, so the ceiling is a lower bound of bench's true speed (`benchmarks/bench_ceiling.py` compares it
with wrk on the same server).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection

from modelserve.bench.http1 import CONTENT_LENGTH
from modelserve.bench.load import LoadResult, LoadSpec, ProgressSnapshot, RequestTemplate, run_load
from modelserve.bench.spawn import child_connection, start_child, stop_child

_REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
START_TIMEOUT_S = 30.0


class _TrivialProtocol(asyncio.Protocol):
    """Answers each complete request (head plus Content-Length body) with `_REPLY`; pipelining works."""

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        replies = 0
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            found = CONTENT_LENGTH.search(self.buffer, 0, end + 2)
            size = end + 4 + (int(found.group(1)) if found else 0)
            if len(self.buffer) < size:
                break
            self.buffer = self.buffer[size:]
            replies += 1
        if replies and self.transport is not None:
            self.transport.write(_REPLY * replies)


async def _serve(connection: Connection) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_TrivialProtocol, "127.0.0.1", 0, backlog=1024)
    connection.send(server.sockets[0].getsockname()[1])
    with contextlib.suppress(EOFError):
        await loop.run_in_executor(None, connection.recv)  # anything, or EOF: stop
    server.close()


def _server_main(connection: Connection) -> None:
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    with contextlib.suppress(ImportError):
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_serve(connection))


@contextlib.contextmanager
def trivial_server() -> Iterator[tuple[str, int]]:
    """Run the trivial server in its own process; yields ``(url, pid)`` and stops it on the way out."""
    process, connection = start_child("modelserve.bench.ceiling", "serve")
    try:
        if not connection.poll(START_TIMEOUT_S):
            raise RuntimeError("the trivial server did not start")
        port = connection.recv()
        yield f"http://127.0.0.1:{port}/", process.pid
    finally:
        with contextlib.suppress(OSError):
            connection.send("stop")
        stop_child(process, connection)


def measure_ceiling(
    processes: int = 1,
    concurrency: int = 64,
    duration_s: float = 5.0,
    warmup_s: float = 1.0,
    progress: Callable[[ProgressSnapshot], None] | None = None,
) -> LoadResult:
    """bench's requests/s (closed loop, ``GET /``) against the trivial server on this machine."""
    with trivial_server() as (url, _):
        spec = LoadSpec(
            request=RequestTemplate(url=url, method="GET"),
            concurrency=concurrency,
            duration_s=duration_s,
            warmup_s=warmup_s,
            processes=processes,
            timeout_s=5.0,
        )
        return run_load(spec, progress)


def child_main(argv: list[str]) -> None:
    """Entry point of the trivial server's process (started by `spawn.start_child`)."""
    connection = child_connection(argv)
    connection.recv()
    _server_main(connection)
