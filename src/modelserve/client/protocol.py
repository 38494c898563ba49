"""The interface every protocol implements, and what they share: the signature cache and input naming.

A protocol turns the client's calls into plans (see `calls`). Implementations must be safe to use from
many threads and tasks at once: they hold no per-call state, only the signature cache, whose entries are
replaced whole (a lost race fetches the same metadata twice, nothing worse).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from modelserve.client.calls import ModelRef, Plan
from modelserve.client.errors import ModelServerError
from modelserve.client.metadata import ModelMetadata, ModelStatus
from modelserve.errors import Code, ServingError

Inputs = Mapping[str, Any] | np.ndarray
"""Named input tensors, or one array for a model with a single input."""

_CACHE_LIMIT = 1024  # signatures kept per client; a gateway calls a handful of models


class Api(ABC):
    """One protocol over one transport kind (TF Serving or V2; REST or gRPC)."""

    def __init__(self) -> None:
        self._signatures: dict[ModelRef, ModelMetadata] = {}

    @abstractmethod
    def predict(
        self, ref: ModelRef, inputs: Inputs, output_filter: Sequence[str] | None
    ) -> Plan[dict[str, np.ndarray]]:
        """Run the model on ``inputs``; the outputs ``output_filter`` names (all when None)."""

    @abstractmethod
    def fetch_metadata(self, ref: ModelRef) -> Plan[ModelMetadata]:
        """Ask the server for the signature ``ref`` names."""

    @abstractmethod
    def model_status(self, ref: ModelRef) -> Plan[ModelStatus]:
        """Every version of the model (or the one ``ref`` names) with its state."""

    @abstractmethod
    def is_ready(self, ref: ModelRef | None) -> Plan[bool]:
        """Whether the model (version) can serve, or with None the whole server; False, not an error."""

    def model_metadata(self, ref: ModelRef) -> Plan[ModelMetadata]:
        """Fetch the signature and remember it for later predicts."""
        metadata = yield from self.fetch_metadata(ref)
        if len(self._signatures) >= _CACHE_LIMIT:
            self._signatures.clear()
        self._signatures[ref] = metadata
        return metadata

    def signature(self, ref: ModelRef) -> Plan[ModelMetadata]:
        """The remembered signature, fetched on first use (predicts that need names or dtypes)."""
        found = self._signatures.get(ref)
        if found is None:
            found = yield from self.model_metadata(ref)
        return found

    def forget(self, ref: ModelRef) -> None:
        """Drop a signature that no longer matches the replies (a new version changed it)."""
        self._signatures.pop(ref, None)

    def named_inputs(self, ref: ModelRef, inputs: Inputs) -> Plan[dict[str, np.ndarray]]:
        """``inputs`` keyed by input name; a bare array takes the signature's only input name."""
        if isinstance(inputs, Mapping):
            return {name: as_array(name, value) for name, value in inputs.items()}
        metadata = yield from self.signature(ref)
        if len(metadata.inputs) != 1:
            raise ModelServerError(
                Code.INVALID_ARGUMENT,
                f"model '{ref.name}' has inputs {sorted(metadata.inputs)}: pass a dict of arrays by name",
            )
        (name,) = metadata.inputs
        return {name: as_array(name, inputs)}


def as_array(name: str, value: Any) -> np.ndarray:
    """A numpy array for a request; text arrays become object arrays (the codecs' string dtype)."""
    array = np.asarray(value)
    if array.dtype.kind in "SU":
        array = array.astype(object)
    if array.dtype.kind not in "biufcO":
        raise ModelServerError(Code.INVALID_ARGUMENT, f"input '{name}': dtype {array.dtype} is not supported")
    return array


def select(outputs: dict[str, np.ndarray], output_filter: Sequence[str] | None) -> dict[str, np.ndarray]:
    """The outputs a filter names, for protocols that cannot ask the server for a subset."""
    if not output_filter:
        return outputs
    missing = [name for name in output_filter if name not in outputs]
    if missing:
        raise ModelServerError(
            Code.INVALID_ARGUMENT,
            f"output_filter names unknown outputs {missing}; the model has {sorted(outputs)}",
        )
    return {name: outputs[name] for name in output_filter}


def codec_error(error: ServingError) -> ModelServerError:
    """A server codec's error raised on the client side (encoding a request, decoding a reply)."""
    return ModelServerError(error.code, error.message)


NOT_READY = frozenset({Code.NOT_FOUND, Code.UNAVAILABLE, Code.INVALID_ARGUMENT, Code.FAILED_PRECONDITION})
"""Errors a readiness probe reports as "not ready" (V2 answers 400, an unknown model 404, a down server
UNAVAILABLE) rather than raising."""
