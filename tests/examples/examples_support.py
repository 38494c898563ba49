"""Helpers for the tests of ``examples/``: import an example's module, build requests, run a model in-process.

The examples are scripts, not a package: their modules are imported by file path under unique names
(``examples_digits_prepare``), so the two ``prepare.py`` files never shadow each other.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import numpy as np
import onnxruntime as ort
import orjson

from modelserve.gateway import Handler, Request

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

Model = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def load_example(example: str, module: str) -> ModuleType:
    """``examples/<example>/<module>.py``, imported once under the name ``examples_<example>_<module>``."""
    name = f"examples_{example}_{module}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, EXAMPLES / example / f"{module}.py")
        assert spec is not None and spec.loader is not None
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[name] = loaded
        spec.loader.exec_module(loaded)
    return sys.modules[name]


def post(body: bytes | object, content_type: str = "application/json") -> Request:
    """A POST request as the gateway hands it to a handler; a body that is not bytes is sent as JSON."""
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {"content-type": content_type} if content_type else {}
    return Request(method="POST", path="/", query={}, headers=headers, body=raw)


class InProcessModel:
    """A model file run by ONNX Runtime in this process: what the model server computes."""

    def __init__(self, path: Path) -> None:
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.outputs = [output.name for output in self.session.get_outputs()]

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs, self.session.run(self.outputs, inputs), strict=True))


def through(handler: Handler, model: Model, request: Request) -> object:
    """preprocess → ``model`` → postprocess, as a gateway worker runs one request."""
    call = handler.model_call(handler.preprocess(request))
    assert call.model == handler.model
    return handler.postprocess(request, model(dict(call.inputs)))


@contextmanager
def gateway(example: str, model_server: str, workdir: Path, timeout: float = 60.0) -> Iterator[str]:
    """``python -m modelserve.gateway`` running the example's handler (one worker, an OS-assigned port).

    Yields its base URL once its ``--ready-file`` exists; stopped with SIGTERM (and must exit 0) after.
    """
    ready = workdir / "gateway.ready.json"
    log_path = workdir / "gateway.log"
    command = [
        sys.executable, "-m", "modelserve.gateway", str(EXAMPLES / example / "handler.py"),
        "--bind", "127.0.0.1:0", "--workers", "1", "--model-server", model_server, f"--ready-file={ready}",
    ]  # fmt: skip
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gateway not ready (exit {process.poll()}):\n{log_path.read_text()}")
            time.sleep(0.02)
        yield str(json.loads(ready.read_text())["url"])
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
    assert code == 0, f"gateway exited with {code}:\n{log_path.read_text()}"
