"""What the client reports about a model: its status and its signature, one shape for every protocol.

TF Serving describes a model as JSON (REST) or protobuf (gRPC) with the same field names, so the gRPC replies
are turned into the REST JSON (``json_format.MessageToDict``) and one parser reads both. V2 metadata is
flatter (name, versions, platform, tensors) and has one parser for its REST JSON and its gRPC message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelserve.client.errors import ModelServerError
from modelserve.codecs.tf_dtypes import numpy_dtype as tf_numpy_dtype
from modelserve.codecs.v2_datatypes import DATATYPES
from modelserve.codecs.v2_datatypes import numpy_dtype as v2_numpy_dtype
from modelserve.errors import Code

__all__ = ["ModelMetadata", "ModelStatus", "TensorInfo", "VersionStatus"]

DEFAULT_SIGNATURE = "serving_default"

Shape = tuple[int | None, ...]


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One input or output: numpy ``dtype`` (None when numpy has none, e.g. bfloat16), ``shape`` with None
    for dimensions of any size (the server's -1), or ``shape`` None when even the rank is unknown."""

    name: str
    dtype: np.dtype | None
    shape: Shape | None


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """A model version's signature: the input and output tensors a predict call takes and returns."""

    name: str
    versions: tuple[int, ...]  # the version described (TF Serving) or every available one (V2), newest first
    signature_name: str
    inputs: Mapping[str, TensorInfo]
    outputs: Mapping[str, TensorInfo]
    platform: str = ""  # V2 only: "onnxruntime_onnx", "tensorflow_savedmodel"


@dataclass(frozen=True, slots=True)
class VersionStatus:
    """One version's state (START, LOADING, AVAILABLE, UNLOADING, END) and, if it failed, why."""

    version: int
    state: str
    error_code: Code = Code.OK
    error_message: str = ""


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """Every version of a model the server knows, as TF Serving's GetModelStatus reports them."""

    name: str
    versions: tuple[VersionStatus, ...]

    @property
    def available(self) -> bool:
        """Whether some version can serve requests now."""
        return any(status.state == "AVAILABLE" for status in self.versions)


# -- TF Serving ----------------------------------------------------------------------------------------------


def _tf_tensor(alias: str, info: Mapping[str, Any]) -> TensorInfo:
    dtype = tf_numpy_dtype(str(info.get("dtype", "DT_INVALID")))
    shape_json = info.get("tensor_shape", {})
    shape: Shape | None = None
    if not shape_json.get("unknown_rank", False):
        sizes = (int(dim.get("size", 0)) for dim in shape_json.get("dim", []))
        shape = tuple(None if size < 0 else size for size in sizes)
    return TensorInfo(alias, dtype, shape)


def tf_metadata(model: str, document: Mapping[str, Any], signature_name: str | None) -> ModelMetadata:
    """A ``GetModelMetadataResponse`` as JSON: ``{"model_spec": ..., "metadata": {"signature_def": ...}}``."""
    name = signature_name or DEFAULT_SIGNATURE
    signatures = document.get("metadata", {}).get("signature_def", {}).get("signature_def", {})
    signature = signatures.get(name)
    if signature is None:
        raise ModelServerError(
            Code.INVALID_ARGUMENT, f"model '{model}' has no signature '{name}'; it has {sorted(signatures)}"
        )
    version = document.get("model_spec", {}).get("version")
    return ModelMetadata(
        name=model,
        versions=() if version is None else (int(version),),
        signature_name=name,
        inputs={
            alias: _tf_tensor(alias, info) for alias, info in sorted(signature.get("inputs", {}).items())
        },
        outputs={
            alias: _tf_tensor(alias, info) for alias, info in sorted(signature.get("outputs", {}).items())
        },
    )


def tf_status(model: str, document: Mapping[str, Any]) -> ModelStatus:
    """A ``GetModelStatusResponse`` as JSON; defaults left out by protobuf's printer are filled in."""
    versions = []
    for entry in document.get("model_version_status", []):
        status = entry.get("status", {})
        code_name = status.get("error_code", "OK")
        versions.append(
            VersionStatus(
                version=int(entry.get("version", 0)),
                state=str(entry.get("state", "UNKNOWN")),
                error_code=Code[code_name] if code_name in Code.__members__ else Code.UNKNOWN,
                error_message=str(status.get("error_message", "")),
            )
        )
    return ModelStatus(model, tuple(versions))


# -- V2 ------------------------------------------------------------------------------------------------------


def _v2_tensor(name: str, datatype: str, shape: Iterable[Any]) -> TensorInfo:
    dtype = v2_numpy_dtype(datatype) if datatype in DATATYPES else None
    return TensorInfo(name, dtype, tuple(None if int(size) < 0 else int(size) for size in shape))


def v2_metadata(
    name: str,
    versions: Sequence[str],
    platform: str,
    inputs: Iterable[tuple[str, str, Iterable[Any]]],
    outputs: Iterable[tuple[str, str, Iterable[Any]]],
) -> ModelMetadata:
    """V2 model metadata from its fields (REST JSON and gRPC message carry the same ones)."""
    return ModelMetadata(
        name=name,
        versions=tuple(sorted((int(v) for v in versions), reverse=True)),
        signature_name=DEFAULT_SIGNATURE,
        inputs={tensor[0]: _v2_tensor(*tensor) for tensor in inputs},
        outputs={tensor[0]: _v2_tensor(*tensor) for tensor in outputs},
        platform=platform,
    )


def v2_status(metadata: ModelMetadata) -> ModelStatus:
    """V2 has no status call: its metadata lists the AVAILABLE versions, which is what a status says."""
    return ModelStatus(metadata.name, tuple(VersionStatus(v, "AVAILABLE") for v in metadata.versions))
