"""The coupled architecture answers exactly as the stack does for the same handler and request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stack"))
from stack_support import StackRun  # type: ignore[import-not-found]  # tests/stack's harness

from modelserve.coupled.command import coupled_argv

# The tiny MLP (x float32 [-1, 64] -> y float32 [-1, 10]); no pid in the answer, so both can be compared.
HANDLER = """
import numpy as np
from modelserve.gateway import HttpError, Request

MODEL = "tiny"

def preprocess(request: Request) -> dict[str, np.ndarray]:
    body = request.json()
    if "x" not in body:
        raise HttpError(400, "send {'x': [64 floats]}")
    return {"x": np.asarray([body["x"]], np.float64)}  # float64: the model server casts to float32

def postprocess(request: Request, outputs: dict[str, np.ndarray]) -> object:
    y = outputs["y"][0]
    return {"argmax": int(np.argmax(y)), "y": y.tolist()}
"""
X = np.round(np.random.default_rng(7).standard_normal(64), 3).tolist()


@pytest.fixture
def handler(tmp_path: Path) -> Path:
    path = tmp_path / "coupled_tiny_handler.py"
    path.write_text(HANDLER)
    return path


class Coupled:
    """A ``python -m modelserve.coupled`` subprocess on an OS-assigned port, ready by its ready file."""

    def __init__(self, argv: list[str], workdir: Path) -> None:
        self.ready = workdir / "coupled.ready.json"
        self.log = workdir / "coupled.log"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, *argv, f"--ready-file={self.ready}"],
                                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + 60
        while not self.ready.exists():
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)
        self.url = json.loads(self.ready.read_text())["url"]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(30)


@pytest.fixture
def coupled_runs() -> Iterator[list[Coupled]]:
    runs: list[Coupled] = []
    yield runs
    for run in runs:
        assert run.stop() == 0, run.log.read_text()


@pytest.mark.parametrize("worker_class", ["sync", "asyncio"])
def test_the_coupled_app_answers_as_the_stack_does(
    tmp_path: Path, handler: Path, tiny_repo: Path, coupled_runs: list[Coupled], worker_class: str
) -> None:
    argv = coupled_argv(str(handler), model_name="tiny", model_base_path=str(tiny_repo), bind="127.0.0.1:0",
                        workers=2, worker_class=worker_class)  # fmt: skip
    coupled = Coupled(argv, tmp_path)
    coupled_runs.append(coupled)
    stack = StackRun(
        [str(handler), "--model_name=tiny", f"--model_base_path={tiny_repo}", "--rest_api_port=0",
         "--grpc_port=0", "--port=0", "--workers=1"],
        tmp_path,
    ).start()  # fmt: skip
    try:
        for body in ({"x": X}, {"nope": 1}, {"x": [1.0, 2.0]}):
            from_stack = httpx.post(f"{stack.url}/predict", json=body, timeout=30)
            from_coupled = httpx.post(f"{coupled.url}/predict", json=body, timeout=30)
            assert from_coupled.status_code == from_stack.status_code, (body, from_coupled.text)
            if from_stack.status_code == 200:
                assert from_coupled.json()["argmax"] == from_stack.json()["argmax"]
                np.testing.assert_allclose(from_coupled.json()["y"], from_stack.json()["y"], rtol=1e-6)
            else:
                assert "error" in from_coupled.json()
        assert httpx.get(f"{coupled.url}/readyz", timeout=10).json()["status"] == "ready"
    finally:
        assert stack.stop() == 0, stack.output()
    # Every worker holds its own model: two workers under the Gunicorn master.
    workers = psutil.Process(coupled.process.pid).children()
    assert len(workers) == 2


def test_the_generated_gunicorn_conf_runs_the_coupled_app_under_its_worker_class(
    tmp_path: Path, handler: Path, tiny_repo: Path
) -> None:
    from modelserve.tune.outputs import gunicorn_conf_text
    from modelserve.tune.space import TrialConfig

    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(
        gunicorn_conf_text(TrialConfig("coupled", "gevent", 1), timeout_s=30, graceful_timeout_s=5)
    )
    socket = tmp_path / "coupled.sock"
    environment = {**os.environ, "MODELSERVE_HANDLER": str(handler), "MODELSERVE_MODEL_NAME": "tiny",
                   "MODELSERVE_MODEL_BASE_PATH": str(tiny_repo)}  # fmt: skip
    log = (tmp_path / "gunicorn.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(conf), f"--bind=unix:{socket}"],
        env=environment, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
    )  # fmt: skip
    try:
        client = httpx.Client(transport=httpx.HTTPTransport(uds=str(socket)), base_url="http://coupled")
        deadline = time.monotonic() + 60
        while True:  # the socket exists once the master binds; a worker answers once its model is loaded
            assert process.poll() is None, (tmp_path / "gunicorn.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "gunicorn.log").read_text()
            try:
                if client.get("/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        assert client.post("/predict", json={"x": X}, timeout=30).status_code == 200
        assert client.get("/stats", timeout=30).json()["gateway"]["worker_class"] == "gevent"
    finally:
        process.terminate()
        assert process.wait(30) == 0, (tmp_path / "gunicorn.log").read_text()
        log.close()
