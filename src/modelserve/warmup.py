"""Model warm-up: run a freshly loaded version a few times before it becomes AVAILABLE.

The first calls of a model are slow (lazy initialisation, memory allocation, graph optimisation); without
warm-up the first clients of every new version pay for them. ``warm_up`` runs on the loader thread right
after a runtime loaded a version:

- ``<version>/assets.extra/tf_serving_warmup_requests`` present: replay its records as TF Serving does. The
  file is a TFRecord file of serialized ``tensorflow.serving.PredictionLog`` protos; ``predict_log``,
  ``classify_log`` and ``regress_log`` records are run, each ``iterations`` times.
- no file (a modelserve extension; TF Serving then skips warm-up): call each signature once with
  zero-filled inputs (empty strings for string inputs), unknown dimensions set to 1. Classify and regress
  signatures are skipped: their serialized tf.Examples have required features zero-filling cannot invent.

Any failure is a ``FailedPrecondition`` naming the record or signature; the caller then discards the
version instead of serving a model that fails on its first requests.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from google.protobuf.message import DecodeError

from modelserve.codecs.tensor_proto import decode_tensor
from modelserve.codecs.tf_input import serialized_examples
from modelserve.codecs.tfrecord import read_records
from modelserve.core.inference import select_outputs, validate_inputs
from modelserve.core.servable import Servable
from modelserve.core.signature import (
    CLASSIFY_METHOD,
    DEFAULT_SIGNATURE,
    REGRESS_METHOD,
    STRING,
    Signature,
    TensorSpec,
    check_examples_signature,
)
from modelserve.errors import FailedPrecondition, InvalidArgument, NotFound, ServingError
from modelserve.proto.tensorflow_serving.apis.prediction_log_pb2 import PredictionLog

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
"""Where TF Serving looks for warm-up requests, relative to the version directory."""

MAX_RECORDS = 1000
"""TF Serving's limit on the records of one warm-up file."""

WarmupMode = Literal["file", "generic", "skipped"]

_REPLAYED = ("predict_log", "classify_log", "regress_log")


@dataclass(frozen=True, slots=True)
class WarmupOptions:
    """How to warm up (``--enable_model_warmup``, ``--num_request_iterations_for_warmup``)."""

    enabled: bool = True
    # Times each record of a warm-up file is replayed (the generic warm-up calls each signature once).
    iterations: int = 1
    # More records than this in a warm-up file is an error (TF Serving's limit is 1000).
    max_records: int = MAX_RECORDS

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise InvalidArgument(f"warm-up iterations must be at least 1, got {self.iterations}")
        if self.max_records < 1:
            raise InvalidArgument(f"warm-up max_records must be at least 1, got {self.max_records}")


@dataclass(frozen=True, slots=True)
class WarmupReport:
    """What a warm-up did: from the file, generic (zero-filled) or skipped, and how long it took."""

    mode: WarmupMode
    calls: int = 0
    seconds: float = 0.0
    # Records read from the warm-up file (mode "file").
    records: int = 0
    # Signatures the generic warm-up could not call, with the reason (mode "generic").
    skipped_signatures: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """One log line, e.g. ``replayed 3 warm-up records (6 calls) from assets.extra/... in 12.0 ms``."""
        took = f"in {self.seconds * 1000:.1f} ms"
        if self.mode == "skipped":
            return "warm-up disabled"
        if self.mode == "file":
            return f"replayed {self.records} warm-up records ({self.calls} calls) from {WARMUP_FILE} {took}"
        total = self.calls + len(self.skipped_signatures)
        text = f"called {self.calls} of {total} signatures with zero-filled inputs {took}"
        by_reason: dict[str, list[str]] = {}
        for name, why in self.skipped_signatures.items():
            by_reason.setdefault(why, []).append(name)
        for why, names in by_reason.items():
            text += f"; skipped {', '.join(names)}: {why}"
        return text


def warm_up(servable: Servable, path: Path, options: WarmupOptions) -> WarmupReport:
    """Warm up the version loaded from ``path`` (``<base_path>/<version>``) before it is served.

    Runs on the loader thread; calls ``servable.predict`` directly. Raises ``FailedPrecondition`` when a
    warm-up call fails or the warm-up file is unusable; the caller closes the servable and records the
    error as the version's load error.
    """
    if not options.enabled:
        return WarmupReport("skipped")
    start = time.perf_counter()
    file = path / WARMUP_FILE
    if file.exists():
        records, calls = _replay_file(servable, file, options)
        return WarmupReport("file", calls, time.perf_counter() - start, records=records)
    calls, skipped = _warm_up_generic(servable)
    return WarmupReport("generic", calls, time.perf_counter() - start, skipped_signatures=skipped)


# -- the warm-up file ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Call:
    """One model call a warm-up record stands for, validated against its signature."""

    signature: str
    inputs: dict[str, np.ndarray]
    outputs: list[str]


def _replay_file(servable: Servable, file: Path, options: WarmupOptions) -> tuple[int, int]:
    """Replay every record ``options.iterations`` times; returns (records, calls)."""
    logs = _read_logs(file, options.max_records)
    signatures = servable.signatures
    calls = 0
    for index, log in enumerate(logs):
        kind = log.WhichOneof("log_type")
        where = _record_label(log, kind)
        try:
            call = _call_of(log, kind, signatures)
            for _ in range(options.iterations):
                servable.predict(call.signature, call.inputs, call.outputs)
                calls += 1
        except Exception as exc:
            raise FailedPrecondition(f"warm-up failed on record {index} ({where}): {_cause(exc)}") from exc
    return len(logs), calls


def _read_logs(file: Path, max_records: int) -> list[Any]:
    """Every record of the file parsed as a PredictionLog, all read before any is run."""
    try:
        records = list(itertools.islice(read_records(file), max_records + 1))
    except (ServingError, OSError) as exc:
        raise FailedPrecondition(f"warm-up failed: {_cause(exc)}") from exc
    if len(records) > max_records:
        raise FailedPrecondition(
            f"warm-up failed: {file} has more than {max_records} records, the most a warm-up file may hold"
        )
    logs = []
    for index, record in enumerate(records):
        try:
            logs.append(PredictionLog.FromString(record))
        except DecodeError as exc:
            raise FailedPrecondition(
                f"warm-up failed on record {index}: not a tensorflow.serving.PredictionLog ({exc})"
            ) from exc
    return logs


def _record_label(log: Any, kind: str | None) -> str:
    """``predict, signature serving_default``: what a record runs, for error messages."""
    if kind in _REPLAYED:
        request = getattr(log, kind).request
        name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        return f"{kind.removesuffix('_log')}, signature {name}"
    return kind or "no log type"


def _call_of(log: Any, kind: str | None, signatures: Mapping[str, Signature]) -> _Call:
    if kind == "predict_log":
        request = log.predict_log.request
        signature = _signature(signatures, request.model_spec.signature_name)
        inputs = {name: decode_tensor(tensor) for name, tensor in request.inputs.items()}
        outputs = select_outputs(signature, list(request.output_filter))
        return _Call(signature.name, validate_inputs(signature, inputs), outputs)
    if kind in ("classify_log", "regress_log"):
        request = getattr(log, kind).request
        signature = _signature(signatures, request.model_spec.signature_name)
        check_examples_signature(signature, CLASSIFY_METHOD if kind == "classify_log" else REGRESS_METHOD)
        inputs = {next(iter(signature.inputs)): serialized_examples(request.input)}
        return _Call(signature.name, validate_inputs(signature, inputs), list(signature.outputs))
    if kind is None:
        raise InvalidArgument("the PredictionLog holds no request (no log_type is set)")
    raise InvalidArgument(
        f"unsupported warm-up record type; modelserve replays {', '.join(_REPLAYED)} records"
    )


def _signature(signatures: Mapping[str, Signature], name: str) -> Signature:
    key = name or DEFAULT_SIGNATURE
    signature = signatures.get(key)
    if signature is None:
        # TF Serving's message (servables/tensorflow/util.cc), plus what there is.
        raise NotFound(
            f'Serving signature name: "{key}" not found in signature def '
            f"(the model has: {', '.join(sorted(signatures))})"
        )
    return signature


def _warm_up_generic(servable: Servable) -> tuple[int, dict[str, str]]:
    """Call each predict signature once with synthesised inputs; returns (calls, skipped signatures)."""
    calls = 0
    skipped: dict[str, str] = {}
    for name, signature in servable.signatures.items():
        inputs, why_not = _synthesise_inputs(signature)
        if inputs is None:
            skipped[name] = why_not
            continue
        try:
            servable.predict(name, inputs, list(signature.outputs))
        except Exception as exc:
            raise FailedPrecondition(
                f"warm-up with zero-filled inputs failed on signature {name}: {_cause(exc)}; provide "
                f"{WARMUP_FILE} or pass --enable_model_warmup=false"
            ) from exc
        calls += 1
    return calls, skipped


def _synthesise_inputs(signature: Signature) -> tuple[dict[str, np.ndarray] | None, str]:
    """Zero-filled inputs for ``signature``, or None and the reason it cannot have them."""
    if signature.method_name in (CLASSIFY_METHOD, REGRESS_METHOD):
        return None, "a classify or regress signature takes serialized tf.Examples, which cannot be made up"
    if not signature.outputs:
        return None, "no outputs to compute"
    inputs: dict[str, np.ndarray] = {}
    for name, spec in signature.inputs.items():
        array = _zero_input(spec)
        if array is None:
            return None, f"input '{name}' has dtype {spec.dtype}, which cannot be synthesised"
        inputs[name] = array
    return inputs, ""


def _zero_input(spec: TensorSpec) -> np.ndarray | None:
    """A zero (or empty-string) tensor of ``spec``'s shape, unknown dimensions 1, unknown rank ``(1,)``.

    None when no value of the dtype can be made up (a dtype that is neither a number, a bool nor a string).
    """
    shape = (1,) if spec.shape is None else tuple(1 if d is None or d < 0 else d for d in spec.shape)
    if spec.dtype == STRING:
        array = np.empty(shape, dtype=object)
        array[...] = b""
        return array
    if spec.dtype.kind in "biufc":
        return np.zeros(shape, dtype=spec.dtype)
    return None


def _cause(exc: BaseException) -> str:
    if isinstance(exc, ServingError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"
