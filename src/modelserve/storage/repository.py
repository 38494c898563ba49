"""Model repositories on object storage, as the source sees them: listed remotely, served from the cache.

``StorageRepositories.open`` is the source's ``open_repository``: a base path that is a URL gets a
``RemoteRepository``, anything else the plain ``LocalDirectory``.

Completeness rule on object storage (uploads are not atomic, and there is no ctime to tell a finished copy):
a version that appears while the server runs is complete once its listing (object paths, sizes, ETags)
has stayed the same for ``--version_settle_seconds``, timed on the server's own clock from the poll that
first saw that listing. Versions present at startup are taken as they are, as on disk.

Cleanup: the copy of a version that is no longer aspired is deleted once the manager holds it no more
(unloaded, or its load failed): the runtimes read a version's files while loading, and a version still
serving, draining or loading keeps its files. The same holds for the old files of a version rewritten in
place.

A failed download is tried again with exponential backoff per version and listing (``retry``), not at
every poll.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path

from modelserve.config.model_config import ModelConfig
from modelserve.core.memory_guard import format_bytes
from modelserve.core.source import DirectoryState, LocalDirectory, VersionRepository
from modelserve.core.version_state import VersionState, VersionStatus
from modelserve.storage.cache import CacheDirectory, VersionCache, default_cache_dir
from modelserve.storage.remote import RemoteLocation, VersionListing, is_url
from modelserve.storage.retry import RetrySchedule

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
        self._retries = RetrySchedule()

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
        self._retries.forget_except(set(self._listings))
        return states

    def local_path(self, version: int, fingerprint: str, stop: threading.Event) -> Path:
        cached = self.cache.lookup(version, fingerprint)
        if cached is not None:
            return cached
        listing = self._listings.get(version)
        if listing is None or listing.fingerprint != fingerprint:
            # The source offers a version rewritten in place with its last complete listing; that one
            # is no longer on storage to download. The rewrite's own listing comes once it is quiet.
            raise OSError(f"version {version} is being rewritten on storage and has no complete local copy")
        wait = self._retries.wait_left(version, fingerprint)
        if wait > 0:
            raise OSError(f"version {version} failed to download; next try in {wait:.0f}s")
        try:
            return self._download(listing, stop)
        except InterruptedError:
            raise  # the server stops: not a failure of this version
        except OSError as exc:
            failures = self._retries.failed(version, fingerprint)
            log.warning(
                "cannot download model=%s version=%d from %s (failure %d in a row): %s; next try in %.0fs",
                self.model,
                version,
                self.location.url,
                failures.count,
                exc,
                failures.retry_at - time.monotonic(),
            )
            raise

    def _download(self, listing: VersionListing, stop: threading.Event) -> Path:
        version = listing.version
        started = time.monotonic()
        log.info(
            "downloading model=%s version=%d from %s: %d files, %s",
            self.model,
            version,
            self.location.url,
            len(listing.objects),
            format_bytes(listing.total_bytes),
        )
        path = self.cache.store(listing, lambda folder: self.location.download(listing, folder, stop))
        self._retries.succeeded(version)
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
        for folder, version in self.cache.old_copies().items():
            if not self._in_use(self.model, version):
                shutil.rmtree(folder, ignore_errors=True)
                log.info("removed the files of model=%s version=%d before its rewrite", self.model, version)
        if not versions:
            self.cache.remove_folder_if_empty()
        return not self.cache.versions() and not self.cache.old_copies()


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

    def sweep_unused(self, models: Sequence[ModelConfig]) -> None:
        """At startup: delete the cached copies of every (model, base URL) that ``models`` do not name.

        Copies of models dropped from the config, or whose base path changed, while the server was down
        are otherwise never deleted. Only this process's locked cache is touched, and only folders it
        could have made; a server with no URL base path has no cache and sweeps nothing.
        """
        if self._cache is None:
            return
        for folder in self._cache.sweep({(m.name, m.base_path) for m in models if is_url(m.base_path)}):
            log.info("removed cached copies no model of the config uses: %s", folder)
