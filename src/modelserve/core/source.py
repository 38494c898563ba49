"""Sources announce which versions of each model *should* be served; the manager makes it so.

A source never loads anything. It calls ``callback(model, versions)`` with the full list of aspired versions
for a model; a version missing from the list means "unload it" (TF Serving's aspired-versions contract).

Where a model's versions live is a ``VersionRepository``: a local directory (``LocalDirectory``, the
default) or object storage behind a local cache (``modelserve.storage``). The source applies the same
completeness rule and version policy to both; the manager always gets a local path.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from modelserve.config.model_config import ModelConfig
from modelserve.errors import ServingError

log = logging.getLogger("modelserve.source")


@dataclass(frozen=True, slots=True)
class AspiredVersion:
    """A version that should be served, the directory it is stored in, and a digest of its files."""

    version: int
    path: Path
    fingerprint: str = ""  # changes whenever a file under ``path`` is added, removed or rewritten


class AspiredVersionsCallback(Protocol):
    """Receives the complete aspired set of one model; called from the source's thread."""

    def __call__(self, model: str, versions: Sequence[AspiredVersion]) -> None: ...


def list_versions(base_path: Path) -> dict[int, Path]:
    """Integer-named subdirectories of ``base_path`` (TF Serving's layout); other entries are ignored.

    Raises OSError when the base path cannot be read (missing, permissions, a storage blip): not the same
    as empty.
    """
    versions: dict[int, Path] = {}
    children = list(base_path.iterdir())
    for child in children:
        name = child.name
        if name.isdigit() and child.is_dir():
            versions[int(name)] = child
    return versions


@dataclass(frozen=True, slots=True)
class DirectoryState:
    """A look at a version directory: a digest of every entry's stat, and when it last changed."""

    fingerprint: str
    # The directory's ctime moved after its own mtime and after every mtime under it: it was renamed (or
    # its attributes were set, as cp -p, rsync -a and tar do last) after everything in it was written.
    moved_in: bool
    # The latest ctime or mtime of anything under it (wall-clock seconds): writes, new entries, and the
    # utime/chmod calls of copies that preserve old mtimes all move it.
    last_change: float


def look_at(path: Path) -> DirectoryState:
    """Stat every file and directory under ``path`` (no file is read)."""
    entries: list[tuple[str, int, int, int, int, int]] = []
    newest_mtime = 0
    last_change = 0
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in (".", *sorted(files)):
            full = os.path.join(root, name)
            try:
                stat = os.stat(full)
            except OSError:
                continue  # removed while we looked: the next look differs
            relative = os.path.relpath(full, path)
            entries.append((relative, stat.st_size, stat.st_mtime_ns, stat.st_mode, stat.st_uid, stat.st_gid))
            newest_mtime = max(newest_mtime, stat.st_mtime_ns)
            last_change = max(last_change, stat.st_mtime_ns, stat.st_ctime_ns)
    try:
        top = os.stat(path)
    except OSError:
        moved_in = False
    else:
        # Adding or removing an entry sets a directory's mtime and ctime together, so a directory being
        # filled has ctime == mtime; only an attribute change (a rename into place, cp -p's last step)
        # moves its ctime alone. Ties with file mtimes are allowed: timestamps tick coarsely.
        moved_in = top.st_ctime_ns > top.st_mtime_ns and top.st_ctime_ns >= newest_mtime
    digest = hashlib.blake2b(repr(entries).encode(), digest_size=12).hexdigest()
    return DirectoryState(fingerprint=digest, moved_in=moved_in, last_change=last_change / 1e9)


class VersionRepository(Protocol):
    """Where the versions of one model live, as the source sees them; called from the source's thread only.

    Every method raises OSError when storage cannot answer now (missing base path, a network blip): the
    source then keeps the model's current aspired set and asks again at the next poll.
    """

    def scan(self) -> dict[int, DirectoryState]:
        """Every version present (complete or not), with a look at its files."""
        ...

    def local_path(self, version: int, fingerprint: str, stop: threading.Event) -> Path:
        """A local directory holding ``version`` as it was when its look had ``fingerprint``.

        May download it first. Once ``stop`` is set (from another thread: the server stops) a download in
        progress is abandoned promptly, leaving nothing behind, and OSError is raised.
        """
        ...

    def retain(self, versions: Collection[int]) -> bool:
        """Only ``versions`` are aspired now: local copies of the others may go once no longer loaded.

        True when the repository holds no local copy any more (a retired repository can be dropped).
        """
        ...


class LocalDirectory:
    """A base path on a local (or mounted) file system: versions are served in place, nothing is copied."""

    def __init__(self, base_path: Path) -> None:
        self.base_path = base_path
        self._paths: dict[int, Path] = {}

    @classmethod
    def of(cls, model: ModelConfig) -> LocalDirectory:
        return cls(Path(model.base_path))

    def scan(self) -> dict[int, DirectoryState]:
        self._paths = list_versions(self.base_path)
        return {version: look_at(path) for version, path in self._paths.items()}

    def local_path(self, version: int, fingerprint: str, stop: threading.Event) -> Path:
        return self._paths[version]

    def retain(self, versions: Collection[int]) -> bool:
        return True  # the files are the user's: never deleted


RepositoryOpener = Callable[[ModelConfig], VersionRepository]


@dataclass(frozen=True, slots=True)
class _Opened:
    """A repository, and the model and base path it was opened for."""

    model: str
    base_path: str
    repository: VersionRepository


class FileSystemSource:
    """Polls each model's ``base_path`` for version directories and applies the model's version policy.

    Completeness rule, for a version directory that appears while the server runs:

    - moved in: if the directory's ctime is later than every mtime under it, it was renamed into place
      (TF Serving's recommended way to publish) or finished by a tool that sets attributes last (cp -p,
      rsync -a, tar): it is offered at first sight;
    - otherwise it is offered once quiet: nothing under it changed (no mtime or ctime, so copies that
      preserve old mtimes count too) for ``settle_seconds``, and its listing (paths, sizes, mtimes,
      modes) is the same as at the previous look. The source looks again when the quiet time will have
      passed rather than after a whole poll. Timestamps in the future (a skewed clock) are timed on our
      own clock instead.

    Directories present at the first scan are taken as they are, like TF Serving does. An unreadable base
    path announces nothing (the loaded versions keep serving) instead of "no versions"; only a model never
    announced yet gets "no versions", so that startup and config reloads do not wait for it.

    ``poll_wait_seconds <= 0`` scans once (at ``start``) and never again, like TF Serving's
    ``--file_system_poll_wait_seconds=0``.

    ``open_repository`` says where a model's versions live (default: its base path is a local directory).
    Each chosen version is fetched on its own: one that cannot be fetched now is not offered (as if still
    being written) and the policy chooses among the others, except that a version already announced keeps
    its last announced copy; when nothing chosen can be fetched, the model's aspired set stays as it was.

    Threads: polls run one at a time (``start``, the polling thread, ``update_models``) and may spend long
    in storage I/O; ``stop`` takes no lock a poll holds, abandons a download in progress and returns
    promptly.
    """

    def __init__(
        self,
        models: Sequence[ModelConfig],
        callback: AspiredVersionsCallback,
        poll_wait_seconds: float = 1.0,
        settle_seconds: float = 1.0,
        open_repository: RepositoryOpener = LocalDirectory.of,
    ) -> None:
        self._models = tuple(models)
        self._open_repository = open_repository
        self._repositories: dict[str, _Opened] = {}  # by model name
        # Repositories of removed models or changed base paths, kept until their local copies are gone.
        self._retired: list[_Opened] = []
        self._callback = callback
        self._poll_wait = poll_wait_seconds
        self._settle = settle_seconds
        # Set by ``stop``: ends the polling thread and abandons a download in progress.
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # One poll at a time; held across storage I/O. Guards every field below but ``_incomplete``.
        self._lock = threading.Lock()
        self._warned_empty: set[str] = set()
        self._warned_unreadable: set[str] = set()
        self._announced: set[str] = set()  # models announced at least once (since added)
        self._last_aspired: dict[str, dict[int, AspiredVersion]] = {}  # by model, what was announced last
        self._scanned_once = False
        # (model, version) -> (fingerprint, monotonic time it was first seen so), until quiet.
        self._unsettled: dict[tuple[str, int], tuple[str, float]] = {}
        # (model, version) -> the fingerprint of its last quiet look (the version is complete).
        self._settled: dict[tuple[str, int], str] = {}
        self._recheck_at: float | None = None
        # Its own lock, held only briefly: ``stop`` and ``wait_until_complete`` never wait for a poll.
        self._polled = threading.Condition()
        self._incomplete = False  # some version was still being written at the end of the last poll

    def update_models(self, models: Sequence[ModelConfig]) -> None:
        """Replace the monitored models; models no longer listed are announced with no versions."""
        with self._lock:
            removed = {m.name for m in self._models} - {m.name for m in models}
            self._models = tuple(models)
            self._announced -= removed
            for name in removed:
                self._last_aspired.pop(name, None)
                opened = self._repositories.pop(name, None)
                if opened is not None:
                    self._retired.append(opened)
        for name in removed:
            self._callback(name, [])
        self.poll_once()

    def poll_once(self) -> None:
        """Scan every model once and announce its aspired versions."""
        with self._lock:
            models = self._models
            first_scan = not self._scanned_once
            self._scanned_once = True
            self._recheck_at = None
            for model in models:
                if self._stop.is_set():
                    break
                self._poll_model(model, first_scan)
            if self._stop.is_set():
                # Stopped midway (a download abandoned): whoever waits for these models must not hang.
                for model in models:
                    self._announce_nothing_yet(model.name)
                return
            self._retired = [retired for retired in self._retired if not retired.repository.retain(())]
            incomplete = bool(self._unsettled)
        with self._polled:
            self._incomplete = incomplete
            self._polled.notify_all()

    def _poll_model(self, model: ModelConfig, first_scan: bool) -> None:
        try:
            repository = self._repository(model)
        except ServingError as exc:  # e.g. no fsspec/s3fs installed for an s3:// base path
            if first_scan:
                raise  # at startup: the server stops with this error
            self._report_unreadable(model, f"cannot open base path {model.base_path}", exc)
            self._announce_nothing_yet(model.name)
            return
        try:
            on_disk = repository.scan()
        except OSError as exc:
            # Keep serving what is loaded: an unreadable base path is not "every version deleted".
            self._report_unreadable(model, f"cannot read base path {model.base_path}", exc)
            self._announce_nothing_yet(model.name)
            return
        complete: dict[int, str] = {}
        for version, state in on_disk.items():
            fingerprint = self._settled_fingerprint(model.name, version, state, first_scan)
            if fingerprint is not None:
                complete[version] = fingerprint
        for key in [k for k in self._settled if k[0] == model.name and k[1] not in on_disk]:
            del self._settled[key]
        for key in [k for k in self._unsettled if k[0] == model.name and k[1] not in on_disk]:
            del self._unsettled[key]  # deleted before it settled
        if not on_disk and model.name not in self._warned_empty:
            self._warned_empty.add(model.name)
            log.warning("no versions of model=%s found under base path %s", model.name, model.base_path)
        elif on_disk:
            self._warned_empty.discard(model.name)
        aspired, failure = self._fetch(model, repository, complete)
        if self._stop.is_set():
            return  # a download was abandoned: announce nothing
        if failure is not None:
            self._report_unreadable(model, failure[0], failure[1])
        elif model.name in self._warned_unreadable:
            self._warned_unreadable.discard(model.name)
            log.info("base path %s of model=%s can be read again", model.base_path, model.name)
        if aspired is None:  # nothing the policy chose could be fetched: keep what is announced
            self._announce_nothing_yet(model.name)
            return
        self._callback(model.name, aspired)
        self._announced.add(model.name)
        self._last_aspired[model.name] = {a.version: a for a in aspired}
        repository.retain([a.version for a in aspired])

    def _fetch(
        self, model: ModelConfig, repository: VersionRepository, complete: dict[int, str]
    ) -> tuple[list[AspiredVersion] | None, tuple[str, OSError] | None]:
        """The versions to announce, each fetched on its own, and the first fetch failure.

        A version that cannot be fetched now keeps its last announced copy, or else is left out and the
        policy chooses again among the rest (under ``latest``, the newest version that can be fetched).
        None when failures left nothing of what the policy chose.
        """
        last = self._last_aspired.get(model.name, {})
        candidates = dict(complete)
        failure: tuple[str, OSError] | None = None
        while True:
            chosen = model.version_policy.select(set(candidates))
            aspired: list[AspiredVersion] = []
            unfetchable: list[int] = []
            for version in sorted(chosen):
                fingerprint = candidates[version]
                try:
                    path = repository.local_path(version, fingerprint, self._stop)
                except OSError as exc:
                    if self._stop.is_set():
                        return None, None
                    failure = failure or (f"cannot fetch version {version} from {model.base_path}", exc)
                    if version in last:
                        aspired.append(last[version])
                    else:
                        unfetchable.append(version)
                    continue
                aspired.append(AspiredVersion(version, path, fingerprint))
            if not unfetchable:
                return aspired, failure
            for version in unfetchable:
                del candidates[version]
            if not candidates:
                return None, failure

    def _repository(self, model: ModelConfig) -> VersionRepository:
        """The model's repository, opened again when its base path changed (the old one is retired)."""
        opened = self._repositories.get(model.name)
        if opened is not None and opened.base_path == model.base_path:
            return opened.repository
        if opened is not None:
            self._retired.append(opened)
        # A model added back with its old base path gets its old repository back: two repositories must
        # never manage the same local copies.
        revived = [r for r in self._retired if (r.model, r.base_path) == (model.name, model.base_path)]
        if revived:
            self._retired.remove(revived[0])
            opened = revived[0]
        else:
            opened = _Opened(model.name, model.base_path, self._open_repository(model))
        self._repositories[model.name] = opened
        return opened.repository

    def _announce_nothing_yet(self, model: str) -> None:
        """A model the source never announced gets "no versions", so that nobody waits for it forever."""
        if model not in self._announced:
            self._announced.add(model)
            self._callback(model, [])

    def _report_unreadable(self, model: ModelConfig, what: str, exc: Exception) -> None:
        """One log line per outage of a model's storage, not one per poll."""
        if model.name not in self._warned_unreadable:
            self._warned_unreadable.add(model.name)
            log.error("%s of model=%s: %s; the loaded versions keep serving", what, model.name, exc)

    def wait_until_complete(self, timeout: float) -> bool:
        """Block until no version directory of the monitored models is still being written."""
        if self._thread is None:
            return True  # nobody polls again: what is incomplete now stays so
        with self._polled:
            return self._polled.wait_for(lambda: not self._incomplete or self._stop.is_set(), timeout=timeout)

    def _settled_fingerprint(
        self, model: str, version: int, state: DirectoryState, first_scan: bool
    ) -> str | None:
        """The fingerprint to announce for a version, or None while it was never complete.

        A version once complete stays offered while its files change again (a rewrite in place), with
        its last quiet fingerprint: the manager sees the change, and retries a failed load, only once the
        rewrite is quiet too.
        """
        key = (model, version)
        settled = self._settled.get(key)
        if settled == state.fingerprint or self._is_quiet(key, state, first_scan, announce=settled is None):
            self._unsettled.pop(key, None)
            self._settled[key] = state.fingerprint
            return state.fingerprint
        return settled

    def _is_quiet(
        self, key: tuple[str, int], state: DirectoryState, first_scan: bool, *, announce: bool
    ) -> bool:
        if first_scan or self._settle <= 0 or self._poll_wait <= 0:
            return True
        if announce and state.moved_in:
            return True  # renamed into place (or finished by cp -p / rsync -a / tar) after it was written
        now = time.monotonic()
        previous = self._unsettled.get(key)
        unchanged = previous is None or previous[0] == state.fingerprint
        if previous is None or not unchanged:
            self._unsettled[key] = (state.fingerprint, now)
        # Quiet for the settle time since its last change; a timestamp from a clock ahead of ours is
        # timed on our own clock instead.
        age = time.time() - state.last_change
        wait = self._settle - age if age >= 0 else self._unsettled[key][1] + self._settle - now
        if wait <= 0 and unchanged:
            return True
        if previous is None:
            log.info("model=%s version=%d is being written; waiting until it is quiet", *key)
        recheck = now + max(wait, 0.01)
        self._recheck_at = recheck if self._recheck_at is None else min(self._recheck_at, recheck)
        return False

    def start(self) -> None:
        """Poll once (every initial download included), then keep polling on a thread of its own.

        Blocks for as long as the first poll takes: call it off an event loop. ``stop`` from another thread
        cuts it short.
        """
        self.poll_once()
        if self._poll_wait > 0 and not self._stop.is_set():
            self._thread = threading.Thread(target=self._run, name="modelserve-fs-source", daemon=True)
            self._thread.start()

    def _next_wait(self) -> float:
        recheck = self._recheck_at
        if recheck is None:
            return self._poll_wait
        return max(0.01, min(self._poll_wait, recheck - time.monotonic()))

    def _run(self) -> None:
        while not self._stop.wait(self._next_wait()):
            try:
                self.poll_once()
            except Exception:  # a poll must never kill the source
                log.exception("file system poll failed")

    def stop(self) -> None:
        """Stop polling and abandon a download in progress; returns once the polling thread ended.

        Idempotent, callable from any thread; it never waits for the poll lock, so it is prompt even while
        a poll lists or downloads (the download stops within a fraction of a second).
        """
        self._stop.set()
        with self._polled:
            self._polled.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
