"""The local cache of versions downloaded from object storage: what the runtimes load.

Layout under ``--storage_cache_dir``::

    <cache_dir>/.lock                       held by the one server process using this cache
    <cache_dir>/<model>/<url hash>/.url     the base URL these copies come from (for people)
    <cache_dir>/<model>/<url hash>/3/       version 3, file for file as on storage
    <cache_dir>/<model>/<url hash>/3.json   its manifest: the listing it was downloaded from
    <cache_dir>/<model>/<url hash>/.old-3-* the files of version 3 before it was rewritten on storage

Rules that make it safe:

- a version is downloaded into a fresh ``.partial-*`` folder of the same file system, checked, and renamed
  into place, then its manifest is written: a folder without a manifest is never used, so an interrupted
  download, or a crash at any step, never yields a version that looks complete;
- a copy is reused (after a restart too) only when its manifest matches the version's listing on storage
  (paths, sizes, ETags) and its files still have the listed sizes;
- a version rewritten on storage is downloaded anew and swapped in; its old files are renamed away, never
  written over, and stay until the version is no longer held by the manager (a loaded or loading version
  may still open them: ONNX external data, lazily read files);
- one process per cache: two servers sharing one would delete each other's loaded versions, so the second
  is refused with a hint instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Collection
from pathlib import Path

from modelserve.errors import FailedPrecondition
from modelserve.files import write_atomically
from modelserve.storage.remote import RemoteObject, VersionListing

_PARTIAL = ".partial-"
_OLD = ".old-"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/modelserve`` or ``~/.cache/modelserve``; under the temp folder when that cannot be
    written (a container user without a home)."""
    fallback = Path(tempfile.gettempdir()) / f"modelserve-cache-{os.getuid()}"
    try:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        base.mkdir(parents=True, exist_ok=True)
    except (OSError, RuntimeError):  # RuntimeError: no home directory at all
        return fallback
    return base / "modelserve" if os.access(base, os.W_OK) else fallback


class CacheDirectory:
    """The cache root, locked for this process for as long as it lives."""

    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            root.mkdir(parents=True, exist_ok=True)
            self._lock = open(root / ".lock", "a")  # noqa: SIM115 -- held open until the process ends
        except OSError as exc:
            raise FailedPrecondition(
                f"cannot use storage cache {root}: {exc}; set --storage_cache_dir"
            ) from exc
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._lock.close()
            raise FailedPrecondition(
                f"storage cache {root} is in use by another modelserve process; give each process its own "
                "--storage_cache_dir"
            ) from exc
        self._opened: set[Path] = set()

    def for_model(self, model: str, url: str) -> VersionCache:
        """The copies of ``model``'s versions from ``url``."""
        folder = self._folder(model, url)
        self._opened.add(folder)
        return VersionCache(folder, url)

    def sweep(self, keep: Collection[tuple[str, str]]) -> list[Path]:
        """Delete the copies of every (model, URL) but ``keep`` and those opened by this process.

        Bounded to what this cache makes: ``<root>/<model>/<url hash>/`` folders holding a ``.url`` file,
        two levels down, no symbolic link followed. Returns the folders removed.
        """
        wanted = self._opened | {self._folder(model, url) for model, url in keep}
        removed = []
        for model_folder in _subfolders(self.root):
            for folder in _subfolders(model_folder):
                if folder not in wanted and (folder / ".url").is_file():
                    shutil.rmtree(folder, ignore_errors=True)
                    removed.append(folder)
            with contextlib.suppress(OSError):
                model_folder.rmdir()  # only when nothing else is left in it
        return removed

    def _folder(self, model: str, url: str) -> Path:
        digest = hashlib.blake2b(url.encode(), digest_size=8).hexdigest()
        folder_name = model if not model.startswith(".") else "_" + model  # never ".", "..", or ".lock"
        return self.root / folder_name / digest


class VersionCache:
    """Local copies of one model's versions from one base URL; used from the source's thread only."""

    def __init__(self, directory: Path, url: str) -> None:
        self.directory = directory
        self.url = url
        # Versions whose copy was checked against its manifest: version -> fingerprint.
        self._checked: dict[int, str] = {}
        self._remove_leftovers()

    def path(self, version: int) -> Path:
        return self.directory / str(version)

    def lookup(self, version: int, fingerprint: str) -> Path | None:
        """The copy of ``version`` if it is intact and was downloaded from a listing with ``fingerprint``."""
        path = self.path(version)
        if self._checked.get(version) == fingerprint and path.is_dir():
            return path
        self._checked.pop(version, None)
        manifest = _read_manifest(self._manifest(version))
        if manifest is None or manifest.fingerprint != fingerprint or not _has_files(path, manifest):
            return None
        self._checked[version] = fingerprint
        return path

    def store(self, listing: VersionListing, download: Callable[[Path], None]) -> Path:
        """Download ``listing`` with ``download(folder)`` and put it in place atomically."""
        version = listing.version
        self.directory.mkdir(parents=True, exist_ok=True)
        write_atomically(self.directory / ".url", self.url + "\n")
        partial = Path(tempfile.mkdtemp(prefix=f"{_PARTIAL}{version}-", dir=self.directory))
        try:
            download(partial)
            final, manifest = self.path(version), self._manifest(version)
            # The manifest goes first and comes back last: from here until the new folder is in place,
            # whatever is at ``final`` has no manifest and is never reused.
            manifest.unlink(missing_ok=True)
            self._checked.pop(version, None)
            if final.exists():
                # A loaded or loading version may still read its old files: rename them away, never write
                # over them; ``remove_old_copies`` deletes them once the version is no longer held.
                final.rename(self.directory / f"{_OLD}{version}-{uuid.uuid4().hex}")
            partial.rename(final)
            write_atomically(manifest, json.dumps(_manifest_json(listing)))
            self._checked[version] = listing.fingerprint
            return final
        finally:
            if partial.exists():
                shutil.rmtree(partial, ignore_errors=True)

    def versions(self) -> set[int]:
        """Versions with a folder in the cache (complete or not)."""
        try:
            names = [p.name for p in self.directory.iterdir()]
        except FileNotFoundError:
            return set()
        found = {int(name) for name in names if name.isdigit()}
        found |= {int(name[:-5]) for name in names if name.endswith(".json") and name[:-5].isdigit()}
        return found

    def old_copies(self) -> dict[Path, int]:
        """Folders of versions since rewritten on storage, with the version each one held."""
        try:
            children = list(self.directory.iterdir())
        except FileNotFoundError:
            return {}
        found = {}
        for child in children:
            number = child.name[len(_OLD) :].partition("-")[0]
            if child.name.startswith(_OLD) and number.isdigit():
                found[child] = int(number)
        return found

    def remove(self, version: int) -> None:
        """Delete the copy of ``version``: its manifest first, so a half-deleted folder is never reused."""
        self._checked.pop(version, None)
        self._manifest(version).unlink(missing_ok=True)
        shutil.rmtree(self.path(version), ignore_errors=True)

    def remove_folder_if_empty(self) -> None:
        """Drop this URL's folder (and the model's, when it was the last) once no copy is left."""
        if self.versions() or self.old_copies():
            return
        shutil.rmtree(self.directory, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.directory.parent.rmdir()  # only succeeds when no other URL of the model is cached

    def _manifest(self, version: int) -> Path:
        return self.directory / f"{version}.json"

    def _remove_leftovers(self) -> None:
        """Partial downloads and half-replaced folders of a process that died: nobody else writes here."""
        if not self.directory.is_dir():
            return
        for child in self.directory.iterdir():
            if child.name.startswith((_PARTIAL, _OLD)):
                shutil.rmtree(child, ignore_errors=True)


def _subfolders(folder: Path) -> list[Path]:
    try:
        return [child for child in folder.iterdir() if child.is_dir() and not child.is_symlink()]
    except OSError:
        return []


def _manifest_json(listing: VersionListing) -> dict[str, object]:
    return {
        "version": listing.version,
        "folder": listing.folder,
        "objects": [[o.relative, o.size, o.identity] for o in listing.objects],
    }


def _read_manifest(path: Path) -> VersionListing | None:
    """The listing a copy was downloaded from (its fingerprint is recomputed, never trusted from disk)."""
    try:
        data = json.loads(path.read_text())
        objects = tuple(RemoteObject(str(r), int(s), str(i)) for r, s, i in data["objects"])
        return VersionListing(int(data["version"]), str(data["folder"]), objects)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _has_files(folder: Path, manifest: VersionListing) -> bool:
    """Every listed file is there with its listed size (someone may have pruned the cache by hand)."""
    for item in manifest.objects:
        try:
            if folder.joinpath(*item.relative.split("/")).stat().st_size != item.size:
                return False
        except OSError:
            return False
    return True
