"""Helpers for the stack's tests: command lines of real ``modelserve serve`` and ``modelserve stack`` runs.

Every process binds ports on 127.0.0.1 that the OS assigned (``--ephemeral_ports``, ``--port 0``) or that
were free a moment ago (nginx, which cannot report its port); readiness is a ready file, never a sleep.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil


def serve_argv(ready: Path, *flags: str) -> list[str]:
    """``modelserve serve`` on 127.0.0.1, OS-assigned ports, reporting them in ``ready``."""
    return [
        sys.executable, "-m", "modelserve", "serve", "--rest_api_host=127.0.0.1", "--grpc_host=127.0.0.1",
        "--ephemeral_ports", f"--ready_file={ready}", *flags,
    ]  # fmt: skip


# A handler for the tiny ONNX MLP (x float32 [-1, 64] -> y float32 [-1, 10]): {"x": [64 floats]} in,
# {"argmax", "y", "pid"} out. ?marker=PATH creates that file when the request reaches the worker, and
# ?sleep=S then holds it there: a test knows a request is in flight without sleeping itself.
TINY_HANDLER = """
import os
import time
from pathlib import Path

import numpy as np

from modelserve.gateway import HttpError, Request

MODEL = "tiny"


def preprocess(request: Request) -> dict[str, np.ndarray]:
    body = request.json()
    if "x" not in body:
        raise HttpError(400, "send {'x': [64 floats]}")
    if "marker" in request.query:
        Path(request.query["marker"]).touch()
    if "sleep" in request.query:
        time.sleep(float(request.query["sleep"]))
    return {"x": np.asarray([body["x"]], np.float32)}


def postprocess(request: Request, outputs: dict[str, np.ndarray]) -> object:
    y = outputs["y"][0]
    return {"argmax": int(np.argmax(y)), "y": y.tolist(), "pid": os.getpid()}
"""


@dataclass
class StackRun:
    """A ``python -m modelserve.stack`` subprocess and what its ready file says."""

    argv: list[str]
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def ready_path(self) -> Path:
        return self.workdir / "stack.ready.json"

    @property
    def output_path(self) -> Path:
        return self.workdir / "stack.out"

    @property
    def url(self) -> str:
        return str(self.state["url"])

    def start(self, timeout: float = 60.0) -> StackRun:
        self.ready_path.unlink(missing_ok=True)
        command = [
            sys.executable, "-m", "modelserve.stack", *self.argv,
            f"--ready-file={self.ready_path}", f"--log-dir={self.workdir / 'logs'}",
        ]  # fmt: skip
        with self.output_path.open("ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self.ready_path.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"stack exited with {self.process.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                self.process.kill()
                raise RuntimeError(f"stack not ready after {timeout}s:\n{self.output()}")
            time.sleep(0.05)
        self.state = json.loads(self.ready_path.read_text())
        return self

    def output(self) -> str:
        return self.output_path.read_text(errors="replace") if self.output_path.exists() else ""

    def all_pids(self) -> list[int]:
        """Every pid the ready file names: the stack's children and their workers."""
        pids = self.state["pids"]
        found = [pids["model_server"], pids["gateway"], *pids.get("gateway_workers", [])]
        if pids.get("nginx"):
            found += [pids["nginx"], *pids.get("nginx_workers", [])]
        return found

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; returns the exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def still_running(pids: list[int]) -> list[int]:
    """The pids among ``pids`` that still run (zombies count as gone: they hold no memory)."""
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            continue
    return alive
