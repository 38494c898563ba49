"""Which version serves a request that names a label, or names nothing: version labels and A/B splits.

A model's ``Routes`` are immutable and replaced whole when a config reload is accepted, so the request
path reads them without a lock. A split picks a version with probability proportional to its weight;
when the picked version is not AVAILABLE (still loading, unloading, failed) the request falls back to the
split's other versions, heaviest first, so a split never fails a request while any of its versions serves.

Assigning routes follows TF Serving's rule for labels: a label may only point at an AVAILABLE version,
unless ``--allow_version_labels_for_unavailable_models`` is set and the label is new. Splits follow the
same rule for each of their versions.
"""

from __future__ import annotations

import bisect
import itertools
import random
import zlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from modelserve.config.model_config import ModelConfig, TrafficSplit

DEFAULT_ROUTE = ""  # the split key of requests that name no version and no label


@dataclass(frozen=True, slots=True)
class WeightedVersions:
    """A split ready for the request path: cumulative weights for one bisect per request."""

    versions: tuple[int, ...]
    cumulative: tuple[int, ...]
    # Fallback order when the chosen version is unavailable: heaviest first.
    by_weight: tuple[int, ...]

    @classmethod
    def of(cls, split: TrafficSplit) -> WeightedVersions:
        versions = split.versions
        cumulative = tuple(itertools.accumulate(weight for _, weight in split.weights))
        by_weight = tuple(v for v, _ in sorted(split.weights, key=lambda item: (-item[1], -item[0])))
        return cls(versions=versions, cumulative=cumulative, by_weight=by_weight)

    def candidates(self, routing_key: str | None = None) -> list[int]:
        """Versions to try in order: the weighted pick first, then the others by weight.

        With a ``routing_key`` the pick is a stable hash of the key, so one user sees one version.
        """
        total = self.cumulative[-1]
        if routing_key is None:
            point = random.random() * total
        else:
            point = (zlib.crc32(routing_key.encode()) / 2**32) * total
        chosen = self.versions[bisect.bisect_right(self.cumulative, point)]
        return [chosen, *(v for v in self.by_weight if v != chosen)]


@dataclass(frozen=True, slots=True)
class Routes:
    """One model's version labels and traffic splits."""

    labels: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    splits: Mapping[str, WeightedVersions] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def of(cls, config: ModelConfig) -> Routes:
        return cls(
            labels=MappingProxyType(dict(config.version_labels)),
            splits=MappingProxyType({k: WeightedVersions.of(s) for k, s in config.traffic_splits.items()}),
        )

    def names(self) -> set[str]:
        """Every label this model answers to (version labels and split labels)."""
        return set(self.labels) | {label for label in self.splits if label != DEFAULT_ROUTE}

    def versions_of(self, label: str) -> tuple[int, ...] | None:
        """The versions behind ``label`` (None when the label is unknown)."""
        split = self.splits.get(label)
        if split is not None:
            return split.versions
        version = self.labels.get(label)
        return None if version is None else (version,)

    def targets(self) -> dict[str, tuple[int, ...]]:
        """Every route (labels, split labels, ``""`` for the default split) and the versions it uses."""
        found: dict[str, tuple[int, ...]] = {label: (version,) for label, version in self.labels.items()}
        found.update({label: split.versions for label, split in self.splits.items()})
        return found


def check_routes(
    model: str,
    new: Routes,
    old: Routes,
    available: Collection[int],
    *,
    allow_unavailable_for_new_labels: bool,
) -> list[str]:
    """Why ``new`` may not replace ``old`` now (empty when it may), in TF Serving's wording."""
    errors: list[str] = []
    previous = old.targets()
    for label, versions in sorted(new.targets().items()):
        if previous.get(label) == versions:
            continue  # unchanged routes stay, even if their version has gone since
        if allow_unavailable_for_new_labels and label not in previous:
            continue
        for version in versions:
            if version not in available:
                errors.append(
                    f"Request to assign label to version {version} of model {model}, which is not "
                    f"currently available for inference"
                )
    return errors
