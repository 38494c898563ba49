"""Sources announce which versions of each model *should* be served; the manager makes it so.

A source never loads anything. It calls ``callback(model, versions)`` with the full list of aspired versions
for a model; a version missing from the list means "unload it" (TF Serving's aspired-versions contract).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from modelserve.config.model_config import ModelConfig

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
    """Integer-named subdirectories of ``base_path`` (TF Serving's layout); other entries are ignored."""
    versions: dict[int, Path] = {}
    try:
        children = list(base_path.iterdir())
    except OSError:
        return versions
    for child in children:
        name = child.name
        if name.isdigit() and child.is_dir():
            versions[int(name)] = child
    return versions


@dataclass(frozen=True, slots=True)
class DirectoryState:
    """A look at a version directory: a digest of every entry's path, size and mtime, and the newest mtime."""

    fingerprint: str
    newest_mtime: float


def look_at(path: Path) -> DirectoryState:
    """Stat every file and directory under ``path`` (no file is read)."""
    entries: list[tuple[str, int, int]] = []
    newest = 0.0
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in (".", *sorted(files)):
            full = os.path.join(root, name)
            try:
                stat = os.stat(full)
            except OSError:
                continue  # removed while we looked: the next look differs
            entries.append((os.path.relpath(full, path), stat.st_size, stat.st_mtime_ns))
            newest = max(newest, stat.st_mtime)
    digest = hashlib.blake2b(repr(entries).encode(), digest_size=12).hexdigest()
    return DirectoryState(fingerprint=digest, newest_mtime=newest)


class FileSystemSource:
    """Polls each model's ``base_path`` for version directories and applies the model's version policy.

    Completeness rule: a version directory that appears while the server runs is only offered for loading
    once it is quiet, i.e. nothing under it (files or directories) was modified for ``settle_seconds``
    and its listing did not change since the previous look. A copy in progress keeps touching mtimes, so
    it is never loaded half-way; the source looks again ``settle_seconds`` later instead of waiting a
    whole poll. Directories present at the first scan are taken as they are, like TF Serving does. The
    robust way to publish a version remains writing it under a non-integer name and renaming it.

    ``poll_wait_seconds <= 0`` scans once (at ``start``) and never again, like TF Serving's
    ``--file_system_poll_wait_seconds=0``.
    """

    def __init__(
        self,
        models: Sequence[ModelConfig],
        callback: AspiredVersionsCallback,
        poll_wait_seconds: float = 1.0,
        settle_seconds: float = 1.0,
    ) -> None:
        self._models = tuple(models)
        self._callback = callback
        self._poll_wait = poll_wait_seconds
        self._settle = settle_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._warned_empty: set[str] = set()
        self._scanned_once = False
        # (model, version) -> the look that found it not yet quiet.
        self._unsettled: dict[tuple[str, int], DirectoryState] = {}
        # (model, version) -> the fingerprint of its last quiet look (the version is complete).
        self._settled: dict[tuple[str, int], str] = {}
        self._recheck_at: float | None = None

    def update_models(self, models: Sequence[ModelConfig]) -> None:
        """Replace the monitored models; models no longer listed are announced with no versions."""
        with self._lock:
            removed = {m.name for m in self._models} - {m.name for m in models}
            self._models = tuple(models)
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
                on_disk = list_versions(Path(model.base_path))
                complete: dict[int, tuple[Path, str]] = {}
                for version, path in on_disk.items():
                    fingerprint = self._settled_fingerprint(model.name, version, look_at(path), first_scan)
                    if fingerprint is not None:
                        complete[version] = (path, fingerprint)
                for key in [k for k in self._settled if k[0] == model.name and k[1] not in on_disk]:
                    del self._settled[key]
                for key in [k for k in self._unsettled if k[0] == model.name and k[1] not in on_disk]:
                    del self._unsettled[key]  # deleted before it settled
                if not on_disk and model.name not in self._warned_empty:
                    self._warned_empty.add(model.name)
                    log.warning(
                        "no versions of model=%s found under base path %s", model.name, model.base_path
                    )
                elif on_disk:
                    self._warned_empty.discard(model.name)
                chosen = model.version_policy.select(set(complete))
                aspired = [AspiredVersion(v, *complete[v]) for v in chosen]
                self._callback(model.name, aspired)

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
        previous = self._unsettled.get(key)
        if first_scan or self._settle <= 0 or self._poll_wait <= 0:
            return True
        quiet = time.time() - state.newest_mtime >= self._settle
        if quiet and previous is not None and previous.fingerprint == state.fingerprint:
            return True
        if quiet and previous is None and announce:
            return True  # first look at a new directory whose files are all old: a rename into place
        if previous is None:
            log.info("model=%s version=%d is being written; waiting until it is quiet", *key)
        self._unsettled[key] = state
        recheck = time.monotonic() + self._settle
        self._recheck_at = recheck if self._recheck_at is None else min(self._recheck_at, recheck)
        return False

    def start(self) -> None:
        self.poll_once()
        if self._poll_wait > 0:
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
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
