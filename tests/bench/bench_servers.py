"""Small HTTP/1.1 servers with known behaviour, each in its own process, for bench's tests.

``python bench_servers.py READY_FILE [--delay S] [--max-concurrent N] [--stall-at S --stall-for S]
[--fail-every N] [--close]`` answers every request after ``--delay`` seconds (concurrently: an asyncio sleep;
with ``--max-concurrent``, at most N at once and the others queue in order, so its capacity is N / delay
requests/s), once freezes every answer for ``--stall-for`` seconds starting ``--stall-at`` seconds after its
first request (a GC pause, a slow disk), answers 500 to every ``--fail-every``-th request, never answers
``/hang``, answers ``/count`` at once with the number of other requests answered so far, and with
``--close`` closes each connection after one reply. It writes its port to READY_FILE once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


class _Behaviour:
    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.count = 0
        self.answered = 0
        self.first: float | None = None
        self.slots = asyncio.Semaphore(options.max_concurrent) if options.max_concurrent else None

    async def answer(self, path: bytes) -> bytes:
        if path == b"/count":
            body = str(self.answered).encode()
            return b"HTTP/1.1 200 OK\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        if self.slots is None:
            reply = await self._answer(path)
        else:
            async with self.slots:
                reply = await self._answer(path)
        self.answered += 1
        return reply

    async def _answer(self, path: bytes) -> bytes:
        self.count += 1
        number = self.count
        now = time.monotonic()
        self.first = self.first if self.first is not None else now
        if path == b"/hang":
            await asyncio.sleep(3600)
        await asyncio.sleep(self.options.delay)
        if self.options.stall_at is not None:
            stall_start = self.first + self.options.stall_at
            stall_end = stall_start + self.options.stall_for
            now = time.monotonic()
            if stall_start <= now < stall_end:
                await asyncio.sleep(stall_end - now)
        status = (
            b"500 Internal Server Error"
            if self.options.fail_every and number % self.options.fail_every == 0
            else b"200 OK"
        )
        close = b"Connection: close\r\n" if self.options.close else b""
        return b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n" + close + b"\r\nok"


async def _serve(options: argparse.Namespace) -> None:
    behaviour = _Behaviour(options)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                found = _LENGTH.search(head)
                if found:
                    await reader.readexactly(int(found.group(1)))
                writer.write(await behaviour.answer(head.split(b" ", 2)[1]))
                await writer.drain()
                if options.close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    temporary = Path(options.ready_file + ".tmp")
    temporary.write_text(str(port))
    os.replace(temporary, options.ready_file)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("ready_file")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--max-concurrent", type=int, default=0)
    parser.add_argument("--stall-at", type=float)
    parser.add_argument("--stall-for", type=float, default=0.3)
    parser.add_argument("--fail-every", type=int, default=0)
    parser.add_argument("--close", action="store_true")
    asyncio.run(_serve(parser.parse_args()))


@contextmanager
def http_server(workdir: Path, *flags: str, timeout: float = 30.0) -> Iterator[str]:
    """Run this server with ``flags``; yields its base URL and stops it on the way out."""
    ready = workdir / f"server-{time.monotonic_ns()}.port"
    process = subprocess.Popen([sys.executable, __file__, str(ready), *flags])
    try:
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{ready.read_text()}"
    finally:
        process.kill()
        process.wait()


if __name__ == "__main__":
    main()
