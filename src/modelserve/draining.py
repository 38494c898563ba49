"""Stop taking new TCP connections without dropping the ones the kernel already accepted.

Closing a listening socket resets every connection waiting in its accept queue: clients that completed
the handshake (for them, the server accepted) see "connection reset" instead of a reply. A graceful stop
therefore goes in two steps, for the model server's REST port and for the gateway's Gunicorn master:

1. ``refuse_new_connections``: a socket filter on the listener drops new SYNs (and only those), so no new
   connection enters the queue, while the handshakes in progress complete. A client whose SYN was dropped
   retries it after about a second and then finds the port closed: connection refused, cleanly.
2. ``accept_queue_length`` reaches 0 while the server goes on accepting as usual (every queued connection
   is served); then the listener is closed.

Linux only (socket filters, ``TCP_INFO``); elsewhere both report "unsupported" and a stop closes at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import socket
import struct
import sys
import time

_SO_ATTACH_FILTER = 26
_TCP_INFO_UNACKED = 24  # offset of tcpi_unacked: the accept queue length of a listening socket
_TCP_LISTEN = 10

# Classic BPF over the TCP header: drop a segment with SYN set and ACK clear, accept everything else.
_PROGRAM = (
    (0x30, 0, 0, 13),  # ldb [13]          TCP flags
    (0x45, 0, 2, 0x02),  # jset #SYN        -> next, else accept
    (0x45, 1, 0, 0x10),  # jset #ACK        -> accept, else drop
    (0x06, 0, 0, 0),  # ret #0            drop
    (0x06, 0, 0, 0xFFFFFFFF),  # ret #-1   accept
)
# Handshakes in progress when the filter went on complete within this: their last ACK may still be on its
# way when the queue first looks empty (a few RTTs off loopback). It only lengthens a stop.
_SETTLE_SECONDS = 0.25
_POLL_SECONDS = 0.005


def refuse_new_connections(sock: socket.socket) -> bool:
    """Make ``sock`` (listening) ignore new connection attempts; False where that is not supported."""
    if sys.platform != "linux" or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    code = b"".join(struct.pack("HBBI", *instruction) for instruction in _PROGRAM)
    buffer = ctypes.create_string_buffer(code)
    program = struct.pack("HL", len(_PROGRAM), ctypes.addressof(buffer))
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, program)
    except OSError:
        return False
    return True


def accept_queue_length(sock: socket.socket) -> int | None:
    """Connections waiting to be accepted on listening ``sock``; None when it cannot be read."""
    if sys.platform != "linux":
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except OSError:
        return None
    if info[0] != _TCP_LISTEN:
        return None
    waiting: int = struct.unpack_from("I", info, _TCP_INFO_UNACKED)[0]
    return waiting


def queue_drained(sock: socket.socket, started: float) -> bool:
    """Whether every connection that made it into ``sock``'s queue since ``started`` (when new ones
    were refused) has been accepted; True where the queue cannot be read."""
    waiting = accept_queue_length(sock)
    return waiting is None or (waiting == 0 and time.monotonic() - started >= _SETTLE_SECONDS)


def drain_listener(sock: socket.socket, timeout: float) -> None:
    """Blocking: refuse new connections, then wait (up to ``timeout``) until other threads or processes
    (the Gunicorn workers, or the event loop when run with ``asyncio.to_thread``) have accepted the queued
    ones. The caller closes ``sock`` afterwards."""
    if not refuse_new_connections(sock):
        return
    started = time.monotonic()
    deadline = started + timeout
    with contextlib.suppress(OSError):
        while not queue_drained(sock, started) and time.monotonic() < deadline:
            time.sleep(_POLL_SECONDS)
