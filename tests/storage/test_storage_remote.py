"""The source over a repository on object storage: discovery, the completeness rule, errors and cleanup.

Storage is a ``file://`` URL (fsspec's local file system, the same code path as ``s3://``); the S3 server
tests are in test_s3_repository.py.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from core.source_recorder import Recorder

from modelserve.config.model_config import ModelConfig, VersionPolicy
from modelserve.core.source import FileSystemSource
from modelserve.errors import FailedPrecondition
from modelserve.storage.repository import StorageRepositories

SETTLE = 0.2


class Held:
    """What the manager holds, as the cache's cleanup asks it."""

    def __init__(self) -> None:
        self.versions: set[tuple[str, int]] = set()

    def __call__(self, model: str, version: int) -> bool:
        return (model, version) in self.versions


def write_version(base: Path, version: int, payload: bytes = b"weights", name: str = "model.onnx") -> Path:
    path = base / str(version) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path.parent


def make_old(path: Path) -> None:
    past = time.time() - 60
    for root, _dirs, files in os.walk(path):
        for name in [*files, "."]:
            os.utime(os.path.join(root, name), (past, past))


class Setup:
    def __init__(self, tmp_path: Path, policy: VersionPolicy | None = None) -> None:
        self.storage = tmp_path / "bucket" / "m"
        self.storage.mkdir(parents=True)
        self.cache = tmp_path / "cache"
        self.recorder = Recorder()
        self.held = Held()
        self.config = ModelConfig(
            name="m", base_path=self.storage.as_uri(), version_policy=policy or VersionPolicy()
        )
        self.source = FileSystemSource(
            [self.config],
            self.recorder,
            poll_wait_seconds=1,
            settle_seconds=SETTLE,
            open_repository=StorageRepositories(str(self.cache), self.held).open,
        )

    def cached(self) -> set[int]:
        return {int(p.name) for p in self.cache.glob("m/*/*") if p.name.isdigit()}


def test_versions_on_storage_are_announced_from_the_local_cache(tmp_path: Path) -> None:
    setup = Setup(tmp_path, VersionPolicy(kind="latest", num_versions=2))
    for version in (1, 2, 3):
        write_version(setup.storage, version, f"v{version}".encode())
    setup.source.poll_once()
    assert setup.recorder.last() == [2, 3]
    for aspired in setup.recorder.calls[-1][1]:
        assert aspired.path.is_relative_to(setup.cache) and aspired.path.name == str(aspired.version)
        assert (aspired.path / "model.onnx").read_bytes() == f"v{aspired.version}".encode()
    assert setup.cached() == {2, 3}, "only the versions the policy chose are downloaded"


def test_a_new_version_is_offered_once_its_listing_stayed_the_same(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    write_version(setup.storage, 1)
    setup.source.poll_once()
    make_old(write_version(setup.storage, 2, b"half"))  # old timestamps tell nothing on object storage
    setup.source.poll_once()
    assert setup.recorder.last() == [1]
    assert setup.source._next_wait() <= SETTLE  # looks again when the quiet time is over
    write_version(setup.storage, 2, b"rest", name="weights.bin")  # the upload goes on: the clock restarts
    time.sleep(SETTLE * 0.75)
    setup.source.poll_once()
    assert setup.recorder.last() == [1]
    time.sleep(SETTLE + 0.05)
    setup.source.poll_once()
    assert setup.recorder.last() == [2]
    assert sorted(p.name for p in setup.recorder.calls[-1][1][0].path.iterdir()) == [
        "model.onnx",
        "weights.bin",
    ]


def test_a_version_gone_from_storage_leaves_the_cache_once_unloaded(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    write_version(setup.storage, 1)
    write_version(setup.storage, 2)
    setup.source.poll_once()
    assert setup.recorder.last() == [2]
    setup.held.versions.add(("m", 2))  # the manager loaded it
    shutil.rmtree(setup.storage / "2")
    setup.source.poll_once()
    assert setup.recorder.last() == [1]
    assert setup.cached() == {1, 2}, "version 2 is still loaded (draining): its files stay"
    setup.held.versions.discard(("m", 2))  # unloaded
    setup.source.poll_once()
    assert setup.cached() == {1}


def test_an_unreadable_url_keeps_the_aspired_versions_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    setup = Setup(tmp_path)
    write_version(setup.storage, 1)
    setup.source.poll_once()
    calls = len(setup.recorder.calls)
    setup.storage.rename(tmp_path / "elsewhere")  # every object gone: like a missing local base path
    with caplog.at_level(logging.INFO, logger="modelserve.source"):
        setup.source.poll_once()
        setup.source.poll_once()
    assert len(setup.recorder.calls) == calls, "nothing is announced while storage cannot be read"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "cannot read base path file://" in errors[0]
    assert setup.cached() == {1}


def test_a_missing_url_at_startup_announces_no_versions(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    setup.source.poll_once()
    assert setup.recorder.calls == [("m", [])]  # the manager learns the model has nothing to serve yet
    write_version(setup.storage, 4)
    setup.source.poll_once()  # first sight: the quiet period starts
    assert setup.recorder.calls[-1] == ("m", [])
    time.sleep(SETTLE + 0.05)
    setup.source.poll_once()
    assert setup.recorder.last() == [4]


def test_a_removed_model_leaves_the_cache_once_unloaded(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    write_version(setup.storage, 1)
    setup.source.poll_once()
    setup.held.versions.add(("m", 1))
    setup.source.update_models([])
    assert setup.recorder.calls[-1] == ("m", [])
    assert setup.cached() == {1}
    setup.held.versions.clear()
    setup.source.poll_once()
    assert setup.cached() == set()
    assert not (setup.cache / "m").exists()


def test_a_restart_reuses_an_intact_copy(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    write_version(setup.storage, 1)
    setup.source.poll_once()
    (copy,) = setup.recorder.calls[-1][1]
    inode = (copy.path / "model.onnx").stat().st_ino
    del setup.source  # the process ends: its cache lock goes with it
    again = Recorder()
    source = FileSystemSource(
        [setup.config],
        again,
        settle_seconds=SETTLE,
        open_repository=StorageRepositories(str(setup.cache), Held()).open,
    )
    source.poll_once()
    (reused,) = again.calls[-1][1]
    assert reused == copy and (reused.path / "model.onnx").stat().st_ino == inode


def test_a_base_path_that_cannot_be_opened_stops_startup_but_not_a_running_source(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = ModelConfig(name="bad", base_path="nosuchscheme://bucket/bad")
    with pytest.raises(FailedPrecondition, match="nosuchscheme"):
        FileSystemSource(
            [bad], Recorder(), open_repository=StorageRepositories(str(tmp_path), Held()).open
        ).start()

    setup = Setup(tmp_path)
    write_version(setup.storage, 1)
    setup.source.poll_once()
    with caplog.at_level(logging.ERROR, logger="modelserve.source"):
        setup.source.update_models([bad, setup.config])  # a config reload adds a model we cannot read
        setup.source.poll_once()
    assert ("bad", []) in setup.recorder.calls, "announced with no versions: a reload does not wait for it"
    assert setup.recorder.calls[-1][0] == "m" and setup.recorder.last() == [1], (
        "the other model is still polled"
    )
    assert len([r for r in caplog.records if "cannot open base path nosuchscheme" in r.getMessage()]) == 1


def test_s3_without_s3fs_is_a_one_line_error_with_the_install_hint(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "sys.modules['s3fs'] = None\n"  # as if the [s3] extra were not installed
        "from modelserve.cli import main\n"
        f"sys.exit(main(['serve', '--model_base_path=s3://bucket/m', '--storage_cache_dir={tmp_path}',"
        " '--port=0', '--rest_api_port=0']))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("modelserve: error:")]
    assert len(errors) == 1 and "pip install 'modelserve[s3]'" in errors[0], done.stderr
    assert "Traceback" not in done.stderr


def test_the_old_files_of_a_rewritten_version_stay_while_it_is_held(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    write_version(setup.storage, 1, b"old")
    setup.source.poll_once()
    setup.held.versions.add(("m", 1))  # loaded: a runtime may still open its files (ONNX external data)
    write_version(setup.storage, 1, b"new weights")  # rewritten in place on storage
    setup.source.poll_once()  # first sight of the rewrite: the quiet period starts
    time.sleep(SETTLE + 0.05)
    setup.source.poll_once()
    (aspired,) = setup.recorder.calls[-1][1]
    assert (aspired.path / "model.onnx").read_bytes() == b"new weights"
    (old,) = setup.cache.glob("m/*/.old-1-*")
    assert (old / "model.onnx").read_bytes() == b"old"
    setup.source.poll_once()
    assert old.exists(), "kept while the version is held"
    setup.held.versions.clear()
    setup.source.poll_once()
    assert not old.exists()
