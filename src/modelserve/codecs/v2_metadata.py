"""V2 server and model metadata, as plain dicts both V2 front-ends (REST JSON, gRPC messages) render.

Model metadata describes the default signature (``serving_default``): V2 has no signatures, so a model is
its default one. ``versions`` lists the versions that are AVAILABLE now, newest first, as strings.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from modelserve import __version__
from modelserve.codecs.v2_datatypes import datatype_name
from modelserve.core.inference import ModelSpec
from modelserve.core.signature import Signature, TensorSpec
from modelserve.core.version_state import VersionState, VersionStatus
from modelserve.errors import InvalidArgument

_LABEL = re.compile(r"^[A-Za-z0-9_.\-]+$")

SERVER_NAME = "modelserve"
# Triton's names for the extensions we implement (its binary_tensor_data is the HTTP one).
EXTENSIONS = ("binary_tensor_data",)

# Triton's platform names where ours differ, so Triton tooling recognises the model kind.
_PLATFORMS = {"tensorflow": "tensorflow_savedmodel"}


def server_metadata() -> dict[str, Any]:
    """The ``GET /v2`` / ServerMetadata reply."""
    return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}


def parse_version(version: str | None) -> int | str | None:
    """A V2 version string: a version number, a version label (modelserve maps labels and A/B splits
    onto V2's string versions), or None (empty) for the model's default version."""
    if not version:
        return None
    if version.isdigit():
        if int(version) > 2**63 - 1:
            raise InvalidArgument(f"invalid model version '{version}': the version number is too large")
        return int(version)
    if not _LABEL.match(version):
        raise InvalidArgument(
            f"invalid model version '{version}': expected a version number or a version label "
            f"(letters, digits, '_', '-', '.')"
        )
    return version


def v2_model_spec(name: str, version: str | None) -> ModelSpec:
    """The model version a V2 request addresses (see ``parse_version``)."""
    parsed = parse_version(version)
    if isinstance(parsed, str):
        return ModelSpec(name, label=parsed)
    return ModelSpec(name, parsed)


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
