"""The manager: turns aspired versions into loaded versions and hands out ref-counted handles.

Sources tell the manager what *should* be served (``set_aspired_versions``); the manager diffs that against
what it holds and acts, one version at a time per decision:

- an aspired version it does not hold is created and loaded on a loader thread;
- a held version that is no longer aspired is unloaded once an aspired version of the same model is
  AVAILABLE (so a model never goes dark while its replacement loads), or at once when nothing is aspired;
- a version whose load failed stays in END with its error for status, and keeps its predecessor serving;
  it is tried again when its files change on disk, or, after a memory-budget refusal, when memory frees.

The rules themselves are the pure function ``reconcile.next_actions``. Requests that name a label, or
nothing, are routed by the model's ``Routes`` (labels and A/B splits), which change only through
``apply_routes`` once the versions they point at are loaded. Every load reserves memory with the
``MemoryGuard`` first, so a version that would not fit is refused instead of taking the host down.

Thread-safety: every public method may be called from any thread. Reads on the request path
(``get_handle``) take the manager lock only for a dictionary lookup.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelserve.config.model_config import ModelConfig
from modelserve.core.handle import ServableHandle
from modelserve.core.memory_guard import MemoryGuard, files_bytes
from modelserve.core.reconcile import Actions, Held, next_actions
from modelserve.core.routing import DEFAULT_ROUTE, Routes, WeightedVersions, check_routes
from modelserve.core.servable import Servable
from modelserve.core.servable_version import ServableVersion
from modelserve.core.source import AspiredVersion
from modelserve.core.version_state import VersionState, VersionStatus
from modelserve.errors import Code, FailedPrecondition, InvalidArgument, NotFound, ServingError
from modelserve.logs import event

log = logging.getLogger("modelserve.manager")
lifecycle = logging.getLogger("modelserve.lifecycle")  # one structured line per version event

LoadFunction = Callable[[ModelConfig, Path], Servable]

_BUSY = (VersionState.START, VersionState.LOADING, VersionState.UNLOADING)
_ENDED_VERSIONS_KEPT = 5  # unloaded versions whose status stays visible, per model


@dataclass
class _Model:
    config: ModelConfig
    aspired: dict[int, AspiredVersion] = field(default_factory=dict)
    routes: Routes = field(default_factory=Routes)
    pinned: frozenset[int] = frozenset()  # versions the routes point at: kept loaded (see reconcile)
    # What a version measured when the budget refused it after loading: its next estimate.
    refused_sizes: dict[int, int] = field(default_factory=dict)
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
        memory_guard: MemoryGuard | None = None,
        allow_labels_for_unavailable_versions: bool = False,
        max_load_retries: int = 5,
        load_retry_interval: float = 60.0,
    ) -> None:
        self._load = load
        self._max_load_retries = max_load_retries
        self._load_retry_interval = load_retry_interval
        self.memory_guard = memory_guard or MemoryGuard(None, check_available=False)
        self._allow_unavailable_labels = allow_labels_for_unavailable_versions
        # Bumped whenever a version's memory is released: loads refused for memory may fit now.
        self._memory_epoch = 0
        self._unloads_pending = 0
        self._models: dict[str, _Model] = {}
        self._lock = threading.RLock()
        self._settled = threading.Condition(self._lock)
        self._loaders = ThreadPoolExecutor(max(1, num_load_threads), "modelserve-load")
        self._unloaders = ThreadPoolExecutor(max(1, num_unload_threads), "modelserve-unload")
        self._drain_timeout = drain_timeout
        self._closed = False

    # -- configuration -------------------------------------------------------------------------------

    def set_models(self, configs: Sequence[ModelConfig]) -> None:
        """Declare the models to serve; models missing from ``configs`` are unloaded and forgotten.

        Labels and splits are not touched here: ``apply_routes`` sets them once versions are loaded.
        """
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
                gone.routes, gone.pinned = Routes(), frozenset()
            self._reconcile_all()

    def set_aspired_versions(self, model: str, versions: Sequence[AspiredVersion]) -> None:
        """The source callback: ``versions`` is the complete aspired set of ``model``."""
        with self._lock:
            entry = self._models.get(model)
            if entry is None:
                return
            entry.aspired = {v.version: v for v in versions}
            entry.announced = True
            self._reconcile(model, entry)

    # -- the decision loop ---------------------------------------------------------------------------

    def _reconcile_all(self) -> None:
        for name, entry in list(self._models.items()):
            self._reconcile(name, entry)

    def _reconcile(self, name: str, entry: _Model) -> None:
        # Caller holds the lock. Actions only *schedule* work; completions call back in here.
        if self._closed:
            return
        actions = next_actions(entry.aspired.keys(), self._held_all(entry), entry.pinned)
        for number in actions.load:
            aspired = entry.aspired[number]
            previous = entry.versions.get(number)
            version = ServableVersion(name, number, aspired.path, fingerprint=aspired.fingerprint)
            if (
                previous is not None
                and previous.error is not None
                and previous.fingerprint == aspired.fingerprint
            ):
                version.attempt = previous.attempt + 1  # same files: a retry
            entry.versions[number] = version
            self._loaders.submit(self._run_load, entry, version)
        for number in actions.cancel:
            entry.versions[number].cancel()
        for number in actions.unload:
            version = entry.versions[number]
            if not version.unload_scheduled:
                version.unload_scheduled = True
                self._unloads_pending += 1
                self._unloaders.submit(self._run_unload, entry, version)
        self._forget_old_versions(entry)
        entry.newest_first = tuple(v for _, v in sorted(entry.versions.items(), key=lambda item: -item[0]))
        ended = all(v.state is VersionState.END for v in entry.versions.values())
        # Identity check: a stale callback must not drop a newer entry of a model added back since.
        if entry.removed and ended and self._models.get(name) is entry:
            del self._models[name]
        self._settled.notify_all()

    def _forget_old_versions(self, entry: _Model) -> None:
        """Keep the status of the last few unloaded versions, not of every version ever deployed."""
        gone = [
            n for n, v in entry.versions.items() if v.state is VersionState.END and n not in entry.aspired
        ]
        for number in sorted(gone)[:-_ENDED_VERSIONS_KEPT]:
            del entry.versions[number]
            entry.refused_sizes.pop(number, None)

    def _held_all(self, entry: _Model) -> dict[int, Held]:
        return {number: self._held(entry, version) for number, version in entry.versions.items()}

    def _held(self, entry: _Model, version: ServableVersion) -> Held:
        error = version.error
        if error is None:
            return Held(version.state)
        aspired = entry.aspired.get(version.version)
        files_changed = aspired is not None and aspired.fingerprint != version.fingerprint
        memory_freed = error.code is Code.RESOURCE_EXHAUSTED and version.refused_epoch < self._memory_epoch
        timer_due = (
            error.code is not Code.RESOURCE_EXHAUSTED
            and version.attempt <= self._max_load_retries
            and time.monotonic() - version.failed_at >= self._load_retry_interval
        )
        return Held(version.state, failed=True, retry=files_changed or memory_freed or timer_due)

    def _run_load(self, entry: _Model, version: ServableVersion) -> None:
        with self._lock:
            version.refused_epoch = self._memory_epoch
        if version.state is VersionState.START:
            _version_event(
                "version_loading", version, state="LOADING", path=str(version.path), attempt=version.attempt
            )
        version.load(lambda path: self._load_within_budget(entry, version, path))
        if version.state is VersionState.AVAILABLE:
            _version_event("version_available", version, duration_ms=round(version.load_seconds * 1000, 3))
        elif version.error is not None:
            _version_event(
                "version_failed",
                version,
                logging.ERROR,
                code=version.error.code.name,
                error=version.error.message,
            )
        with self._lock:
            if self._closed and version.state is VersionState.AVAILABLE:
                version.unload_scheduled = True
                self._unloads_pending += 1
                self._unloaders.submit(self._run_unload, entry, version)
            self._reconcile(version.model, entry)

    def _load_within_budget(self, entry: _Model, version: ServableVersion, path: Path) -> Servable:
        """Reserve memory, load, then account what the runtime reports (see ``MemoryGuard``)."""
        name = f"{version.model}/{version.version}"
        guard = self.memory_guard
        with self._lock:
            estimate = max(
                files_bytes(path),
                self._sibling_memory(entry, version),
                entry.refused_sizes.get(version.version, 0),
            )
        guard.reserve(version, name, estimate)  # the version object is the token: one per attempt
        try:
            servable = self._load(entry.config, path)
        except BaseException:
            guard.release(version)
            raise
        try:
            # What the runtime reports (weights; framework overhead shared by all versions is not
            # counted). RSS growth is no better: it charges framework start-up and concurrent requests.
            measured = max(servable.memory_bytes(), 0)
            try:
                guard.settle(version, measured)
            except ServingError:
                with self._lock:
                    entry.refused_sizes[version.version] = measured  # next time, refuse before loading
                raise
        except BaseException:
            guard.release(version)
            servable.close()
            raise
        version.memory_bytes = measured
        return servable

    def _sibling_memory(self, entry: _Model, version: ServableVersion) -> int:
        """What the model's loaded versions hold: the best guess for a new version's needs."""
        return max(
            (
                v.memory_bytes
                for v in entry.versions.values()
                if v is not version and v.state in (VersionState.AVAILABLE, VersionState.UNLOADING)
            ),
            default=0,
        )

    def _run_unload(self, entry: _Model, version: ServableVersion) -> None:
        # Decided when queued; check again now: the version may have become wanted meanwhile (a rollback,
        # a label moved back to it). The AVAILABLE → UNLOADING step happens under the manager's lock, so
        # no reconcile can want it back between the check and the step.
        with self._lock:
            version.unload_scheduled = False
            wanted_gone = (
                self._closed
                or version.version
                in next_actions(entry.aspired.keys(), self._held_all(entry), entry.pinned).unload
            )
            started = wanted_gone and version.begin_unload()
            if not started:
                self._unloads_pending -= 1
                self._reconcile(version.model, entry)
                return
        _version_event("version_unloading", version, in_flight=version.in_flight)
        unload_started = time.perf_counter()
        try:
            version.finish_unload(self._drain_timeout)
        except Exception:
            log.exception("unload failed model=%s version=%d", version.model, version.version)
        _version_event(
            "version_unloaded", version, duration_ms=round((time.perf_counter() - unload_started) * 1000, 3)
        )
        self.memory_guard.release(version)
        with self._lock:
            self._unloads_pending -= 1
            self._memory_epoch += 1
            # Memory was freed: any model may now fit a version refused earlier.
            for name, other in list(self._models.items()):
                self._reconcile(name, other)
            self._settled.notify_all()

    # -- routes --------------------------------------------------------------------------------------

    def apply_routes(self, configs: Sequence[ModelConfig], *, enforce: bool = True) -> list[str]:
        """Install each model's labels and traffic splits from ``configs``.

        With ``enforce`` (config reloads) nothing changes if any route points at a version that is not
        AVAILABLE (TF Serving's rule; see ``routing.check_routes``): FailedPrecondition lists why. Without
        it (startup) every route is installed and the problems are returned for the log.
        """
        with self._lock:
            planned: list[tuple[_Model, Routes]] = []
            errors: list[str] = []
            for config in configs:
                entry = self._models.get(config.name)
                if entry is None:
                    continue
                routes = Routes.of(config)
                available = {n for n, v in entry.versions.items() if v.state is VersionState.AVAILABLE}
                errors += check_routes(
                    config.name,
                    routes,
                    entry.routes,
                    available,
                    allow_unavailable_for_new_labels=self._allow_unavailable_labels,
                )
                planned.append((entry, routes))
            if errors and enforce:
                raise FailedPrecondition("; ".join(errors))
            for entry, routes in planned:
                entry.routes = routes
                entry.pinned = frozenset(v for versions in routes.targets().values() for v in versions)
            self._reconcile_all()  # versions only a previous route kept loaded may go now
            return errors

    def has_splits(self, model: str) -> bool:
        """Whether ``model`` has a traffic split (front-ends read routing keys only then)."""
        entry = self._models.get(model)
        return entry is not None and bool(entry.routes.splits)

    def routes(self, model: str) -> Routes:
        entry = self._models.get(model)
        if entry is None:
            raise NotFound(f"Could not find any versions of model {model}")
        return entry.routes

    # -- requests ------------------------------------------------------------------------------------

    def get_handle(
        self,
        model: str,
        version: int | None = None,
        label: str | None = None,
        routing_key: str | None = None,
    ) -> ServableHandle:
        """A handle on the version that serves this request.

        An explicit version wins; a label resolves through the model's labels or splits; with neither,
        the default split if there is one, else the latest AVAILABLE version. ``routing_key`` makes a
        split's choice sticky per key. Raises NotFound with TF Serving's wording when nothing matches.
        """
        entry = self._models.get(model)
        if entry is None:
            raise NotFound(_not_found_message(model, version, label))
        if version is None:
            routes = entry.routes
            split = routes.splits.get(DEFAULT_ROUTE if label is None else label)
            if split is not None:
                return self._split_handle(entry, split, routing_key, model, label)
            if label is not None:
                labelled = routes.labels.get(label)
                if labelled is None:
                    raise InvalidArgument(f"Unrecognized servable version label: {label}")  # TF Serving: 400
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

    def _split_handle(
        self, entry: _Model, split: WeightedVersions, routing_key: str | None, model: str, label: str | None
    ) -> ServableHandle:
        for number in split.candidates(routing_key):
            candidate = entry.versions.get(number)
            if candidate is not None and candidate.acquire():
                return ServableHandle(candidate)
        where = f"label {label}" if label is not None else "the default traffic split"
        raise NotFound(
            f"Servable not found for request: none of versions {list(split.versions)} of model {model} "
            f"({where}) is available"
        )

    def statuses(
        self, model: str, version: int | None = None, label: str | None = None
    ) -> list[VersionStatus]:
        """Status of every version the manager knows for ``model`` (or of one version / label)."""
        with self._lock:
            entry = self._models.get(model)
            if entry is None or not entry.versions:
                raise NotFound(f"Could not find any versions of model {model}")
            numbers: tuple[int, ...] | None = None if version is None else (version,)
            if label is not None:
                numbers = entry.routes.versions_of(label)
                if numbers is None:
                    raise InvalidArgument(f"Unrecognized servable version label: {label}")  # TF Serving: 400
            if numbers is None:
                return [v.status() for v in entry.newest_first]
            found = []
            for number in numbers:
                held = entry.versions.get(number)
                if held is None:
                    raise NotFound(f"Could not find version {number} of model {model}")
                found.append(held.status())
            return found

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
            if self._closed:
                return True
            return self._unloads_pending == 0 and all(
                entry.announced
                and all(v.state not in _BUSY for v in entry.versions.values())
                and next_actions(entry.aspired.keys(), self._held_all(entry), entry.pinned) == Actions()
                for entry in self._models.values()
            )

        with self._settled:
            return self._settled.wait_for(settled, timeout=timeout)

    def close(self) -> None:
        """Unload every version (waiting for in-flight requests) and stop the loader threads."""
        with self._lock:
            self._closed = True
            self._settled.notify_all()  # waiters (a reload in flight) return now
            versions = [(entry, v) for entry in self._models.values() for v in entry.versions.values()]
        for _, version in versions:
            version.cancel()
        self._loaders.shutdown(wait=True)
        with self._lock:
            for entry, version in versions:
                if version.state is VersionState.AVAILABLE and not version.unload_scheduled:
                    version.unload_scheduled = True
                    self._unloads_pending += 1
                    self._unloaders.submit(self._run_unload, entry, version)
        self._unloaders.shutdown(wait=True)


def _version_event(
    name: str, version: ServableVersion, level: int = logging.INFO, state: str | None = None, **fields: Any
) -> None:
    """One lifecycle line of ``version``: its model, number and state (``state`` overrides the current)."""
    state = state or version.state.value
    event(lifecycle, name, level, model=version.model, version=version.version, state=state, **fields)


def _not_found_message(model: str, version: int | None, label: str | None) -> str:
    # TF Serving's ServableRequest::DebugString forms: Latest(name) / Specific(name, version).
    if version is None:
        return f"Servable not found for request: Latest({model})"
    return f"Servable not found for request: Specific({model}, {version})"
