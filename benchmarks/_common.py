"""Helpers shared by the benchmark scripts: wrk, h2load, server processes, the machine record.

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


def ensure_tool(tool: str, package: str, brew: str) -> str:
    """Find ``tool``, installing Debian's ``package`` with apt when running as root, so the script runs on
    a fresh machine."""
    found = shutil.which(tool)
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"{tool} not found: installing {package} with apt-get", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=False, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq", package], check=False, stdout=subprocess.DEVNULL)
        found = shutil.which(tool)
    if found is None:
        sys.exit(f"{tool} is needed: sudo apt-get install {package} (Debian/Ubuntu) or brew install {brew}")
    return found


def ensure_wrk() -> str:
    """wrk: the HTTP/1.1 load generator."""
    return ensure_tool("wrk", "wrk", "wrk")


def ensure_h2load() -> str:
    """h2load (nghttp2): an HTTP/2 load generator in C, what wrk is to REST for gRPC."""
    return ensure_tool("h2load", "nghttp2-client", "nghttp2")


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


@dataclass(frozen=True, slots=True)
class H2loadResult:
    """One h2load run: requests/s, exact p50 and p99, and the calls that failed."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def grpc_frame(message: bytes) -> bytes:
    """A gRPC message on the wire: uncompressed flag, big-endian length, the message."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def _h2load_command(
    h2load: str, url: str, body_file: Path, streams: int, seconds: int, connections: int
) -> list[str]:
    return [
        h2load, "-t1", f"-c{connections}", f"-m{streams}", f"-D{seconds}", "-d", str(body_file),
        "-H", "content-type: application/grpc", "-H", "te: trailers", url,
    ]  # fmt: skip


def warm_h2load(
    h2load: str, url: str, body_file: Path, streams: int, seconds: int, connections: int = 1
) -> None:
    """A warm-up run of ``run_h2load``'s load, not measured. h2load's own ``--warm-up-time`` is not used:
    its DATA byte total would then include the warm-up, and hide failed calls of the window."""
    command = _h2load_command(h2load, url, body_file, streams, seconds, connections)
    subprocess.run(command, capture_output=True, check=True, timeout=seconds + 60)


def run_h2load(
    h2load: str,
    url: str,
    body_file: Path,
    streams: int,
    seconds: int,
    reply_data_bytes: int,
    log_file: Path,
    connections: int = 1,
) -> H2loadResult:
    """One measured ``h2load -t1`` run of unary gRPC calls: ``connections`` HTTP/2 connections (1: as a
    gRPC channel) with ``streams`` calls in flight each, posting ``body_file`` (a framed gRPC message).

    h2load knows HTTP, not gRPC: a call that fails answers HTTP 200 with a ``grpc-status`` trailer and no
    message, and h2load counts it as succeeded. Every successful reply carries exactly
    ``reply_data_bytes`` of DATA (the same request gets the same reply), so the calls that got no message
    are counted from h2load's DATA total (this run only: warm up with ``warm_h2load``); h2load's failed
    streams (4xx, 5xx, resets) and 3xx replies count too. Percentiles come from h2load's per-request log.
    """
    command = _h2load_command(h2load, url, body_file, streams, seconds, connections)
    command.insert(-1, f"--log-file={log_file}")
    log_file.unlink(missing_ok=True)  # h2load appends to an existing log
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    out = result.stdout
    finished = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", out)
    data = re.search(r"traffic: .*?, .*?, .*?\((\d+)\) data", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    if result.returncode != 0 or not (finished and data and codes and done):
        raise RuntimeError(f"unexpected h2load output:\n{out}\n{result.stderr}")
    lines = log_file.read_text().split()
    durations = [int(d) for status, d in zip(lines[1::3], lines[2::3], strict=True) if status == "200"]
    redirects, succeeded, failed = int(codes.group(2)), int(done.group(2)), int(done.group(3))
    without_message = max(0, succeeded - redirects - int(data.group(1)) // reply_data_bytes)
    latencies = sorted(durations) or [0]
    return H2loadResult(
        rps=float(finished.group(2)),
        p50_ms=latencies[len(latencies) // 2] / 1000,
        p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] / 1000,
        errors=failed + without_message + redirects,
    )


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
