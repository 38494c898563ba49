"""Framework adapters, imported lazily: choosing a platform imports only that framework.

Platform names are TF Serving's and Triton's spellings; each maps to a ``"module:Class"`` string.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from modelserve.core.servable import Runtime
from modelserve.errors import FailedPrecondition, InvalidArgument

_RUNTIMES: dict[str, str] = {
    "onnx": "modelserve.runtimes.onnx:OnnxRuntime",
    "tensorflow": "modelserve.runtimes.tensorflow:TensorFlowRuntime",
}

_ALIASES: dict[str, str] = {
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "onnxruntime_onnx": "onnx",
    "tensorflow": "tensorflow",
    "tensorflow_savedmodel": "tensorflow",
    "tf": "tensorflow",
}

_INSTALL_HINT: dict[str, str] = {
    "tensorflow": "pip install 'modelserve[tensorflow]'",
    "onnx": "pip install onnxruntime",
}


def canonical_platform(name: str) -> str:
    """Map a ``model_platform`` spelling to our runtime key, or raise naming the accepted values."""
    key = _ALIASES.get(name.strip().lower())
    if key is None:
        accepted = ", ".join(sorted(_ALIASES))
        raise InvalidArgument(f"unknown model_platform {name!r}; accepted: {accepted}")
    return key


def detect_platform(version_dir: Path) -> str | None:
    """Guess the runtime from the files of one version directory (None when nothing matches)."""
    if (version_dir / "saved_model.pb").is_file() or (version_dir / "saved_model.pbtxt").is_file():
        return "tensorflow"
    if (version_dir / "model.onnx").is_file() or any(version_dir.glob("*.onnx")):
        return "onnx"
    return None


def get_runtime(platform: str) -> Runtime:
    """Import and instantiate the runtime for ``platform``; a missing framework gives an install hint."""
    key = canonical_platform(platform)
    module_name, _, class_name = _RUNTIMES[key].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise FailedPrecondition(
            f"the {key} runtime is not installed ({exc.name or exc}); install it with: {_INSTALL_HINT[key]}"
        ) from exc
    runtime: Runtime = getattr(module, class_name)()
    return runtime
