"""ONNX Runtime adapter: one ``InferenceSession`` per version, shared by every request.

The session is created once at load with the thread budget from ``RuntimeSettings``; ``predict`` is a
direct ``session.run`` with precomputed names, so the adapter adds about a microsecond per call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from modelserve.core.servable import RuntimeSettings
from modelserve.core.signature import DEFAULT_SIGNATURE, PREDICT_METHOD, STRING, Dim, Signature, TensorSpec
from modelserve.errors import FailedPrecondition, InvalidArgument

# ONNX tensor type strings as onnxruntime reports them -> numpy dtypes.
_ONNX_DTYPES: dict[str, np.dtype] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(double)": np.dtype(np.float64),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(int16)": np.dtype(np.int16),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(uint16)": np.dtype(np.uint16),
    "tensor(uint32)": np.dtype(np.uint32),
    "tensor(uint64)": np.dtype(np.uint64),
    "tensor(bool)": np.dtype(np.bool_),
    "tensor(string)": STRING,
}


def find_model_file(version_dir: Path) -> Path:
    """``model.onnx``, or the only ``*.onnx`` file of the version directory."""
    preferred = version_dir / "model.onnx"
    if preferred.is_file():
        return preferred
    candidates = sorted(version_dir.glob("*.onnx"))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise FailedPrecondition(f"no model.onnx in {version_dir}")
    names = ", ".join(c.name for c in candidates)
    raise FailedPrecondition(
        f"several .onnx files in {version_dir} ({names}): name the one to serve model.onnx"
    )


def _spec(node: object) -> TensorSpec:
    name: str = node.name  # type: ignore[attr-defined]
    type_name: str = node.type  # type: ignore[attr-defined]
    dtype = _ONNX_DTYPES.get(type_name)
    if dtype is None:
        raise FailedPrecondition(f"ONNX tensor {name!r} has unsupported type {type_name}")
    raw_shape = node.shape  # type: ignore[attr-defined]
    # Symbolic ("batch") or missing dimensions are variable.
    shape: tuple[Dim, ...] | None = (
        None if raw_shape is None else tuple(d if isinstance(d, int) and d >= 0 else None for d in raw_shape)
    )
    return TensorSpec(name=name, dtype=dtype, shape=shape, tensor_name=name)


class OnnxServable:
    """A loaded ONNX model; ``predict`` is thread-safe (ONNX Runtime sessions are)."""

    platform = "onnxruntime_onnx"

    def __init__(self, session: object, model_file: Path) -> None:
        self._session = session
        self._run = session.run  # type: ignore[attr-defined]
        inputs = {n.name: _spec(n) for n in session.get_inputs()}  # type: ignore[attr-defined]
        outputs = {n.name: _spec(n) for n in session.get_outputs()}  # type: ignore[attr-defined]
        # dim 0 is a batch dimension when every input and output has a variable first dimension.
        batched = all(s.shape and s.shape[0] is None for s in (*inputs.values(), *outputs.values()))
        self._signatures = {
            DEFAULT_SIGNATURE: Signature(
                name=DEFAULT_SIGNATURE,
                inputs=inputs,
                outputs=outputs,
                method_name=PREDICT_METHOD,
                batched=batched,
            )
        }
        self._string_inputs = frozenset(name for name, spec in inputs.items() if spec.is_string)
        self._model_bytes = model_file.stat().st_size
        data_files = [p for p in model_file.parent.iterdir() if p.is_file() and p != model_file]
        self._model_bytes += sum(p.stat().st_size for p in data_files if p.suffix in (".data", ".bin", ""))

    @property
    def signatures(self) -> Mapping[str, Signature]:
        return self._signatures

    def predict(
        self, signature_name: str, inputs: Mapping[str, np.ndarray], output_names: Sequence[str]
    ) -> dict[str, np.ndarray]:
        feed = dict(inputs)
        for name in self._string_inputs:
            # ONNX Runtime takes str for tensor(string); our wire types carry bytes.
            feed[name] = np.vectorize(_to_str, otypes=[object])(feed[name])
        try:
            results = self._run(output_names, feed)
        except Exception as exc:
            raise InvalidArgument(f"ONNX Runtime rejected the request: {exc}") from exc
        outputs = dict(zip(output_names, results, strict=True))
        for name, value in outputs.items():
            if value.dtype == object:
                outputs[name] = np.vectorize(_to_bytes, otypes=[object])(value)
        return outputs

    def memory_bytes(self) -> int:
        """The size of the model's weights on disk: what the session holds in memory for them."""
        return self._model_bytes

    def close(self) -> None:
        self._session = None
        self._run = None


def _to_str(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _to_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode()


class OnnxRuntime:
    """Loads ``<version_dir>/model.onnx`` into an ONNX Runtime session."""

    platform = "onnxruntime_onnx"

    def load(self, path: Path, settings: RuntimeSettings) -> OnnxServable:
        import onnxruntime as ort

        model_file = find_model_file(path)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = settings.intra_op_threads or (os.cpu_count() or 1)
        options.inter_op_num_threads = settings.inter_op_threads or 1
        # Spinning worker threads burn the cores the HTTP side needs between calls.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        available = ort.get_available_providers()
        providers = ["CPUExecutionProvider"]
        if settings.use_gpu and "CUDAExecutionProvider" in available:
            providers.insert(0, "CUDAExecutionProvider")
        try:
            session = ort.InferenceSession(str(model_file), options, providers=providers)
        except Exception as exc:
            raise InvalidArgument(f"cannot load ONNX model {model_file}: {exc}") from exc
        return OnnxServable(session, model_file)
