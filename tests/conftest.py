"""Shared fixtures: generated model repositories and a real ``modelserve serve`` process.

Servers bind OS-assigned ports (``--ephemeral_ports``) and report them in ``--ready_file``, which the server
writes atomically once its models are loaded and its ports are open: tests wait on that file, never on a
fixed sleep or on log lines.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest


@dataclass
class ServerProcess:
    """A ``modelserve serve`` subprocess on 127.0.0.1 with OS-assigned ports."""

    args: list[str]
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    rest_port: int = 0
    grpc_port: int = 0
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, timeout: float = 120.0) -> ServerProcess:
        ready = self.workdir / "ready.json"
        ready.unlink(missing_ok=True)
        command = [
            sys.executable, "-m", "modelserve", "serve",
            "--rest_api_host=127.0.0.1", "--grpc_host=127.0.0.1",
            "--ephemeral_ports", f"--ready_file={ready}", *self.args,
        ]  # fmt: skip
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"server not ready after {timeout}s:\n{self.log()}")
            time.sleep(0.02)
        ports = json.loads(ready.read_text())
        self.rest_port = ports["rest_port"] or 0
        self.grpc_port = ports["grpc_port"] or 0
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the graceful path every deployment uses. Returns the exit code."""
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


def _server_factory(root: Path) -> Iterator[object]:
    started: list[ServerProcess] = []

    def start(*args: str) -> ServerProcess:
        workdir = root / f"server{len(started)}"
        workdir.mkdir()
        server = ServerProcess(list(args), workdir)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        code = server.stop()
        assert code == 0, f"server exited with {code}:\n{server.log()}"


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[object]:
    """Factory: ``start_server(*flags)`` starts a server; every server is stopped (and must exit 0)."""
    yield from _server_factory(tmp_path)


@pytest.fixture(scope="module")
def start_module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Like ``start_server``, for a server shared by the tests of one module (read-only tests)."""
    yield from _server_factory(tmp_path_factory.mktemp("servers"))


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Base path of the tiny ONNX MLP (version 1): x float32 [-1, 64] -> y float32 [-1, 10]."""
    from modelserve.demo.models import write_tiny_mlp

    base = tmp_path_factory.mktemp("models") / "tiny"
    write_tiny_mlp(base, version=1)
    return base


@pytest.fixture(scope="session")
def digits_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from modelserve.demo.models import write_digits_classifier

    base = tmp_path_factory.mktemp("models") / "digits"
    write_digits_classifier(base, version=1)
    return base


@pytest.fixture(scope="session")
def half_plus_two_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("tensorflow")
    from modelserve.demo.models import write_half_plus_two

    base = tmp_path_factory.mktemp("models") / "half_plus_two"
    write_half_plus_two(base, version=123)
    return base


@pytest.fixture
def run_without_tensorflow() -> Callable[[str], str]:
    """Run a Python snippet in a fresh interpreter where ``import tensorflow`` fails; returns its stdout.

    A None entry in ``sys.modules`` makes the import raise ImportError, as if TensorFlow were not installed.
    """
    src = Path(__file__).resolve().parents[1] / "src"

    def run(snippet: str) -> str:
        script = 'import sys\nsys.modules["tensorflow"] = None\n' + textwrap.dedent(snippet)
        done = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            env={"PYTHONPATH": str(src)},
            check=True,
        )
        return done.stdout

    return run


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
