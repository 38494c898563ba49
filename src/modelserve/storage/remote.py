"""A model's versions on object storage: ``<base URL>/<integer version>/...`` read through fsspec.

Any fsspec URL works (``s3://``, ``gs://``, ``az://``, ``file://`` ...). fsspec and s3fs are the optional
extra ``modelserve[s3]``, imported only when a base path is a URL; other schemes need their own fsspec
package (gcsfs, adlfs), named by fsspec's error.

On S3 the credentials, region and endpoint come from the standard AWS settings (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, ``AWS_DEFAULT_REGION``,
``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``), read by botocore. botocore takes the client's region from
``AWS_DEFAULT_REGION`` (or the profile) only, never from ``AWS_REGION`` (it looks at that one solely to pick
its "auto" defaults mode inside AWS runtimes); the other AWS SDKs and the Lambda/ECS runtimes set
``AWS_REGION``, so it is read here when ``AWS_DEFAULT_REGION`` is not set.

Every storage failure (connection refused, a timeout, a 5xx, access denied) is raised as ``OSError``, the
source's signal for "cannot answer now: keep what is served and ask again at the next poll". A download
abandoned because the server stops raises ``InterruptedError`` (an ``OSError`` too).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelserve.errors import FailedPrecondition

INSTALL_HINT = "pip install 'modelserve[s3]'"

# A poll must fail fast when storage is down (the next poll retries), and see the bucket as it is (no
# listing cache). Each request is tried twice in all (botocore's standard retry mode; s3fs's own retry
# loop is set to one attempt), so an endpoint that drops packets fails a poll in about 2 x 3 s, and one
# that accepts connections but never answers in about 2 x 10 s. The read timeout is the longest silence
# allowed between two packets of an answer, not a bound on a whole download.
CONNECT_TIMEOUT_SECONDS = 3
READ_TIMEOUT_SECONDS = 10
ATTEMPTS = 2
_S3_OPTIONS: dict[str, Any] = {
    "skip_instance_cache": True,
    "use_listings_cache": False,
    "config_kwargs": {
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "read_timeout": READ_TIMEOUT_SECONDS,
        "retries": {"max_attempts": ATTEMPTS, "mode": "standard"},
    },
}
# Files of one version downloaded at once (each one streamed in chunks).
_PARALLEL_FILES = 8
# How often a download waiting on the network looks whether it must be abandoned.
_ABANDON_CHECK_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class RemoteObject:
    """One stored file of a version."""

    relative: str  # its path under the version folder, with "/" separators
    size: int
    identity: str  # the ETag (S3, GCS, Azure), else the modification time: changes when it is rewritten


@dataclass(frozen=True, slots=True)
class VersionListing:
    """What one version folder holds on storage, as listed by one poll."""

    version: int
    folder: str  # the version's folder name under the base URL ("3", or "003")
    objects: tuple[RemoteObject, ...]  # sorted by path

    @property
    def fingerprint(self) -> str:
        """Changes whenever a file of the version is added, removed or rewritten."""
        entries = [(o.relative, o.size, o.identity) for o in self.objects]
        return hashlib.blake2b(repr(entries).encode(), digest_size=12).hexdigest()

    @property
    def total_bytes(self) -> int:
        return sum(o.size for o in self.objects)


def is_url(base_path: str) -> bool:
    """Whether a base path names object storage (any ``scheme://``) rather than a local directory."""
    return "://" in base_path


class RemoteLocation:
    """A model's base URL: lists its versions and downloads one; called from the source's thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._fs, root = _open_filesystem(url)
        self._root = root.rstrip("/")

    def list_versions(self) -> dict[int, VersionListing]:
        """Every integer-named folder under the base URL that holds at least one object.

        On object storage a folder exists only through the objects under it, so a base URL with no
        objects at all raises FileNotFoundError: like a missing local base path, not "no versions".
        """
        try:
            found = self._fs.find(self._root, detail=True)
        except Exception as exc:  # any client error: the storage cannot answer now
            raise _storage_error(f"listing {self.url}", exc) from exc
        objects: dict[str, list[RemoteObject]] = {}
        for key, info in found.items():
            folder, _, relative = _relative_to(key, self._root).partition("/")
            if not folder.isdigit() or not _is_safe(relative) or info.get("type") == "directory":
                continue
            objects.setdefault(folder, []).append(RemoteObject(relative, int(info["size"]), _identity(info)))
        if not objects:
            raise FileNotFoundError(f"no objects under {self.url}")
        return {
            int(folder): VersionListing(int(folder), folder, tuple(sorted(files, key=lambda o: o.relative)))
            for folder, files in objects.items()
        }

    def download(self, listing: VersionListing, target: Path, stop: threading.Event) -> None:
        """Copy every object of ``listing`` under ``target`` and check that it is what was listed.

        Raises OSError when a file is missing or has another size, or when the version's listing changed
        while it was copied (a rewrite in progress): the copy would mix two uploads. Raises
        InterruptedError promptly once ``stop`` is set (the server stops): the copy is abandoned midway,
        and no file is written under ``target`` after this returns.
        """
        remote = [f"{self._root}/{listing.folder}/{o.relative}" for o in listing.objects]
        local = [target.joinpath(*o.relative.split("/")) for o in listing.objects]
        for path in local:
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if _is_async(self._fs):
                self._get_abandonable(list(zip(remote, local, strict=True)), stop)
            else:  # a local or blocking file system: looks at ``stop`` between files
                for source, destination in zip(remote, local, strict=True):
                    _raise_if_stopped(stop, listing.version)
                    self._fs.get_file(source, str(destination))
        except InterruptedError:
            raise
        except Exception as exc:
            raise _storage_error(f"downloading version {listing.version} from {self.url}", exc) from exc
        _raise_if_stopped(stop, listing.version)
        for item, path in zip(listing.objects, local, strict=True):
            size = path.stat().st_size if path.exists() else -1
            if size != item.size:
                raise OSError(
                    f"downloaded {item.relative} of version {listing.version}: {size} bytes, "
                    f"expected {item.size}"
                )
        now = self.list_versions().get(listing.version)
        if now is None or now.fingerprint != listing.fingerprint:
            raise OSError(f"version {listing.version} under {self.url} changed while it was downloaded")

    def _get_abandonable(self, pairs: list[tuple[str, Path]], stop: threading.Event) -> None:
        """Download on the file system's own event loop, and cancel it there once ``stop`` is set.

        fsspec's blocking ``get`` cannot be interrupted; its coroutines can. Cancelling the ``gather``
        cancels every file's transfer, and this returns only once they all ended.
        """
        fs, finished = self._fs, threading.Event()

        async def get_all() -> None:
            limit = asyncio.Semaphore(_PARALLEL_FILES)

            async def get_one(source: str, destination: Path) -> None:
                async with limit:
                    await fs._get_file(source, str(destination))

            try:
                await asyncio.gather(*(get_one(source, destination) for source, destination in pairs))
            finally:
                finished.set()

        transfer = asyncio.run_coroutine_threadsafe(get_all(), fs.loop)
        while not finished.wait(_ABANDON_CHECK_SECONDS):
            if stop.is_set():
                transfer.cancel()
                # Wait for the cancellation itself (at once for a transfer that never started, which
                # never sets ``finished``), bounded: then nothing writes into the folder being removed.
                with contextlib.suppress(Exception):  # cancelled, a timeout, or the transfer's own error
                    transfer.result(timeout=READ_TIMEOUT_SECONDS)
                raise InterruptedError("download abandoned: the server is stopping")
        transfer.result()  # its error, if any


def _open_filesystem(url: str) -> tuple[Any, str]:
    """The fsspec file system (untyped) and path for ``url``; a missing package is a one-line install hint."""
    scheme = url.split("://", 1)[0].lower()
    try:
        import fsspec  # type: ignore[import-untyped]
    except ImportError as exc:
        raise FailedPrecondition(f"base path {url} needs fsspec: {INSTALL_HINT}") from exc
    options = _s3_options() if scheme in ("s3", "s3a") else {}
    try:
        fs, path = fsspec.core.url_to_fs(url, **options)
    except ImportError as exc:
        hint = INSTALL_HINT if scheme in ("s3", "s3a") else str(exc)
        raise FailedPrecondition(f"base path {url} needs the {scheme} file system: {hint}") from exc
    except ValueError as exc:
        raise FailedPrecondition(f"base path {url}: {exc}") from exc
    if scheme in ("s3", "s3a"):
        fs.retries = 1  # s3fs's own retry loop (a class attribute, not an option): botocore's retries suffice
    return fs, path


def _s3_options() -> dict[str, Any]:
    options = dict(_S3_OPTIONS)
    region = os.environ.get("AWS_REGION")
    if region and not os.environ.get("AWS_DEFAULT_REGION"):
        options["client_kwargs"] = {"region_name": region}
    return options


def _is_async(fs: Any) -> bool:
    from fsspec.asyn import AsyncFileSystem  # type: ignore[import-untyped]

    return isinstance(fs, AsyncFileSystem) and getattr(fs, "asynchronous", False) is False


def _raise_if_stopped(stop: threading.Event, version: int) -> None:
    if stop.is_set():
        raise InterruptedError(f"download of version {version} abandoned: the server is stopping")


def _relative_to(key: str, root: str) -> str:
    return key[len(root) + 1 :] if key.startswith(root + "/") else ""


def _is_safe(relative: str) -> bool:
    """A file path that stays inside its version folder once copied (object keys may hold "..")."""
    parts = relative.split("/")
    return bool(relative) and all(part not in ("", ".", "..") for part in parts)


def _identity(info: dict[str, Any]) -> str:
    for key in ("ETag", "etag", "md5Hash", "mtime", "LastModified", "last_modified", "updated"):
        if info.get(key):
            return str(info[key])
    return ""


def _storage_error(doing: str, exc: Exception) -> OSError:
    if isinstance(exc, OSError):
        return exc
    return OSError(f"{doing}: {type(exc).__name__}: {exc}")
