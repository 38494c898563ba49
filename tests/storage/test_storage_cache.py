"""The local cache of versions from object storage: atomic downloads, reuse, cleanup, one owner.

Storage here is a ``file://`` URL (fsspec's local file system): the same code path as S3 without a server.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from modelserve.errors import FailedPrecondition
from modelserve.storage.cache import CacheDirectory, VersionCache
from modelserve.storage.remote import RemoteLocation

NOT_STOPPING = threading.Event()


def write_version(base: Path, version: int, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = base / str(version) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    base = tmp_path / "bucket" / "m"
    write_version(base, 1, {"model.onnx": b"graph", "variables/data": b"weights" * 100})
    return base


@pytest.fixture
def cache_root(tmp_path: Path) -> CacheDirectory:
    return CacheDirectory(tmp_path / "cache")


def fetch(location: RemoteLocation, cache: VersionCache, version: int) -> Path:
    listing = location.list_versions()[version]
    return cache.store(listing, lambda folder: location.download(listing, folder, NOT_STOPPING))


def test_a_download_lands_complete_and_is_found_again(storage: Path, cache_root: CacheDirectory) -> None:
    location = RemoteLocation(storage.as_uri())
    cache = cache_root.for_model("m", location.url)
    path = fetch(location, cache, 1)
    assert path == cache.directory / "1"
    assert (path / "variables" / "data").read_bytes() == b"weights" * 100
    fingerprint = location.list_versions()[1].fingerprint
    assert cache.lookup(1, fingerprint) == path
    assert cache.lookup(1, "another listing") is None
    assert [p.name for p in cache.directory.iterdir() if p.name.startswith(".partial")] == []


def test_a_download_interrupted_midway_leaves_no_version(storage: Path, cache_root: CacheDirectory) -> None:
    location = RemoteLocation(storage.as_uri())
    cache = cache_root.for_model("m", location.url)
    listing = location.list_versions()[1]
    (storage / "1" / "variables" / "data").unlink()  # gone from storage after it was listed
    with pytest.raises(OSError):
        cache.store(listing, lambda folder: location.download(listing, folder, NOT_STOPPING))
    assert cache.versions() == set()
    assert cache.lookup(1, listing.fingerprint) is None
    assert [p.name for p in cache.directory.iterdir() if p.name != ".url"] == [], "no partial folder left"


def test_a_file_rewritten_during_the_download_is_refused(storage: Path, cache_root: CacheDirectory) -> None:
    location = RemoteLocation(storage.as_uri())
    cache = cache_root.for_model("m", location.url)
    listing = location.list_versions()[1]
    (storage / "1" / "model.onnx").write_bytes(b"a longer graph being uploaded")
    with pytest.raises(OSError, match=r"bytes, expected|changed while"):
        cache.store(listing, lambda folder: location.download(listing, folder, NOT_STOPPING))
    assert cache.lookup(1, listing.fingerprint) is None


def test_a_copy_of_a_dead_process_is_cleaned_or_reused(storage: Path, tmp_path: Path) -> None:
    location = RemoteLocation(storage.as_uri())
    cache = CacheDirectory(tmp_path / "first").for_model("m", location.url)
    fetch(location, cache, 1)
    (cache.directory / ".partial-2-abc").mkdir()  # a download killed midway
    (cache.directory / ".partial-2-abc" / "model.onnx").write_bytes(b"gra")
    (cache.directory / "3").mkdir()  # a folder swapped in, manifest never written
    reopened = VersionCache(cache.directory, location.url)
    assert not (cache.directory / ".partial-2-abc").exists()
    assert reopened.lookup(1, location.list_versions()[1].fingerprint) == cache.directory / "1"
    assert reopened.lookup(3, "anything") is None


def test_a_copy_pruned_by_hand_is_not_reused(storage: Path, cache_root: CacheDirectory) -> None:
    location = RemoteLocation(storage.as_uri())
    cache = cache_root.for_model("m", location.url)
    path = fetch(location, cache, 1)
    (path / "variables" / "data").write_bytes(b"truncated")
    reopened = VersionCache(cache.directory, location.url)
    assert reopened.lookup(1, location.list_versions()[1].fingerprint) is None


def test_a_new_copy_replaces_the_old_one_without_writing_into_it(
    storage: Path, cache_root: CacheDirectory
) -> None:
    location = RemoteLocation(storage.as_uri())
    cache = cache_root.for_model("m", location.url)
    old = fetch(location, cache, 1)
    held = (old / "model.onnx").open("rb")  # a runtime that still reads the old files
    write_version(storage, 1, {"model.onnx": b"graph v1 fixed"})
    new = fetch(location, cache, 1)
    assert new == old and (new / "model.onnx").read_bytes() == b"graph v1 fixed"
    assert held.read() == b"graph", "the old file was replaced, not overwritten"
    held.close()
    # A runtime that opens files lazily (ONNX external data) still finds the old ones until the version
    # is no longer held: the repository deletes them then (test_storage_remote.py).
    (renamed, version), *others = cache.old_copies().items()
    assert version == 1 and others == []
    assert (renamed / "variables" / "data").read_bytes() == b"weights" * 100
    assert sorted(p.name for p in cache.directory.iterdir()) == [renamed.name, ".url", "1", "1.json"]


def test_a_sweep_at_startup_removes_only_unused_copies(storage: Path, tmp_path: Path) -> None:
    location = RemoteLocation(storage.as_uri())
    first = CacheDirectory(tmp_path / "cache")
    for model, url in (("m", location.url), ("dropped", location.url), ("m", location.url + "/moved")):
        fetch(location, first.for_model(model, url), 1)
    (tmp_path / "cache" / "notes").mkdir()  # not ours: no .url file
    (tmp_path / "cache" / "notes" / "todo").mkdir()
    del first  # the process ends: its cache lock goes with it

    again = CacheDirectory(tmp_path / "cache")
    opened = again.for_model("opened-now", location.url)
    fetch(location, opened, 1)
    removed = again.sweep([("m", location.url)])
    assert sorted(p.relative_to(again.root).parts[0] for p in removed) == ["dropped", "m"]
    assert again.for_model("m", location.url).lookup(1, location.list_versions()[1].fingerprint) is not None
    assert not (again.root / "dropped").exists()
    assert opened.versions() == {1}, "a copy this process opened is never swept"
    assert (again.root / "notes" / "todo").is_dir(), "folders the cache did not make are left alone"


def test_remove_deletes_the_copy_and_then_the_empty_folders(
    storage: Path, cache_root: CacheDirectory
) -> None:
    location = RemoteLocation(storage.as_uri())
    cache = cache_root.for_model("m", location.url)
    fetch(location, cache, 1)
    cache.remove(1)
    assert cache.versions() == set()
    cache.remove_folder_if_empty()
    assert not (cache_root.root / "m").exists()


def test_one_process_per_cache_directory(tmp_path: Path) -> None:
    owner = CacheDirectory(tmp_path / "cache")
    with pytest.raises(FailedPrecondition, match="in use by another modelserve process"):
        CacheDirectory(tmp_path / "cache")  # flock locks per open file: the same test as another process
    assert owner.root == tmp_path / "cache"


def test_model_names_stay_inside_the_cache(cache_root: CacheDirectory) -> None:
    cache = cache_root.for_model("..", "s3://bucket/m")
    assert cache.directory.parent.parent == cache_root.root
    assert os.path.basename(cache.directory.parent) == "_.."
