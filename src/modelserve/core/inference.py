"""The request pipeline every front-end shares: resolve a version, validate inputs, run, time out.

Front-ends decode their wire format into numpy arrays keyed by signature input names, call
``InferenceService.predict`` and encode what comes back; nothing here knows about HTTP or gRPC.

Where a call runs: on a version served with batching (``BatchingServable``), the request joins the
version's batch queue and batch threads run it merged with others. Otherwise a model call that has been
measured to take less than ``inline_threshold`` runs directly on the event loop, because handing it to a
thread and back costs more than the call itself (tens of microseconds of loop time per request). Slower
calls run on a thread pool sized to the cores, where the framework releases the GIL, so the loop keeps
parsing other requests meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from modelserve.batching.servable import BatchingServable
from modelserve.batching.tensors import batch_rows
from modelserve.core.handle import ServableHandle
from modelserve.core.loop_load import LoopLoad
from modelserve.core.manager import ModelManager
from modelserve.core.signature import Signature
from modelserve.cpus import available_cpus
from modelserve.errors import DeadlineExceeded, Internal, InvalidArgument, ServingError


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Which model version a request addresses: by number, by label, or the latest."""

    name: str
    version: int | None = None
    label: str | None = None
    # Makes an A/B split's choice sticky: equal keys get the same version (REST header x-routing-key).
    routing_key: str | None = None


@dataclass(frozen=True, slots=True)
class InferenceSettings:
    """Execution knobs of the pipeline."""

    # Calls measured below this run on the event loop; 0 disables inline execution.
    inline_threshold_seconds: float = 0.0005
    # Threads running model calls that are too slow to run inline; 0 = number of cores.
    executor_threads: int = 0
    # Default deadline of a request (TF Serving's --rest_api_timeout_in_ms); None = no deadline.
    timeout_seconds: float | None = 30.0


@dataclass(frozen=True, slots=True)
class PreparedCall:
    """A validated request, ready to run: inline on the event loop, or on the inference threads."""

    handle: ServableHandle
    signature_name: str
    inputs: dict[str, np.ndarray]
    outputs: list[str]
    inline: bool
    batched: bool = False


def validate_inputs(signature: Signature, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Check names, dtypes and shapes against ``signature``; errors name the input and both sides."""
    expected = signature.inputs
    if inputs.keys() != expected.keys():
        extra = sorted(set(inputs) - set(expected))
        missing = sorted(set(expected) - set(inputs))
        # TF Serving's wording (predict_util.cc), plus the names.
        raise InvalidArgument(
            f"input size does not match signature: {len(inputs)}!={len(expected)} "
            f"len({{{','.join(sorted(inputs))}}}) != len({{{','.join(sorted(expected))}}}). "
            f"Sent extra: {{{','.join(extra)}}}. Missing but required: {{{','.join(missing)}}}."
        )
    checked: dict[str, np.ndarray] = {}
    for name, array in inputs.items():
        spec = expected[name]
        if array.dtype != spec.dtype:
            if spec.is_string or array.dtype == np.dtype(object):
                raise InvalidArgument(
                    f"input '{name}' expects dtype {_dtype_name(spec.dtype)} "
                    f"but {_dtype_name(array.dtype)} was provided"
                )
            if not np.can_cast(array.dtype, spec.dtype, casting="same_kind"):
                raise InvalidArgument(
                    f"input '{name}' expects dtype {_dtype_name(spec.dtype)} "
                    f"but {_dtype_name(array.dtype)} was provided"
                )
            array = array.astype(spec.dtype)
        if not spec.accepts_shape(array.shape):
            got = "[" + ",".join(str(d) for d in array.shape) + "]"
            raise InvalidArgument(
                f"input '{name}' has shape {got} but the signature expects {spec.shape_text()}"
            )
        checked[name] = array
    return checked


def select_outputs(signature: Signature, output_filter: Sequence[str] | None) -> list[str]:
    """The outputs to compute: all (in signature order) or the requested subset, validated."""
    if not output_filter:
        return list(signature.outputs)
    unknown = [name for name in output_filter if name not in signature.outputs]
    if unknown:
        raise InvalidArgument(
            f"output tensor alias not found in signature: {unknown[0]} "
            f"Outputs expected to be in the set {{{','.join(signature.outputs)}}}."
        )
    return list(dict.fromkeys(output_filter))


def _dtype_name(dtype: np.dtype) -> str:
    return "string" if dtype == np.dtype(object) else str(dtype)


class InferenceService:
    """The core entry point of every front-end; holds no per-request state."""

    def __init__(self, manager: ModelManager, settings: InferenceSettings | None = None) -> None:
        self.manager = manager
        self.settings = settings or InferenceSettings()
        threads = self.settings.executor_threads or available_cpus()
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="modelserve-infer")
        self.loop_load = LoopLoad()

    def handle(self, spec: ModelSpec) -> ServableHandle:
        """A ref-counted handle on the addressed version; use it in a ``with`` block."""
        return self.manager.get_handle(spec.name, spec.version, spec.label, spec.routing_key)

    def prepare(
        self,
        handle: ServableHandle,
        signature: Signature,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] | None = None,
    ) -> PreparedCall:
        """Validate one request; the result says whether it may run inline on the event loop."""
        checked = validate_inputs(signature, inputs)
        outputs = select_outputs(signature, output_filter)
        servable = handle.servable
        if isinstance(servable, BatchingServable):
            rows = batch_rows(checked)
            if rows:  # scalars and empty requests run unbatched, below
                inline = (
                    servable.batcher.runs_inline(rows, self.settings.inline_threshold_seconds)
                    and not self._loop_saturated()
                )
                return PreparedCall(handle, signature.name, checked, outputs, inline, batched=not inline)
        avg = handle.avg_run_seconds
        inline = avg is not None and avg < self.settings.inline_threshold_seconds
        return PreparedCall(handle, signature.name, checked, outputs, inline)

    def _loop_saturated(self) -> bool:
        """Whether the calling event loop is saturated (then batching beats running on the loop)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        self.loop_load.watch(loop)
        return self.loop_load.saturated

    def run_inline(self, call: PreparedCall) -> dict[str, np.ndarray]:
        """Run a prepared call on the calling thread (the event loop when ``call.inline``)."""
        return self._run(call.handle, call.signature_name, call.inputs, call.outputs)

    async def run(self, call: PreparedCall, timeout_seconds: float | None = None) -> dict[str, np.ndarray]:
        """Run a prepared call on the inference thread pool, bounded by the request's deadline.

        Takes over the call's handle: it is released when the framework call returns.
        """
        timeout = timeout_seconds if timeout_seconds is not None else self.settings.timeout_seconds
        if call.batched:
            return await self._run_batched(call, timeout)
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(
            self._executor, self._run, call.handle, call.signature_name, call.inputs, call.outputs
        )
        # The call keeps its version alive until the framework returns, even when the caller stops
        # waiting (deadline, cancellation): an unload must never free a model in use.
        future.add_done_callback(lambda _: call.handle.close())
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise DeadlineExceeded(
                f"Deadline exceeded after {(timeout or 0) * 1000:.0f} ms running model "
                f"{call.handle.model} version {call.handle.version}"
            ) from None

    async def _run_batched(self, call: PreparedCall, timeout: float | None) -> dict[str, np.ndarray]:
        servable = call.handle.servable
        assert isinstance(servable, BatchingServable)
        # The batcher releases the handle once the request ran or was dropped.
        ticket = servable.submit(call.signature_name, call.inputs, call.outputs, timeout, call.handle.close)
        try:
            return await asyncio.wait_for(ticket.future, timeout)
        except asyncio.CancelledError:
            ticket.abandon()  # the caller went away: its rows leave the queue now
            raise
        except TimeoutError:
            ticket.abandon()
            raise DeadlineExceeded(
                f"Deadline exceeded after {(timeout or 0) * 1000:.0f} ms waiting for a batch of model "
                f"{call.handle.model} version {call.handle.version}"
            ) from None

    async def predict(
        self,
        handle: ServableHandle,
        signature: Signature,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] | None = None,
        timeout_seconds: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Validate and run one request on ``handle``'s version; returns outputs by alias."""
        call = self.prepare(handle, signature, inputs, output_filter)
        if call.inline:
            return self.run_inline(call)
        return await self.run(call, timeout_seconds)

    @staticmethod
    def _run(
        handle: ServableHandle,
        signature_name: str,
        inputs: dict[str, np.ndarray],
        outputs: list[str],
    ) -> dict[str, np.ndarray]:
        started = time.perf_counter()
        try:
            result = handle.servable.predict(signature_name, inputs, outputs)
        except ServingError:
            raise
        except Exception as exc:  # the runtime's own error on input that passed validation
            raise Internal(f"{type(exc).__name__}: {exc}") from exc
        handle.record_run(time.perf_counter() - started)
        return result

    def close(self) -> None:
        self.loop_load.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)
