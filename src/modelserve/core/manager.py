"""The manager: turns aspired versions into loaded versions and hands out ref-counted handles.

Sources tell the manager what *should* be served (``set_aspired_versions``); the manager diffs that against
what it holds and acts, one version at a time per decision:

- an aspired version it does not hold is created and loaded on a loader thread;
- a held version that is no longer aspired is unloaded once an aspired version of the same model is
  AVAILABLE (so a model never goes dark while its replacement loads), or at once when nothing is aspired;
- a version whose load failed stays in END with its error for status, and keeps its predecessor serving.

Thread-safety: every public method may be called from any thread. Reads on the request path
(``get_handle``) take the manager lock only for a dictionary lookup.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from modelserve.config.model_config import ModelConfig
from modelserve.core.handle import ServableHandle
from modelserve.core.servable import Servable
from modelserve.core.servable_version import ServableVersion
from modelserve.core.source import AspiredVersion
from modelserve.core.version_state import VersionState, VersionStatus
from modelserve.errors import NotFound

log = logging.getLogger("modelserve.manager")

LoadFunction = Callable[[ModelConfig, Path], Servable]

_BUSY = (VersionState.START, VersionState.LOADING, VersionState.UNLOADING)


@dataclass
class _Model:
    config: ModelConfig
    aspired: dict[int, Path] = field(default_factory=dict)
    announced: bool = False  # the source has reported at least once
    removed: bool = False  # dropped from the config: forget it once every version has ended
    versions: dict[int, ServableVersion] = field(default_factory=dict)
    # Versions newest first, for "latest" lookups without sorting on the request path.
    newest_first: tuple[ServableVersion, ...] = ()


class ModelManager:
    """Owns every model version in the process; see the module docstring for the rules."""

    def __init__(
        self,
        load: LoadFunction,
        *,
        num_load_threads: int = 2,
        num_unload_threads: int = 1,
        drain_timeout: float = 30.0,
    ) -> None:
        self._load = load
        self._models: dict[str, _Model] = {}
        self._lock = threading.RLock()
        self._settled = threading.Condition(self._lock)
        self._loaders = ThreadPoolExecutor(max(1, num_load_threads), "modelserve-load")
        self._unloaders = ThreadPoolExecutor(max(1, num_unload_threads), "modelserve-unload")
        self._drain_timeout = drain_timeout
        self._closed = False

    # -- configuration -------------------------------------------------------------------------------

    def set_models(self, configs: Sequence[ModelConfig]) -> None:
        """Declare the models to serve; models missing from ``configs`` are unloaded and forgotten."""
        with self._lock:
            wanted = {c.name: c for c in configs}
            for name, config in wanted.items():
                entry = self._models.get(name)
                if entry is None:
                    self._models[name] = _Model(config=config)
                else:
                    entry.config = config
                    entry.removed = False
            for name in set(self._models) - set(wanted):
                gone = self._models[name]
                gone.aspired = {}
                gone.announced = True
                gone.removed = True
            self._reconcile_all()

    def set_aspired_versions(self, model: str, versions: Sequence[AspiredVersion]) -> None:
        """The source callback: ``versions`` is the complete aspired set of ``model``."""
        with self._lock:
            entry = self._models.get(model)
            if entry is None:
                return
            entry.aspired = {v.version: v.path for v in versions}
            entry.announced = True
            self._reconcile(model, entry)

    # -- the decision loop ---------------------------------------------------------------------------

    def _reconcile_all(self) -> None:
        for name, entry in list(self._models.items()):
            self._reconcile(name, entry)

    def _reconcile(self, name: str, entry: _Model) -> None:
        # Caller holds the lock. Each branch only *schedules* work; completions call back in here.
        if self._closed:
            return
        for number, path in entry.aspired.items():
            current = entry.versions.get(number)
            if current is None or (current.state is VersionState.END and current.error is None):
                version = ServableVersion(name, number, path)
                entry.versions[number] = version
                self._loaders.submit(self._run_load, entry, version)
        aspired_available = any(
            v.state is VersionState.AVAILABLE for n, v in entry.versions.items() if n in entry.aspired
        )
        for number, version in entry.versions.items():
            if number in entry.aspired:
                continue
            if version.state is VersionState.START:
                version.cancel()
            elif version.state is VersionState.AVAILABLE and (aspired_available or not entry.aspired):
                self._unloaders.submit(self._run_unload, version)
        entry.newest_first = tuple(v for _, v in sorted(entry.versions.items(), key=lambda item: -item[0]))
        ended = all(v.state is VersionState.END for v in entry.versions.values())
        # Identity check: a stale callback must not drop a newer entry of a model added back since.
        if entry.removed and ended and self._models.get(name) is entry:
            del self._models[name]
        self._settled.notify_all()

    def _run_load(self, entry: _Model, version: ServableVersion) -> None:
        version.load(lambda path: self._load(entry.config, path))
        with self._lock:
            if self._closed and version.state is VersionState.AVAILABLE:
                self._unloaders.submit(self._run_unload, version)
            self._reconcile(version.model, entry)

    def _run_unload(self, version: ServableVersion) -> None:
        try:
            version.unload(self._drain_timeout)
        except Exception:
            log.exception("unload failed model=%s version=%d", version.model, version.version)
        with self._lock:
            entry = self._models.get(version.model)
            if entry is not None:
                self._reconcile(version.model, entry)
            self._settled.notify_all()

    # -- requests ------------------------------------------------------------------------------------

    def get_handle(self, model: str, version: int | None = None, label: str | None = None) -> ServableHandle:
        """A handle on the requested version (latest AVAILABLE when neither version nor label is given).

        Raises NotFound with TF Serving's wording when nothing matches.
        """
        entry = self._models.get(model)
        if entry is None:
            raise NotFound(_not_found_message(model, version, label))
        if label is not None:
            labelled = entry.config.version_labels.get(label)
            if labelled is None:
                raise NotFound(f"Unrecognized servable version label: {label}")
            version = labelled
        if version is None:
            for candidate in entry.newest_first:
                if candidate.acquire():
                    return ServableHandle(candidate)
        else:
            candidate_version = entry.versions.get(version)
            if candidate_version is not None and candidate_version.acquire():
                return ServableHandle(candidate_version)
        raise NotFound(_not_found_message(model, version, label))

    def statuses(
        self, model: str, version: int | None = None, label: str | None = None
    ) -> list[VersionStatus]:
        """Status of every version the manager knows for ``model`` (or of one version / label)."""
        with self._lock:
            entry = self._models.get(model)
            if entry is None or not entry.versions:
                raise NotFound(f"Could not find any versions of model {model}")
            if label is not None:
                labelled = entry.config.version_labels.get(label)
                if labelled is None:
                    raise NotFound(f"Unrecognized servable version label: {label}")
                version = labelled
            if version is not None:
                found = entry.versions.get(version)
                if found is None:
                    raise NotFound(f"Could not find version {version} of model {model}")
                return [found.status()]
            return [v.status() for v in entry.newest_first]

    def model_names(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    def all_statuses(self) -> list[VersionStatus]:
        with self._lock:
            return [v.status() for entry in self._models.values() for v in entry.newest_first]

    def is_ready(self) -> bool:
        """True when every configured model has at least one AVAILABLE version."""
        with self._lock:
            return all(
                any(v.state is VersionState.AVAILABLE for v in entry.versions.values())
                for entry in self._models.values()
            )

    # -- lifecycle -----------------------------------------------------------------------------------

    def wait_until_settled(self, timeout: float | None = None) -> bool:
        """Block until every model was announced and no version is loading or unloading."""

        def settled() -> bool:
            return all(
                entry.announced and all(v.state not in _BUSY for v in entry.versions.values())
                for entry in self._models.values()
            )

        with self._settled:
            return self._settled.wait_for(settled, timeout=timeout)

    def close(self) -> None:
        """Unload every version (waiting for in-flight requests) and stop the loader threads."""
        with self._lock:
            self._closed = True
            versions = [v for entry in self._models.values() for v in entry.versions.values()]
        for version in versions:
            version.cancel()
        self._loaders.shutdown(wait=True)
        for version in versions:
            if version.state is VersionState.AVAILABLE:
                self._unloaders.submit(self._run_unload, version)
        self._unloaders.shutdown(wait=True)


def _not_found_message(model: str, version: int | None, label: str | None) -> str:
    # TF Serving's ServableRequest::DebugString forms: Latest(name) / Specific(name, version).
    if version is None:
        return f"Servable not found for request: Latest({model})"
    return f"Servable not found for request: Specific({model}, {version})"
