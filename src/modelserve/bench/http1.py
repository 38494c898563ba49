"""HTTP/1.1 on raw asyncio streams: requests built once as bytes, replies read by their framing.

A general HTTP client parses headers into objects, builds a request object per call, and so would spend
more CPU per request than a fast server; the load generator would measure itself. Here a request is a
prebuilt ``bytes`` written as is, and a reply is read just enough to find its status and its end
(``Content-Length``, chunked, or the connection closing). ``Connection: close`` replies (e.g. Gunicorn's
sync workers) are supported: the caller reconnects.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[^\r]*chunked", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:[ \t]*close", re.IGNORECASE)
_KEEP_ALIVE = re.compile(rb"\r\nconnection:[ \t]*keep-alive", re.IGNORECASE)
READ_LIMIT = 1 << 20


@dataclass(frozen=True, slots=True)
class HttpTarget:
    """Where to connect and what to write: the whole request, head and body."""

    host: str
    port: int
    wire: bytes
    head_only: bool = False  # HEAD: replies carry no body whatever their Content-Length says


def http_target(url: str, method: str, body: bytes, headers: tuple[tuple[str, str], ...]) -> HttpTarget:
    """The bytes of ``method url`` with ``body``; ``Host`` and ``Content-Length`` are added when absent."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"expected an http:// URL, got {url!r} (https is not supported)")
    port = parts.port or 80
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    names = {name.lower() for name, _ in headers}
    lines = [f"{method} {path} HTTP/1.1"]
    if "host" not in names:
        lines.append(f"Host: {parts.hostname}:{port}")
    if "content-length" not in names and (body or method not in ("GET", "HEAD", "DELETE")):
        lines.append(f"Content-Length: {len(body)}")
    if "content-type" not in names and body:
        lines.append("Content-Type: application/json")
    lines += [f"{name}: {value}" for name, value in headers]
    wire = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    return HttpTarget(parts.hostname, port, wire, head_only=method == "HEAD")


async def read_reply(reader: asyncio.StreamReader, head_only: bool = False) -> tuple[int, bool]:
    """Read one reply; ``(status, keep_alive)``. Raises IncompleteReadError if the peer closes early."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    keep_alive = _CLOSE.search(head) is None and (head[5:8] == b"1.1" or bool(_KEEP_ALIVE.search(head)))
    if head_only or status < 200 or status in (204, 304):
        return status, keep_alive
    found = CONTENT_LENGTH.search(head)
    if found:
        await reader.readexactly(int(found.group(1)))
    elif _CHUNKED.search(head):
        await _read_chunks(reader)
    else:  # no framing: the body ends when the server closes the connection
        await reader.read()
        keep_alive = False
    return status, keep_alive


async def _read_chunks(reader: asyncio.StreamReader) -> None:
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, then the blank line
                pass
            return
        await reader.readexactly(size + 2)
