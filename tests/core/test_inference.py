"""The shared request pipeline: input validation, output selection, inline vs threaded runs, deadlines."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest

from modelserve.config.model_config import ModelConfig
from modelserve.core.inference import (
    InferenceService,
    InferenceSettings,
    ModelSpec,
    select_outputs,
    validate_inputs,
)
from modelserve.core.manager import ModelManager
from modelserve.core.signature import STRING, Signature, TensorSpec
from modelserve.core.source import AspiredVersion
from modelserve.errors import DeadlineExceeded, Internal, InvalidArgument

SIGNATURE = Signature(
    name="serving_default",
    inputs={
        "x": TensorSpec("x", np.dtype(np.float32), (None, 4)),
        "s": TensorSpec("s", STRING, (None,)),
    },
    outputs={
        "y": TensorSpec("y", np.dtype(np.float32), (None, 1)),
        "z": TensorSpec("z", np.dtype(np.int64), (None,)),
    },
)


def good_inputs() -> dict[str, np.ndarray]:
    return {"x": np.zeros((2, 4), np.float32), "s": np.array([b"a", b"b"], dtype=object)}


def test_valid_inputs_pass_and_safe_casts_apply() -> None:
    checked = validate_inputs(SIGNATURE, good_inputs())
    assert checked["x"].dtype == np.float32
    ints = {**good_inputs(), "x": np.zeros((2, 4), np.float64)}
    assert validate_inputs(SIGNATURE, ints)["x"].dtype == np.float32


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"x": None}, "Missing but required: {x}"),
        ({"extra": np.zeros(1)}, "Sent extra: {extra}"),
        ({"x": np.zeros((2, 5), np.float32)}, "input 'x' has shape [2,5] but the signature expects [-1,4]"),
        ({"x": np.zeros((4,), np.float32)}, "input 'x' has shape [4]"),
        ({"x": np.array([["a"] * 4], dtype=object)}, "input 'x' expects dtype float32 but string"),
        ({"s": np.zeros((2,), np.float32)}, "input 's' expects dtype string but float32"),
        ({"x": np.zeros((2, 4), np.complex64)}, "input 'x' expects dtype float32 but complex64"),
    ],
)
def test_invalid_inputs_name_the_input(change: dict[str, np.ndarray | None], message: str) -> None:
    inputs: dict[str, np.ndarray] = good_inputs()
    for name, value in change.items():
        if value is None:
            inputs.pop(name)
        else:
            inputs[name] = value
    with pytest.raises(InvalidArgument) as raised:
        validate_inputs(SIGNATURE, inputs)
    assert message in raised.value.message


def test_select_outputs() -> None:
    assert select_outputs(SIGNATURE, None) == ["y", "z"]
    assert select_outputs(SIGNATURE, ["z", "z"]) == ["z"]
    with pytest.raises(InvalidArgument, match="output tensor alias not found in signature: w"):
        select_outputs(SIGNATURE, ["w"])


class SlowServable:
    """Sleeps ``delay`` per call and reports the thread it ran on."""

    platform = "fake"

    def __init__(self, delay: float, fail: bool = False) -> None:
        self.delay = delay
        self.fail = fail
        self.threads: list[str] = []

    @property
    def signatures(self) -> Mapping[str, Signature]:
        return {"serving_default": SIGNATURE}

    def predict(
        self, signature_name: str, inputs: Mapping[str, np.ndarray], output_names: Sequence[str]
    ) -> dict[str, np.ndarray]:
        self.threads.append(threading.current_thread().name)
        if self.fail:
            raise ValueError("the framework choked")
        time.sleep(self.delay)
        return {"y": np.ones((2, 1), np.float32)}

    def memory_bytes(self) -> int:
        return 0

    def close(self) -> None:
        pass


def serve(servable: SlowServable, settings: InferenceSettings) -> InferenceService:
    manager = ModelManager(lambda config, path: servable)
    manager.set_models([ModelConfig(name="m", base_path="/m")])
    manager.set_aspired_versions("m", [AspiredVersion(1, Path("/m/1"))])
    assert manager.wait_until_settled(10)
    return InferenceService(manager, settings)


async def call(service: InferenceService, timeout: float | None = None) -> dict[str, np.ndarray]:
    with service.handle(ModelSpec("m")) as handle:
        return await service.predict(handle, handle.signature(None), good_inputs(), ["y"], timeout)


def test_cheap_calls_run_inline_after_the_first_measurement() -> None:
    servable = SlowServable(0.0)
    service = serve(servable, InferenceSettings(inline_threshold_seconds=0.01))

    async def main() -> None:
        for _ in range(3):
            await call(service)

    asyncio.run(main())
    # The first call's cost is unknown, so it runs on a worker thread; then it is known to be cheap.
    assert servable.threads[0].startswith("modelserve-infer")
    assert servable.threads[1:] == [threading.current_thread().name] * 2


def test_expensive_calls_stay_off_the_event_loop() -> None:
    servable = SlowServable(0.02)
    service = serve(servable, InferenceSettings(inline_threshold_seconds=0.001))
    asyncio.run(call(service))
    asyncio.run(call(service))
    assert all(name.startswith("modelserve-infer") for name in servable.threads)


def test_deadline_exceeded() -> None:
    service = serve(SlowServable(0.5), InferenceSettings(inline_threshold_seconds=0.0))
    with pytest.raises(DeadlineExceeded, match="Deadline exceeded after 50 ms"):
        asyncio.run(call(service, timeout=0.05))


def test_runtime_errors_become_internal() -> None:
    service = serve(SlowServable(0.0, fail=True), InferenceSettings())
    with pytest.raises(Internal, match="ValueError: the framework choked"):
        asyncio.run(call(service))
