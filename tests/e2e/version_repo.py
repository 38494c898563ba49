"""Helpers for the model-version e2e tests: versioned ONNX models that say which version answered, ways to
publish them (atomic rename, or an in-place copy file by file), a background load generator, status polling.

Version ``N`` of the ``add`` model computes ``y = x + N`` on ``x`` float32 [batch, 2], so a request with
zeros gets ``[[N, N]]`` back: the body tells which version answered, and must agree with the
``x-model-version`` header (REST) or ``model_spec.version`` (gRPC).

Imported by the test modules of this folder (pytest puts the folder of a test module on ``sys.path``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import requests

ZEROS = [[0.0, 0.0]]


def add_model_bytes(value: float, pad_floats: int = 0, work: int = 0) -> bytes:
    """A serialized ONNX model computing ``y = x + value`` (``x``, ``y`` float32 [batch, 2]).

    Both options add ``0 * something`` to ``y``, so they change nothing in what the model answers:

    - ``pad_floats``: a float initializer of that many elements (makes the file, and the memory guard's
      estimate, larger);
    - ``work``: two chained matrix products of ``work`` x ``work`` computed from ``x`` (about
      ``2 * work**3`` flops a call), so that calls take time and requests are in flight during swaps.
    """
    import onnx
    from onnx import TensorProto, numpy_helper
    from onnx.helper import make_graph, make_model, make_node, make_opsetid, make_tensor_value_info

    def constant(name: str, array: np.ndarray) -> None:
        initializers.append(numpy_helper.from_array(array.astype(np.float32), name))

    initializers: list[Any] = []
    constant("k", np.full((1, 2), value))
    nodes = [make_node("Add", ["x", "k"], ["y"] if not (pad_floats or work) else ["sum"])]
    terms = []
    if pad_floats:
        constant("pad", np.arange(pad_floats))
        nodes.append(make_node("ReduceMax", ["pad"], ["pad_max"], keepdims=1))  # [1]
        terms.append("pad_max")
    if work:
        constant("w", np.full((2, work), 1e-3))
        nodes += [
            make_node("MatMul", ["x", "w"], ["h"]),  # [batch, work]
            make_node("Transpose", ["h"], ["h_t"]),  # [work, batch]
            make_node("MatMul", ["h_t", "h"], ["outer"]),  # [work, work]
            make_node("MatMul", ["outer", "outer"], ["square"]),
            make_node("ReduceMax", ["square"], ["work_max"], keepdims=1),  # [1, 1]
        ]
        terms.append("work_max")
    if terms:
        constant("zero", np.zeros(1))
        nodes += [
            make_node("Sum", terms, ["total"]),
            make_node("Mul", ["total", "zero"], ["nothing"]),
            make_node("Add", ["sum", "nothing"], ["y"]),
        ]
    graph = make_graph(
        nodes,
        "add",
        [make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        initializers,
    )
    model = make_model(graph, opset_imports=[make_opsetid("", 17)], producer_name="modelserve.tests")
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model.SerializeToString()


def publish(base: Path, version: int, model: bytes) -> Path:
    """Write ``model.onnx`` under a hidden name, then rename the directory to ``base/<version>`` (atomic)."""
    base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{version}-", dir=base))
    staging.chmod(0o755)
    (staging / "model.onnx").write_bytes(model)
    target = base / str(version)
    os.replace(staging, target)
    return target


def copy_in_place(
    base: Path,
    version: int,
    model: bytes,
    chunks: int = 4,
    pause: float = 0.0,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Create ``base/<version>`` and fill it file by file, ``model.onnx`` last and chunk by chunk, with
    ``pause`` seconds after each write: what a plain ``cp -r`` of a large version looks like."""
    target = base / str(version)
    target.mkdir(parents=True, exist_ok=True)
    for name, data in (extra_files or {}).items():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_bytes(data)
        if pause:
            time.sleep(pause)
    step = max(1, -(-len(model) // chunks))
    with (target / "model.onnx").open("wb") as out:
        for start in range(0, len(model), step):
            out.write(model[start : start + step])
            out.flush()
            os.fsync(out.fileno())
            if pause:
                time.sleep(pause)
    return target


def remove_version(base: Path, version: int) -> None:
    shutil.rmtree(base / str(version))


def statuses(url: str, model: str) -> dict[int, dict[str, Any]]:
    """``GET /v1/models/<model>`` as version -> entry ({} when the model is unknown)."""
    reply = requests.get(f"{url}/v1/models/{model}", timeout=10)
    if reply.status_code == 404:
        return {}
    reply.raise_for_status()
    return {int(entry["version"]): entry for entry in reply.json()["model_version_status"]}


def available(url: str, model: str) -> set[int]:
    return {v for v, entry in statuses(url, model).items() if entry["state"] == "AVAILABLE"}


def wait_for(
    predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05, what: str = "condition"
) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned); AssertionError at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def wait_serving_only(url: str, model: str, version: int, timeout: float = 15.0) -> float:
    """Wait until ``version`` is the only AVAILABLE version of ``model``; returns the monotonic time then."""
    wait_for(lambda: available(url, model) == {version}, timeout, what=f"{model} serving only v{version}")
    return time.monotonic()


@dataclass
class Answer:
    """One request of a ``LoadGenerator``: when it was sent and answered, and what came back."""

    sent: float
    received: float
    ok: bool
    version: int | None = None  # the header / model_spec version
    value: float | None = None  # the body's y[0][0]
    detail: str = ""


@dataclass
class LoadGenerator:
    """Sends requests with ``send`` in a thread until stopped (or ``max_seconds``); records every answer.

    ``send`` returns (ok, version, value, detail) and may raise: an exception counts as a failure.
    """

    send: Callable[[], tuple[bool, int | None, float | None, str]]
    name: str = "load"
    max_seconds: float = 30.0
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> LoadGenerator:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            sent = time.monotonic()
            try:
                ok, version, value, detail = self.send()
            except Exception:
                ok, version, value, detail = False, None, None, traceback.format_exc(limit=2)
            self.answers.append(Answer(sent, time.monotonic(), ok, version, value, detail))

    def stop(self) -> list[Answer]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        return self.answers

    def wait_for_answers(self, count: int, timeout: float = 10.0) -> None:
        start = len(self.answers)
        wait_for(
            lambda: len(self.answers) >= start + count, timeout, what=f"{count} answers from {self.name}"
        )

    def wait_for_answers_since(self, start: float, count: int, timeout: float = 10.0) -> None:
        wait_for(lambda: len(self.since(start)) >= count, timeout, what=f"{count} answers from {self.name}")

    def since(self, start: float, end: float = float("inf")) -> list[Answer]:
        """Answers to requests sent at or after ``start`` and answered at or before ``end``."""
        return [a for a in self.answers if a.sent >= start and a.received <= end]


def rest_predict_sender(
    url: str, model: str, path: str = "", headers: dict[str, str] | None = None
) -> Callable[[], tuple[bool, int | None, float | None, str]]:
    """A ``send`` for ``LoadGenerator``: REST predict on ``/v1/models/<model><path>:predict`` with zeros."""
    session = requests.Session()
    target = f"{url}/v1/models/{model}{path}:predict"

    def send() -> tuple[bool, int | None, float | None, str]:
        reply = session.post(target, json={"instances": ZEROS}, headers=headers, timeout=15)
        if reply.status_code != 200:
            return False, None, None, f"{reply.status_code} {reply.text[:300]}"
        header = reply.headers.get("x-model-version")
        version = int(header) if header is not None else None
        value = float(reply.json()["predictions"][0][0])
        return True, version, value, ""

    return send


def rest_predict(
    url: str, model: str, path: str = "", headers: dict[str, str] | None = None
) -> tuple[int, float]:
    """One REST predict with zeros; asserts 200 and returns (x-model-version, y[0][0])."""
    reply = requests.post(
        f"{url}/v1/models/{model}{path}:predict", json={"instances": ZEROS}, headers=headers, timeout=15
    )
    assert reply.status_code == 200, reply.text
    return int(reply.headers["x-model-version"]), float(reply.json()["predictions"][0][0])


def describe(answers: list[Answer], limit: int = 20) -> str:
    return "\n".join(
        f"  t={a.sent:.3f}..{a.received:.3f} ok={a.ok} version={a.version} value={a.value} {a.detail}"
        for a in answers[:limit]
    )


def check_consistent(answers: list[Answer], allowed: set[int]) -> None:
    """Every answer succeeded, came from an allowed version, and its body agrees with its version."""
    failed = [a for a in answers if not a.ok]
    assert not failed, f"{len(failed)} of {len(answers)} requests failed:\n{describe(failed)}"
    outside = [a for a in answers if a.version not in allowed]
    assert not outside, f"answers from versions outside {sorted(allowed)}:\n{describe(outside)}"
    mismatched = [a for a in answers if a.value != a.version]
    assert not mismatched, f"body value disagrees with the served version:\n{describe(mismatched)}"
