"""What to serve: models, their base paths, platforms, version policies and labels.

These frozen dataclasses are the core's view of ``--model_config_file`` (or of ``--model_name`` /
``--model_base_path``). They are validated when built, with errors naming the key and the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from modelserve.errors import InvalidArgument

if TYPE_CHECKING:
    from modelserve.config.text_files import BatchingParameters

PolicyKind = Literal["latest", "all", "specific"]
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass(frozen=True, slots=True)
class VersionPolicy:
    """Which versions found in the repository should be served (TF Serving's ServableVersionPolicy).

    ``latest`` serves the ``num_versions`` highest versions (default 1), ``all`` every version,
    ``specific`` exactly ``versions`` (those that exist).
    """

    kind: PolicyKind = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind == "latest" and self.num_versions < 1:
            raise InvalidArgument(
                f"model_version_policy.latest.num_versions must be >= 1, got {self.num_versions}"
            )
        if self.kind == "specific" and not self.versions:
            raise InvalidArgument("model_version_policy.specific.versions must list at least one version")

    def select(self, available: Mapping[int, object] | set[int] | list[int]) -> tuple[int, ...]:
        """The versions to serve among ``available`` (the versions present in storage), ascending.

        Pure: the file-system source calls it on every poll.
        """
        present = sorted(set(available))
        if self.kind == "latest":
            return tuple(present[-self.num_versions :])
        if self.kind == "all":
            return tuple(present)
        wanted = set(self.versions)
        return tuple(v for v in present if v in wanted)


@dataclass(frozen=True, slots=True)
class TrafficSplit:
    """Weighted versions behind one label, or behind the model's default (``label == ""``).

    A request routed to a split is served by one of ``weights``' versions, chosen with probability
    proportional to its weight among those currently AVAILABLE (modelserve extension: A/B tests).
    """

    label: str
    weights: tuple[tuple[int, int], ...]  # (version, weight), weight > 0

    def __post_init__(self) -> None:
        where = f"traffic split {self.label!r}" if self.label else "default traffic split"
        if not self.weights:
            raise InvalidArgument(f"{where}: list at least one version with a weight")
        seen: set[int] = set()
        for version, weight in self.weights:
            if version < 0:
                raise InvalidArgument(f"{where}: version {version} is negative")
            if weight <= 0:
                raise InvalidArgument(f"{where}: version {version} has weight {weight}; weights must be > 0")
            if version in seen:
                raise InvalidArgument(f"{where}: version {version} is listed twice")
            seen.add(version)

    @property
    def versions(self) -> tuple[int, ...]:
        return tuple(version for version, _ in self.weights)


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """One model: a name, where its versions live, and how to choose among them."""

    name: str
    base_path: str
    platform: str = ""  # empty: detect from the files of each version
    version_policy: VersionPolicy = field(default_factory=VersionPolicy)
    version_labels: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    # Overrides --batching_parameters_file for this model (modelserve extension of the config file).
    batching_parameters: BatchingParameters | None = None
    # Weighted version splits keyed by label ("" = requests naming no version or label).
    traffic_splits: Mapping[str, TrafficSplit] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if not self.name or not _NAME.match(self.name):
            raise InvalidArgument(
                f"model name {self.name!r} is invalid: use letters, digits, '_', '-' and '.'"
            )
        if not self.base_path:
            raise InvalidArgument(f"model {self.name!r}: base_path must not be empty")
        for label, version in self.version_labels.items():
            if not label or not _NAME.match(label) or label.isdigit():
                raise InvalidArgument(f"model {self.name!r}: version label {label!r} is invalid")
            if version < 0:
                raise InvalidArgument(
                    f"model {self.name!r}: version label {label!r} points at negative version {version}"
                )
        for label, split in self.traffic_splits.items():
            if label != split.label:
                raise InvalidArgument(
                    f"model {self.name!r}: traffic split keyed {label!r} is for {split.label!r}"
                )
            if label and (not _NAME.match(label) or label.isdigit()):
                raise InvalidArgument(f"model {self.name!r}: traffic split label {label!r} is invalid")
            if label in self.version_labels:
                raise InvalidArgument(
                    f"model {self.name!r}: label {label!r} is both a version label and a traffic split"
                )
        object.__setattr__(self, "version_labels", MappingProxyType(dict(self.version_labels)))
        object.__setattr__(self, "traffic_splits", MappingProxyType(dict(self.traffic_splits)))


@dataclass(frozen=True, slots=True)
class ServingConfig:
    """Every model the server should serve; model names are unique."""

    models: tuple[ModelConfig, ...] = ()

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for model in self.models:
            if model.name in seen:
                raise InvalidArgument(f"model name {model.name!r} appears more than once in the config")
            seen.add(model.name)

    def by_name(self) -> dict[str, ModelConfig]:
        return {model.name: model for model in self.models}
