"""The two seams between the core and the ML frameworks: a Runtime loads a version into a Servable.

Runtimes live in ``modelserve.runtimes`` and are imported lazily, so the core never imports a framework.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from modelserve.core.signature import Signature


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    """Knobs every runtime honours; TF Serving's parallelism flags map onto them.

    0 means "let the framework decide" for the thread counts.
    """

    intra_op_threads: int = 0
    inter_op_threads: int = 0
    saved_model_tags: tuple[str, ...] = ("serve",)
    use_gpu: bool = True


class Servable(Protocol):
    """One loaded model version: the single copy in memory that every request shares.

    Contract:
    - ``predict`` is thread-safe and may be called from any thread; it releases the GIL while the framework
      computes where the framework allows it.
    - ``inputs`` have already been validated against the signature (names, dtypes, shapes) by the core;
      ``output_names`` is a non-empty subset of the signature's outputs.
    - Errors the framework raises on valid input are reported as ``modelserve.errors.Internal`` (or
      ``InvalidArgument`` when the framework can tell the input is at fault).
    - ``close`` is called once, after the last in-flight request finished; it frees the model's memory.
    """

    @property
    def platform(self) -> str:
        """The platform name reported in metadata, e.g. ``onnxruntime_onnx`` or ``tensorflow``."""
        ...

    @property
    def signatures(self) -> Mapping[str, Signature]:
        """Signatures keyed by name; the default one is ``serving_default``."""
        ...

    def predict(
        self,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str],
    ) -> dict[str, np.ndarray]:
        """Run one signature on one (possibly batched) request."""
        ...

    def memory_bytes(self) -> int:
        """Host memory this version holds (weights and framework state), best estimate."""
        ...

    def close(self) -> None:
        """Free the version's memory. Idempotent."""
        ...


class Runtime(Protocol):
    """Loads model versions of one framework from a directory.

    ``load`` runs on a loader thread and may take seconds; it raises ``ServingError`` (or any exception,
    which the manager records as the version's load error).
    """

    platform: str

    def load(self, path: Path, settings: RuntimeSettings) -> Servable:
        """Load the version stored in ``path`` (``<base_path>/<version>/``)."""
        ...
