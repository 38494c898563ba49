"""Helpers shared by the benchmark scripts: wrk, server processes, the machine record.

Every server runs in its own process group (Ctrl-C reaches only the benchmark) and is stopped on success,
errors, Ctrl-C and SIGTERM (``exit_on_sigterm`` turns SIGTERM into SystemExit so the same ``finally``
blocks run). wrk prints exact percentiles through a Lua ``done()`` hook, not its rounded text.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
# wrk's done() hook prints exact percentiles from its latency record (microseconds), not the rounded text.
DONE_HOOK = """done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50.0), latency:percentile(99.0),
    e.connect + e.read + e.write + e.timeout + e.status))
end
"""
LUA = (
    """wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
"""
    + DONE_HOOK
)


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One wrk run: requests/s, exact p50 and p99, and socket errors plus non-2xx replies."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def int_list(text: str) -> list[int]:
    """Parse ``1,8,64`` (argparse type)."""
    return [int(item) for item in text.split(",") if item]


def ensure_wrk() -> str:
    """Find wrk, installing it with apt when running as root, so the script runs on a fresh machine."""
    found = shutil.which("wrk")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk not found: installing it with apt-get", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=False, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False, stdout=subprocess.DEVNULL)
        found = shutil.which("wrk")
    if found is None:
        sys.exit("wrk is needed: sudo apt-get install wrk (Debian/Ubuntu) or brew install wrk (macOS)")
    return found


def write_lua(script: Path, body: str) -> Path:
    """Write the wrk script that POSTs ``body`` (JSON) and prints exact percentiles."""
    script.write_text(LUA.format(body=body))
    return script


def write_lua_file_body(script: Path, body_file: Path, headers: dict[str, str]) -> Path:
    """Write a wrk script that POSTs the bytes of ``body_file`` verbatim (binary-safe: Lua strings hold
    any byte and wrk sends their full length) with ``headers``, and prints exact percentiles."""
    lines = [
        'wrk.method = "POST"',
        f'local file = assert(io.open({json.dumps(str(body_file))}, "rb"))',
        'wrk.body = file:read("*a")',
        "file:close()",
        *(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()),
    ]
    script.write_text("\n".join(lines) + "\n" + DONE_HOOK)
    return script


def run_wrk(
    wrk: str, script: Path, url: str, connections: int, seconds: int, timeout_s: int = 10
) -> WrkResult:
    """One ``wrk -t1`` run of ``seconds``; a request unanswered after ``timeout_s`` counts as an error."""
    command = [
        wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", f"{timeout_s}s", "-s", str(script), url,
    ]  # fmt: skip
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=seconds + timeout_s + 30,
        check=True,
    )
    found = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+) (\d+)", result.stdout)
    if found is None:
        raise RuntimeError(f"unexpected wrk output:\n{result.stdout}\n{result.stderr}")
    requests, micros, p50, p99, errors = (int(group) for group in found.groups())
    return WrkResult(requests / (micros / 1e6), p50 / 1000, p99 / 1000, errors)


def capture_wrk_request(wrk: str, script: Path, path: str) -> tuple[bytes, bytes]:
    """The head and body of the first request ``script`` makes wrk send, caught by a loopback listener:
    proof that what wrk puts on the wire is byte for byte the request we meant."""
    captured: list[tuple[bytes, bytes]] = []

    def serve_first(listener: socket.socket) -> None:
        # wrk may open a connection and close it unused first: serve connections until one carries a request.
        while not captured:
            try:
                conn = listener.accept()[0]
            except OSError:  # timed out, or the listener was closed: give up
                return
            with contextlib.suppress(OSError), conn:
                conn.settimeout(10)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(1 << 16)
                    if not chunk:
                        break
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                if not head:
                    continue
                found = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                length = int(found.group(1)) if found else 0
                while len(body) < length:
                    chunk = conn.recv(1 << 20)
                    if not chunk:
                        break
                    body += chunk
                captured.append((head, body[:length]))
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.settimeout(10)
        catcher = threading.Thread(target=serve_first, args=(listener,), daemon=True)
        catcher.start()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}{path}"
        # wrk only counts the refused reconnections as errors; its output is not read.
        subprocess.run([wrk, "-t1", "-c1", "-d1s", "-s", str(script), url], capture_output=True, timeout=30)
        catcher.join(10)
    if not captured:
        raise RuntimeError(f"wrk sent no request with {script}")
    return captured[0]


def warn_if_busy() -> float:
    """Warn when other work uses the cores: it takes CPU time from whichever target runs meanwhile."""
    import psutil

    busy = float(psutil.cpu_percent(interval=1.0))
    if busy > 10:
        print(f"warning: the CPUs are {busy:.0f}% busy before starting; figures will be noisy", flush=True)
    return busy


def venv_script(name: str) -> str:
    """A console script installed beside this interpreter (``modelserve``, ``gunicorn``)."""
    path = Path(sys.executable).with_name(name)
    if not path.exists():
        sys.exit(f"{path} not found: pip install -e '.[bench]' into {sys.prefix}")
    return str(path)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate the process group (server and its workers), then kill it; bounded by STOP_TIMEOUT_S."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(STOP_TIMEOUT_S)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def running(
    command: list[str], log: IO[bytes], env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server in its own process group (Ctrl-C reaches only us) and always stop it."""
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process
    finally:
        stop(process)


def start_failed(name: str, command: list[str], log: IO[bytes]) -> RuntimeError:
    """The error to raise when a server does not come up: its command and the end of its output."""
    log.flush()
    tail = Path(log.name).read_text(errors="replace")[-3000:]
    return RuntimeError(f"{name} did not start\n$ {' '.join(command)}\n{tail}")


@contextlib.contextmanager
def serving_ready(
    name: str, command: list[str], ready: Path, log: IO[bytes], timeout_s: float = START_TIMEOUT_S
) -> Iterator[dict[str, Any]]:
    """Run ``modelserve serve ... --ready_file=READY``; ready once that file exists; yields its contents
    (``rest_port``, ``grpc_port``, ``pid``)."""
    with running(command, log) as process:
        deadline = time.monotonic() + timeout_s
        # The server writes the file atomically once it serves, so existence means ready.
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise start_failed(name, command, log)
            time.sleep(0.02)
        yield dict(json.loads(ready.read_text()))


@contextlib.contextmanager
def serving(
    name: str, command: list[str], ready: Path, log: IO[bytes], timeout_s: float = START_TIMEOUT_S
) -> Iterator[int]:
    """Run ``modelserve serve ... --ready_file=READY``; ready once that file exists; yields the REST port."""
    with serving_ready(name, command, ready, log, timeout_s) as ports:
        yield int(ports["rest_port"])


def machine(wrk: str, busy_percent: float) -> dict[str, Any]:
    """What the figures were measured on, for the JSON record."""
    import onnxruntime as ort

    wrk_banner = subprocess.run([wrk, "--version"], capture_output=True, text=True).stdout.splitlines()
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "wrk": wrk_banner[0] if wrk_banner else "",
        "cpu_busy_percent_before": busy_percent,
    }


def exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Turn SIGTERM into SystemExit so the servers are stopped by the same finally blocks as Ctrl-C."""
    raise SystemExit(128 + signum)
