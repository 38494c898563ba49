"""Model repositories on object storage, as the source sees them: listed remotely, served from the cache.

``StorageRepositories.open`` is the source's ``open_repository``: a base path that is a URL gets a
``RemoteRepository``, anything else the plain ``LocalDirectory``.

Completeness rule on object storage (uploads are not atomic, and there is no ctime to tell a finished copy):
a version that appears while the server runs is complete once its listing (object paths, sizes, ETags)
has stayed the same for ``--version_settle_seconds``, timed on the server's own clock from the poll that
first saw that listing. Versions present at startup are taken as they are, as on disk.

Cleanup: the copy of a version that is no longer aspired is deleted once the manager holds it no more
(unloaded, or its load failed): the runtimes read a version's files while loading, and a version still
serving, draining or loading keeps its files.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable
from pathlib import Path

from modelserve.config.model_config import ModelConfig
from modelserve.core.memory_guard import format_bytes
from modelserve.core.source import DirectoryState, LocalDirectory, VersionRepository
from modelserve.core.version_state import VersionState, VersionStatus
from modelserve.storage.cache import CacheDirectory, VersionCache, default_cache_dir
from modelserve.storage.remote import RemoteLocation, VersionListing, is_url

log = logging.getLogger("modelserve.storage")

# Whether the manager still holds (model, version): loading, serving or unloading.
InUse = Callable[[str, int], bool]


def held_by(statuses: Callable[[], Iterable[VersionStatus]]) -> InUse:
    """``InUse`` from a manager's ``all_statuses``: a version is held until its state is END."""

    def in_use(model: str, version: int) -> bool:
        return any(
            s.model == model and s.version == version and s.state is not VersionState.END for s in statuses()
        )

    return in_use


class RemoteRepository:
    """One model's versions under a URL, downloaded on demand into a ``VersionCache``."""

    def __init__(self, model: str, location: RemoteLocation, cache: VersionCache, in_use: InUse) -> None:
        self.model = model
        self.location = location
        self.cache = cache
        self._in_use = in_use
        self._listings: dict[int, VersionListing] = {}
        # version -> (fingerprint, wall-clock time of the poll that first saw it): its "last change".
        self._first_seen: dict[int, tuple[str, float]] = {}

    def scan(self) -> dict[int, DirectoryState]:
        self._listings = self.location.list_versions()
        now = time.time()
        states = {}
        for version, listing in self._listings.items():
            seen = self._first_seen.get(version)
            if seen is None or seen[0] != listing.fingerprint:
                seen = self._first_seen[version] = (listing.fingerprint, now)
            states[version] = DirectoryState(fingerprint=seen[0], moved_in=False, last_change=seen[1])
        for version in set(self._first_seen) - set(self._listings):
            del self._first_seen[version]
        return states

    def local_path(self, version: int, fingerprint: str) -> Path:
        cached = self.cache.lookup(version, fingerprint)
        if cached is not None:
            return cached
        listing = self._listings.get(version)
        if listing is None or listing.fingerprint != fingerprint:
            # The source offers a version rewritten in place with its last complete listing; that one
            # is no longer on storage to download. The rewrite's own listing comes once it is quiet.
            raise OSError(f"version {version} is being rewritten on storage and has no complete local copy")
        started = time.monotonic()
        log.info(
            "downloading model=%s version=%d from %s: %d files, %s",
            self.model,
            version,
            self.location.url,
            len(listing.objects),
            format_bytes(listing.total_bytes),
        )
        path = self.cache.store(listing, lambda folder: self.location.download(listing, folder))
        log.info(
            "downloaded model=%s version=%d to %s in %.2fs",
            self.model,
            version,
            path,
            time.monotonic() - started,
        )
        return path

    def retain(self, versions: Collection[int]) -> bool:
        for version in sorted(self.cache.versions() - set(versions)):
            if not self._in_use(self.model, version):
                self.cache.remove(version)
                log.info("removed cached copy of model=%s version=%d", self.model, version)
        if not versions:
            self.cache.remove_folder_if_empty()
        return not self.cache.versions()


class StorageRepositories:
    """Opens each model's repository; the cache directory is created and locked at the first URL."""

    def __init__(self, cache_dir: str, in_use: InUse) -> None:
        self._cache_dir = cache_dir
        self._in_use = in_use
        self._cache: CacheDirectory | None = None

    def open(self, model: ModelConfig) -> VersionRepository:
        if not is_url(model.base_path):
            return LocalDirectory.of(model)
        location = RemoteLocation(model.base_path)  # FailedPrecondition: no fsspec/s3fs installed
        if self._cache is None:  # only a server with a URL base path has (and locks) a cache
            root = Path(self._cache_dir).expanduser() if self._cache_dir else default_cache_dir()
            self._cache = CacheDirectory(root)
            log.info("storage cache for model versions: %s", root)
        return RemoteRepository(
            model.name, location, self._cache.for_model(model.name, model.base_path), self._in_use
        )
