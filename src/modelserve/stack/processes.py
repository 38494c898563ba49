"""A small supervisor: start child processes with their output in log files, wait until they are ready,
notice when one dies, and stop them in reverse start order, gracefully first.

Each child runs in its own process group, so a Ctrl-C in the terminal reaches only the stack (which then
stops the children in order, each with its own graceful signal) and a forced stop (SIGKILL) also takes
the child's own children (Gunicorn or nginx workers). On Linux each child also gets SIGTERM if the stack
itself dies, so a killed stack leaves nothing behind.

Exceptions::

    StackError                  the stack cannot start or keep running; the message says why
     ├── ChildExited            a child exited while the stack was starting or running
     └── StartupTimeout         a child did not become ready in time
    StopRequested               SIGINT/SIGTERM arrived while the stack was starting (not an error)
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

_LOG_TAIL_LINES = 40
_POLL_SECONDS = 0.05


class StackError(Exception):
    """The stack cannot start or keep running; ``message`` says why (and shows a log tail if useful)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ChildExited(StackError):
    """A child process exited while it was expected to run."""

    def __init__(self, child: ChildProcess, during: str) -> None:
        tail = child.log_tail()
        super().__init__(f"{child.name} {child.describe_exit()} {during}; end of {child.log_path}:\n{tail}")
        self.child = child


class StartupTimeout(StackError):
    """A child did not become ready within the startup timeout."""


class StopRequested(Exception):
    """SIGINT or SIGTERM arrived while the stack was still starting."""


def _parent_death_signal() -> Callable[[], None] | None:
    """Linux: a function for ``preexec_fn`` that makes the child get SIGTERM when the stack dies."""
    if sys.platform != "linux":
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, not in the forked child
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def set_signal() -> None:  # pragma: no cover - runs in the child between fork and exec
        prctl(pr_set_pdeathsig, int(signal.SIGTERM))

    return set_signal


@dataclass
class ChildProcess:
    """One supervised process: its command line, log file and how it stops gracefully."""

    name: str
    argv: Sequence[str]
    log_path: Path
    stop_signal: signal.Signals = signal.SIGTERM
    stop_timeout: float = 30.0
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise RuntimeError(f"{self.name} was not started")
        return self.popen.pid

    def start(self, env: Mapping[str, str] | None = None) -> None:
        """Start the process in its own process group, stdout and stderr appended to ``log_path``."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                process_group=0,
                preexec_fn=_parent_death_signal(),
            )

    def returncode(self) -> int | None:
        """The exit status once the process has exited (negative: killed by that signal), else None."""
        return None if self.popen is None else self.popen.poll()

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def describe_exit(self) -> str:
        code = self.returncode()
        if code is None:
            return "is running"
        if code < 0:
            return f"was killed by {signal.Signals(-code).name}"
        return f"exited with code {code}"

    def stop(self) -> None:
        """Graceful stop: ``stop_signal``, wait up to ``stop_timeout``, then SIGKILL the process group.

        Idempotent. Whatever is left of the process group afterwards (workers orphaned by a killed master)
        is killed too, so nothing the child started outlives it.
        """
        if self.popen is None:
            return
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(self.stop_signal)
            try:
                self.popen.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._append_log(
                    f"modelserve stack: {self.name} still running {self.stop_timeout:g}s after "
                    f"{self.stop_signal.name}: SIGKILL"
                )
                self._kill_group()
                self.popen.wait()
        self._kill_group()

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def _append_log(self, line: str) -> None:
        with self.log_path.open("a") as log:
            log.write(line + "\n")

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the log file (what to show when the child failed)."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 64 * 1024))
                text = log.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


class Supervisor:
    """The stack's children in start order; waits on readiness and stops them in reverse order.

    Not thread-safe: one thread (the main one) calls every method; a signal handler only calls
    ``request_stop``, which is safe there.
    """

    def __init__(self) -> None:
        self.children: list[ChildProcess] = []
        # A plain flag, not a threading.Event: setting an Event takes a lock, and a signal handler that runs
        # while the main thread holds that lock (inside Event.wait) would deadlock.
        self._stop = False

    def request_stop(self) -> None:
        """Ask ``wait_until`` and ``watch`` to return early (safe from a signal handler: no lock)."""
        self._stop = True

    @property
    def stop_requested(self) -> bool:
        return self._stop

    def start(self, child: ChildProcess, env: Mapping[str, str] | None = None) -> ChildProcess:
        child.start(env)
        self.children.append(child)
        return child

    def first_exited(self) -> ChildProcess | None:
        return next((child for child in self.children if not child.running()), None)

    def wait_until(self, what: str, probe: Callable[[], T | None], timeout: float) -> T:
        """Poll ``probe`` until it returns something other than None, and return that.

        Raises ChildExited as soon as any child has exited, StopRequested on SIGINT/SIGTERM, and
        StartupTimeout after ``timeout`` seconds. ``probe`` must return quickly (it is polled).
        """
        deadline = time.monotonic() + timeout
        while True:
            if self._stop:
                raise StopRequested
            exited = self.first_exited()
            if exited is not None:
                raise ChildExited(exited, f"while waiting for {what}")
            result = probe()
            if result is not None:
                return result
            if time.monotonic() > deadline:
                raise StartupTimeout(f"{what}: not ready after {timeout:g}s")
            time.sleep(_POLL_SECONDS)  # a signal interrupts the sleep; the flag is checked right after

    def watch(self, interval: float = 0.2) -> ChildProcess | None:
        """Block until a stop is requested (returns None) or a child exits (returns it)."""
        while not self._stop:
            exited = self.first_exited()
            if exited is not None:
                return exited
            time.sleep(interval)
        return None

    def stop_all(self, on_stop: Callable[[ChildProcess], None] | None = None) -> None:
        """Stop every child, the last started first, each gracefully within its own timeout."""
        for child in reversed(self.children):
            if on_stop is not None and child.running():
                on_stop(child)
            child.stop()
