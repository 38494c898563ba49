"""A real ``modelserve gateway`` (Gunicorn) subprocess for tests, and the handler modules they serve.

The gateway is started through the real command line, ``python -m modelserve gateway``.

The gateway binds 127.0.0.1 port 0 (the OS picks) and reports its URL in ``--ready-file``, which it writes
once every worker has booted: tests wait on that file, never on a sleep or on log lines.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

# Serves the digits classifier. The body picks the behaviour under test:
#   {"pixels": [[64 numbers], ...]}          the model's classes and probabilities, and who served them
#   {"pixels": ..., "model": "other"}        a per-request ModelCall (unknown model -> 404)
#   anything without "pixels"               HttpError 400
#   POST /boom                               a handler bug (RuntimeError) -> 500
#   POST /text                               a non-JSON Response
DIGITS_HANDLER = """
import os

import numpy as np

from modelserve.gateway import HttpError, ModelCall, Request, Response

MODEL = "digits"
STATE = {}


def setup():
    STATE["setup_pid"] = os.getpid()


def preprocess(request: Request):
    if request.path == "/boom":
        raise RuntimeError("handler bug")
    body = request.json()
    if not isinstance(body, dict) or "pixels" not in body:
        raise HttpError(400, "send {'pixels': [[64 numbers]]}")
    inputs = {"images": np.asarray(body["pixels"], np.float32)}
    if "model" in body:
        return ModelCall(inputs, model=body["model"])
    return inputs


def postprocess(request: Request, outputs):
    if request.path == "/text":
        return Response("ok", content_type="text/plain", headers={"X-Handler": "text"})
    return {
        "classes": outputs["classes"],
        "probabilities": outputs["probabilities"],
        "pid": os.getpid(),
        "setup_pid": STATE.get("setup_pid"),
    }
"""


def write_handler(directory: Path, source: str, name: str = "handler.py") -> Path:
    """Write a handler module; returns its path (what ``modelserve gateway`` takes)."""
    path = directory / name
    path.write_text(textwrap.dedent(source))
    return path


@dataclass
class GatewayProcess:
    """``python -m modelserve gateway HANDLER ...`` on 127.0.0.1 with an OS-assigned port."""

    args: list[str]
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    url: str = ""
    pid: int = 0
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / "gateway.log"

    def start(self, timeout: float = 60.0) -> GatewayProcess:
        ready = self.workdir / "gateway-ready.json"
        command = [
            sys.executable, "-m", "modelserve", "gateway", *self.args,
            "--bind", "127.0.0.1:0", "--ready-file", str(ready),
        ]  # fmt: skip
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"gateway not ready after {timeout}s:\n{self.log()}")
            time.sleep(0.02)
        document = json.loads(ready.read_text())
        self.url, self.pid = document["url"], document["pid"]
        assert self.pid == self.process.pid
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (Gunicorn's graceful stop) and wait; returns the exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class Reference:
    """The digits model run in-process by ONNX Runtime: what every gateway answer must equal."""

    def __init__(self, digits_repo: Path) -> None:
        path = digits_repo / "1" / "model.onnx"
        self._session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def __call__(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        probabilities, classes = self._session.run(["probabilities", "classes"], {"images": pixels})
        return {"probabilities": probabilities, "classes": classes}


def pixels(seed: int, rows: int = 1) -> np.ndarray:
    """Distinct, reproducible digit-like inputs: integers 0..16, as scikit-learn's digits are."""
    return np.random.default_rng(seed).integers(0, 17, size=(rows, 64)).astype(np.float32)
