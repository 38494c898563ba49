"""TensorFlow SavedModel adapter; TensorFlow is imported only when a SavedModel is loaded.

Signatures are read from the SavedModel's MetaGraphDef (``saved_model.pb``) rather than from the loaded
functions, so names, dtypes, shapes, tensor names (``x:0``) and method names (predict / classify / regress)
are exactly what TF Serving reports. Aliases are sorted: proto maps have no order, and ours must be stable.

Execution goes through ``tf.saved_model.load(...).signatures``, which serves TF2 SavedModels and TF1-style
ones written with ``SavedModelBuilder`` alike (for TF1 ones, each signature is a function pruned from the
graph between its input and output tensors). Inputs are converted from numpy (DT_STRING from object arrays
of bytes); outputs come back as numpy (strings as object arrays of bytes).

Process-wide settings: TensorFlow sizes its thread pools and picks its devices once, when its runtime
initialises, so the first load's ``RuntimeSettings`` decide them for every later model; a later load that
asks for something else logs a warning.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelserve.codecs.tf_dtypes import numpy_dtype
from modelserve.core.servable import RuntimeSettings
from modelserve.core.signature import Dim, Signature, TensorSpec
from modelserve.errors import FailedPrecondition, Internal, InvalidArgument, NotFound, ResourceExhausted

log = logging.getLogger(__name__)

PLATFORM = "tensorflow"

# TF2 SavedModels carry their initializer as a signature_def; TF Serving hides it from metadata too.
_HIDDEN_SIGNATURES = frozenset({"__saved_model_init_op"})

_process_lock = threading.Lock()
# The settings TensorFlow's runtime was initialised with (None until the first load).
_process_settings: tuple[int, int, bool] | None = None


def _import_tensorflow(settings: RuntimeSettings) -> Any:
    """Import TensorFlow and, on the first call, size its thread pools and choose its devices."""
    global _process_settings
    # TensorFlow's C++ INFO/WARNING lines would drown the server's own log.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise FailedPrecondition(
            f"serving a SavedModel needs TensorFlow ({exc}): pip install 'modelserve[tensorflow]'"
        ) from exc
    wanted = (settings.intra_op_threads, settings.inter_op_threads, settings.use_gpu)
    with _process_lock:
        if _process_settings is None:
            _process_settings = wanted
            try:
                # 0 keeps TensorFlow's default (one thread per core for each pool).
                if settings.intra_op_threads > 0:
                    tf.config.threading.set_intra_op_parallelism_threads(settings.intra_op_threads)
                if settings.inter_op_threads > 0:
                    tf.config.threading.set_inter_op_parallelism_threads(settings.inter_op_threads)
                if not settings.use_gpu:
                    tf.config.set_visible_devices([], "GPU")
            except RuntimeError as exc:
                # Something in this process ran TensorFlow before the first load: its pools stay.
                log.warning("TensorFlow was already initialised; thread and device settings ignored: %s", exc)
        elif _process_settings != wanted:
            log.warning(
                "TensorFlow's threads and devices are set once per process: keeping "
                "intra_op=%d inter_op=%d use_gpu=%s, not %s",
                *_process_settings,
                wanted,
            )
    return tf


# -- signatures ----------------------------------------------------------------------------------------------


def _tensor_spec(alias: str, info: Any) -> TensorSpec | None:
    dtype = numpy_dtype(int(info.dtype))
    if dtype is None:
        return None
    shape: tuple[Dim, ...] | None
    if not info.HasField("tensor_shape") or info.tensor_shape.unknown_rank:
        shape = None
    else:
        shape = tuple(None if d.size < 0 else int(d.size) for d in info.tensor_shape.dim)
    # Composite (sparse, ragged) tensors have no single name; they cannot be fed from a dense array anyway.
    return TensorSpec(name=alias, dtype=dtype, shape=shape, tensor_name=info.name)


def _is_batched(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> bool:
    """Dimension 0 is a batch dimension: every input lets it vary and no output contradicts it.

    The same rule as the ONNX runtime's. An unknown-rank input (serialized examples) makes no promise; an
    unknown-rank output is trusted to follow the inputs; a scalar or fixed first dimension cannot be split.
    """
    if not inputs or not all(s.shape and s.shape[0] is None for s in inputs):
        return False
    return all(s.shape is None or (s.shape and s.shape[0] is None) for s in outputs)


def _read_saved_model(path: Path) -> Any:
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    binary, text = path / "saved_model.pb", path / "saved_model.pbtxt"
    source = binary if binary.is_file() else text
    if not source.is_file():
        raise FailedPrecondition(f"no saved_model.pb or saved_model.pbtxt in {path}")
    try:
        if source is binary:
            saved_model.ParseFromString(source.read_bytes())
        else:
            text_format.Parse(source.read_text(), saved_model)
    except Exception as exc:  # DecodeError, ParseError, UnicodeDecodeError
        raise InvalidArgument(f"cannot parse {source}: {exc}") from exc
    return saved_model


def read_signatures(path: Path, tags: Sequence[str]) -> dict[str, Signature]:
    """The servable signatures of the meta graph whose tag set is exactly ``tags``, sorted by key."""
    saved_model = _read_saved_model(path)
    wanted = set(tags)
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == wanted:
            break
    else:
        found = [sorted(m.meta_info_def.tags) for m in saved_model.meta_graphs]
        raise FailedPrecondition(f"no meta graph with tags {sorted(wanted)} in {path}; it has {found}")
    signatures: dict[str, Signature] = {}
    for name in sorted(meta_graph.signature_def):
        if name in _HIDDEN_SIGNATURES:
            continue
        signature_def = meta_graph.signature_def[name]
        inputs = {a: _tensor_spec(a, signature_def.inputs[a]) for a in sorted(signature_def.inputs)}
        outputs = {a: _tensor_spec(a, signature_def.outputs[a]) for a in sorted(signature_def.outputs)}
        unsupported = [a for a, s in (*inputs.items(), *outputs.items()) if s is None]
        if unsupported:
            log.warning(
                "%s: signature %r has tensors of unsupported dtypes %s; skipping it", path, name, unsupported
            )
            continue
        typed_inputs = {a: s for a, s in inputs.items() if s is not None}
        typed_outputs = {a: s for a, s in outputs.items() if s is not None}
        signatures[name] = Signature(
            name=name,
            inputs=typed_inputs,
            outputs=typed_outputs,
            method_name=signature_def.method_name,
            batched=_is_batched(list(typed_inputs.values()), list(typed_outputs.values())),
        )
    return signatures


# -- errors --------------------------------------------------------------------------------------------------

# TF's Python layer prefixes graph errors with where the failing op was *defined* (a Python traceback of the
# exporter's code) and suffixes the eager function's name; TF Serving shows neither.
_EAGER_SUFFIX = re.compile(r"\s*\[Op:__inference_[^\]]*\]\s*$")


def tf_error_message(exc: BaseException) -> str:
    """TF's own message of an error, without the Python-only decorations."""
    message = str(getattr(exc, "message", "") or exc)
    message = message.removeprefix("Graph execution error:").lstrip("\n")
    return _EAGER_SUFFIX.sub("", _drop_python_traces(message)).strip()


def _drop_python_traces(message: str) -> str:
    """Remove "Detected at node X defined at (most recent call last):" and the Python frames after it.

    The frames are indented, blank-separated or "<stack traces unavailable>"; they describe the process
    that built the graph, not the request, and would leak paths into client errors.
    """
    kept: list[str] = []
    skipping = False
    for line in message.split("\n"):
        if line.startswith("Detected at node") and line.endswith("(most recent call last):"):
            skipping = True
            continue
        if skipping and (
            not line.strip() or line[:1].isspace() or line.strip() == "<stack traces unavailable>"
        ):
            continue
        skipping = False
        kept.append(line)
    return "\n".join(kept)


# -- servable ------------------------------------------------------------------------------------------------


class TensorFlowServable:
    """A loaded SavedModel; signature functions are thread-safe and release the GIL while they compute."""

    platform = PLATFORM

    def __init__(self, tf: Any, loaded: Any, signatures: dict[str, Signature], path: Path) -> None:
        self._tf = tf
        self._loaded: Any = loaded
        self._signatures = signatures
        self._path = path
        self._functions: dict[str, Any] = {name: loaded.signatures[name] for name in signatures}
        self._string_inputs = {
            name: frozenset(a for a, spec in sig.inputs.items() if spec.is_string)
            for name, sig in signatures.items()
        }
        self._memory = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())

    @property
    def signatures(self) -> Mapping[str, Signature]:
        return self._signatures

    def predict(
        self, signature_name: str, inputs: Mapping[str, np.ndarray], output_names: Sequence[str]
    ) -> dict[str, np.ndarray]:
        tf = self._tf
        function = self._functions.get(signature_name)
        if function is None:
            if self._loaded is None:
                raise FailedPrecondition("this SavedModel version has been unloaded")
            raise NotFound(f'Serving signature name: "{signature_name}" not found in signature def')
        strings = self._string_inputs[signature_name]
        try:
            # DT_STRING must be asked for: TF cannot infer it from an object array. Numeric arrays go in as
            # they are; the signature function converts them (as fast as tf.constant first).
            feed = {
                alias: tf.constant(value, dtype=tf.string) if alias in strings else value
                for alias, value in inputs.items()
            }
            results = function(**feed)
        except tf.errors.InvalidArgumentError as exc:
            raise InvalidArgument(tf_error_message(exc)) from exc
        except tf.errors.ResourceExhaustedError as exc:
            raise ResourceExhausted(tf_error_message(exc)) from exc
        except (TypeError, ValueError) as exc:
            # Binding the feed to the function's TensorSpecs failed (shape or dtype), or a string did not
            # convert: the request is at fault.
            # TF appends the whole feed (array reprs included) after "Received args": not for a reply.
            reason = str(exc).split(". Received args", 1)[0]
            raise InvalidArgument(f"the input does not fit signature {signature_name!r}: {reason}") from exc
        except tf.errors.OpError as exc:
            raise Internal(f"TensorFlow failed running {signature_name!r}: {tf_error_message(exc)}") from exc
        outputs: dict[str, np.ndarray] = {}
        for alias in output_names:
            value = results[alias].numpy()
            if not isinstance(value, np.ndarray):  # a scalar string comes back as bare bytes
                value = np.asarray(value, dtype=object)
            outputs[alias] = value
        return outputs

    def memory_bytes(self) -> int:
        """On-disk size of the SavedModel (graph and variables), an estimate of what loading it holds.

        Not the RSS growth during load: versions load in parallel on loader threads, and the first load also
        pays for TensorFlow's own runtime, so the growth cannot be attributed to one version.
        """
        return self._memory

    def close(self) -> None:
        # TensorFlow frees variables and functions when the last reference to them goes.
        self._functions = {}
        self._loaded = None


class TensorFlowRuntime:
    """Loads SavedModels with the configured tags (default ``serve``)."""

    platform = PLATFORM

    def load(self, path: Path, settings: RuntimeSettings) -> TensorFlowServable:
        tf = _import_tensorflow(settings)
        tags = list(settings.saved_model_tags) or ["serve"]
        signatures = read_signatures(path, tags)
        try:
            loaded = tf.saved_model.load(str(path), tags=tags)
        except MemoryError as exc:
            raise ResourceExhausted(f"out of memory loading SavedModel {path}") from exc
        except Exception as exc:  # missing variables, unknown ops, corrupt checkpoints, ...
            raise InvalidArgument(f"cannot load SavedModel {path}: {tf_error_message(exc)}") from exc
        missing = [name for name in signatures if name not in loaded.signatures]
        for name in missing:
            log.warning("%s: signature %r has no function after loading; leaving it out", path, name)
            del signatures[name]
        servable = TensorFlowServable(tf, loaded, signatures, path)
        log.info("loaded SavedModel %s with signatures %s", path, ", ".join(signatures))
        return servable
