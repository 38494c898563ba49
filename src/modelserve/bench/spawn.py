"""Helper processes of bench: ``module.child_main`` in a fresh interpreter, with a message pipe.

Not ``multiprocessing``'s spawn: that re-imports the caller's ``__main__`` in every child, which breaks for
scripts without a ``__main__`` guard and code run from stdin. A child here imports only its own module (not
as ``__main__``, so its classes keep their names for pickle), calls its ``child_main(argv)``, and
talks to the parent through a `multiprocessing.connection.Connection` (pickled messages) on the inherited
socket; the parent's ``wait`` covers several children at once. Children run in their own session, so
Ctrl-C reaches the parent only and the parent stops them. If the parent dies, their pipe reaches its end of
file: a child must watch for it whenever it runs (bench's workers check it on every tick of their run, the
trivial server waits on it) and then end.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from multiprocessing.connection import Connection

STOP_GRACE_S = 5.0
_BOOT = "import sys; from {module} import child_main; child_main(sys.argv)"


def start_child(module: str, payload: object) -> tuple[subprocess.Popen[bytes], Connection]:
    """Run ``module.child_main`` in a new interpreter; ``payload`` is the first message it receives."""
    parent_socket, child_socket = socket.socketpair()
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", _BOOT.format(module=module), str(child_socket.fileno())],
            pass_fds=(child_socket.fileno(),),
            start_new_session=True,
        )
    finally:
        child_socket.close()
    connection = Connection(parent_socket.detach())
    try:
        connection.send(payload)
    except BaseException:  # unpicklable payload, or the child died at once: leave nothing running
        stop_child(process, connection)
        raise
    return process, connection


def child_connection(argv: list[str]) -> Connection:
    """The child's end of the pipe, from its command line."""
    return Connection(int(argv[1]))


def stop_child(process: subprocess.Popen[bytes], connection: Connection) -> None:
    """SIGTERM, then SIGKILL after a grace period; closes the pipe. Idempotent."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_GRACE_S)
    with contextlib.suppress(OSError):
        connection.close()
