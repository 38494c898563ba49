"""V2 server and model metadata, as plain dicts both V2 front-ends (REST JSON, gRPC messages) render.

Model metadata describes the default signature (``serving_default``): V2 has no signatures, so a model is
its default one. ``versions`` lists the versions that are AVAILABLE now, newest first, as strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from modelserve import __version__
from modelserve.codecs.v2_datatypes import datatype_name
from modelserve.core.signature import Signature, TensorSpec
from modelserve.core.version_state import VersionState, VersionStatus
from modelserve.errors import InvalidArgument

SERVER_NAME = "modelserve"
# Triton's names for the extensions we implement (its binary_tensor_data is the HTTP one).
EXTENSIONS = ("binary_tensor_data",)

# Triton's platform names where ours differ, so Triton tooling recognises the model kind.
_PLATFORMS = {"tensorflow": "tensorflow_savedmodel"}


def server_metadata() -> dict[str, Any]:
    """The ``GET /v2`` / ServerMetadata reply."""
    return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}


def parse_version(version: str | None) -> int | None:
    """A V2 version string as our version number; empty or None means the latest."""
    if not version:
        return None
    if not version.isdigit() or int(version) > 2**63 - 1:
        raise InvalidArgument(f"invalid model version '{version}': versions are non-negative integers")
    return int(version)


def available_versions(statuses: Sequence[VersionStatus]) -> list[str]:
    """The AVAILABLE versions among ``statuses``, as V2 version strings."""
    return [str(status.version) for status in statuses if status.state is VersionState.AVAILABLE]


def tensor_metadata(name: str, spec: TensorSpec) -> dict[str, Any]:
    """One input or output: name, datatype, shape (-1 for variable dimensions, [-1] for unknown rank)."""
    shape = [-1] if spec.shape is None else [-1 if d is None else d for d in spec.shape]
    return {"name": name, "datatype": datatype_name(spec.dtype), "shape": shape}


def model_metadata(name: str, versions: Sequence[str], platform: str, signature: Signature) -> dict[str, Any]:
    """The ``GET /v2/models/{m}`` / ModelMetadata reply."""
    return {
        "name": name,
        "versions": list(versions),
        "platform": _PLATFORMS.get(platform, platform),
        "inputs": [tensor_metadata(alias, spec) for alias, spec in signature.inputs.items()],
        "outputs": [tensor_metadata(alias, spec) for alias, spec in signature.outputs.items()],
    }
