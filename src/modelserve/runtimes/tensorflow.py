"""TensorFlow SavedModel adapter; TensorFlow is imported only when a SavedModel is loaded.

Signatures come straight from the SavedModel's MetaGraphDef (``saved_model.pb``), so names, dtypes, shapes,
tensor names (``x:0``) and method names (predict / classify / regress) are exactly what TF Serving
reports. Execution goes through ``tf.saved_model.load(...).signatures``, which serves both TF2 SavedModels
and TF1-style ones written with ``SavedModelBuilder``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelserve.core.servable import RuntimeSettings
from modelserve.core.signature import STRING, Dim, Signature, TensorSpec
from modelserve.errors import FailedPrecondition, InvalidArgument

_threads_lock = threading.Lock()
_threads_configured = False


def _configure_threads(tf: Any, settings: RuntimeSettings) -> None:
    """TF's thread pools can only be sized before TensorFlow initialises: do it once per process."""
    global _threads_configured
    with _threads_lock:
        if _threads_configured:
            return
        _threads_configured = True
        try:
            if settings.intra_op_threads:
                tf.config.threading.set_intra_op_parallelism_threads(settings.intra_op_threads)
            if settings.inter_op_threads:
                tf.config.threading.set_inter_op_parallelism_threads(settings.inter_op_threads)
        except RuntimeError:
            pass  # TensorFlow already initialised (another component used it first): keep its pools


def _spec(alias: str, info: Any, tf: Any) -> TensorSpec:
    dtype = tf.as_dtype(info.dtype)
    numpy_dtype = STRING if dtype == tf.string else np.dtype(dtype.as_numpy_dtype)
    shape: tuple[Dim, ...] | None
    if info.tensor_shape.unknown_rank:
        shape = None
    else:
        shape = tuple(None if d.size < 0 else int(d.size) for d in info.tensor_shape.dim)
    return TensorSpec(name=alias, dtype=numpy_dtype, shape=shape, tensor_name=info.name)


def read_signatures(path: Path, tags: Sequence[str], tf: Any) -> dict[str, Signature]:
    """The signature_def map of the meta graph whose tags match ``tags``."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    try:
        saved_model.ParseFromString((path / "saved_model.pb").read_bytes())
    except Exception as exc:
        raise InvalidArgument(f"cannot parse {path / 'saved_model.pb'}: {exc}") from exc
    wanted = set(tags)
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == wanted:
            break
    else:
        found = [sorted(m.meta_info_def.tags) for m in saved_model.meta_graphs]
        raise FailedPrecondition(f"no meta graph with tags {sorted(wanted)} in {path}; found {found}")
    signatures: dict[str, Signature] = {}
    for name, signature_def in meta_graph.signature_def.items():
        inputs = {alias: _spec(alias, info, tf) for alias, info in signature_def.inputs.items()}
        outputs = {alias: _spec(alias, info, tf) for alias, info in signature_def.outputs.items()}
        batched = all(
            spec.shape is not None and len(spec.shape) > 0 and spec.shape[0] is None
            for spec in (*inputs.values(), *outputs.values())
        )
        signatures[name] = Signature(
            name=name,
            inputs=inputs,
            outputs=outputs,
            method_name=signature_def.method_name,
            batched=batched,
        )
    return signatures


class TensorFlowServable:
    """A loaded SavedModel; signature functions are thread-safe."""

    platform = "tensorflow"

    def __init__(self, tf: Any, loaded: Any, signatures: dict[str, Signature], memory: int) -> None:
        self._tf = tf
        self._loaded = loaded
        self._functions = dict(loaded.signatures)
        self._signatures = signatures
        self._memory = memory

    @property
    def signatures(self) -> Mapping[str, Signature]:
        return self._signatures

    def predict(
        self, signature_name: str, inputs: Mapping[str, np.ndarray], output_names: Sequence[str]
    ) -> dict[str, np.ndarray]:
        tf = self._tf
        function = self._functions.get(signature_name)
        if function is None:
            raise InvalidArgument(f'signature "{signature_name}" cannot be run (it has no function)')
        feed = {
            name: tf.constant(value, dtype=tf.string) if value.dtype == STRING else tf.constant(value)
            for name, value in inputs.items()
        }
        try:
            results = function(**feed)
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as exc:
            message = getattr(exc, "message", None) or str(exc)
            raise InvalidArgument(message.strip().splitlines()[0] if message else repr(exc)) from exc
        outputs: dict[str, np.ndarray] = {}
        for name in output_names:
            value = results[name].numpy()
            if value.dtype.kind in "SO":
                value = np.asarray(value, dtype=object)
            outputs[name] = value
        return outputs

    def memory_bytes(self) -> int:
        """Resident memory the process gained while this version loaded (weights and graph)."""
        return self._memory

    def close(self) -> None:
        self._functions.clear()
        self._loaded = None


class TensorFlowRuntime:
    """Loads SavedModels with the configured tags (default ``serve``)."""

    platform = "tensorflow"

    def load(self, path: Path, settings: RuntimeSettings) -> TensorFlowServable:
        import psutil

        # TensorFlow's C++ INFO/WARNING lines would drown the server's own log.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            import tensorflow as tf
        except ImportError as exc:
            raise FailedPrecondition(
                "a SavedModel needs TensorFlow: pip install 'modelserve[tensorflow]'"
            ) from exc
        _configure_threads(tf, settings)
        if not settings.use_gpu:
            tf.config.set_visible_devices([], "GPU")
        before = psutil.Process().memory_info().rss
        tags = list(settings.saved_model_tags) or ["serve"]
        signatures = read_signatures(path, tags, tf)
        try:
            loaded = tf.saved_model.load(str(path), tags=tags)
        except Exception as exc:
            raise InvalidArgument(f"cannot load SavedModel {path}: {exc}") from exc
        memory = max(0, psutil.Process().memory_info().rss - before)
        return TensorFlowServable(tf, loaded, signatures, memory)
