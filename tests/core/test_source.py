"""The file-system source: version discovery, the completeness rule for versions still being written."""

from __future__ import annotations

import os
import time
from pathlib import Path

from core.source_recorder import Recorder

from modelserve.config.model_config import ModelConfig, VersionPolicy
from modelserve.core.source import FileSystemSource, look_at

SETTLE = 0.2


def write_version(base: Path, version: int, payload: bytes = b"weights") -> Path:
    path = base / str(version)
    path.mkdir(parents=True)
    (path / "model.onnx").write_bytes(payload)
    return path


def make_old(path: Path) -> None:
    """Backdate the mtime of ``path`` and everything under it, as if written long ago."""
    past = time.time() - 60
    os.utime(path, (past, past))
    for root, _dirs, files in os.walk(path):
        for name in [*files, "."]:
            os.utime(os.path.join(root, name), (past, past))


def source_for(base: Path, recorder: Recorder, policy: VersionPolicy | None = None) -> FileSystemSource:
    config = ModelConfig(name="m", base_path=str(base), version_policy=policy or VersionPolicy())
    return FileSystemSource([config], recorder, poll_wait_seconds=1, settle_seconds=SETTLE)


def test_versions_present_at_startup_load_at_once(tmp_path: Path) -> None:
    write_version(tmp_path, 1)
    write_version(tmp_path, 2)
    (tmp_path / "not-a-version").mkdir()
    recorder = Recorder()
    source_for(tmp_path, recorder, VersionPolicy(kind="all")).poll_once()
    assert recorder.last() == [1, 2]


def test_a_fresh_version_waits_until_it_is_quiet(tmp_path: Path) -> None:
    write_version(tmp_path, 1)
    recorder = Recorder()
    source = source_for(tmp_path, recorder)
    source.poll_once()
    assert recorder.last() == [1]
    write_version(tmp_path, 2)  # just written: mtimes are fresh
    source.poll_once()
    assert recorder.last() == [1], "a version written a moment ago must not be offered yet"
    assert source._next_wait() <= SETTLE  # the source looks again soon, not after a whole poll
    time.sleep(SETTLE + 0.05)
    source.poll_once()
    assert recorder.last() == [2]


def test_a_version_that_keeps_changing_is_not_offered(tmp_path: Path) -> None:
    write_version(tmp_path, 1)
    recorder = Recorder()
    source = source_for(tmp_path, recorder)
    source.poll_once()
    path = tmp_path / "2"
    path.mkdir()
    with (path / "model.onnx").open("wb") as partial:
        for _ in range(4):
            partial.write(b"x" * 1000)
            partial.flush()
            source.poll_once()
            assert recorder.last() == [1]
            time.sleep(SETTLE / 2)
    time.sleep(SETTLE + 0.05)
    source.poll_once()
    assert recorder.last() == [2]


def test_a_copy_with_old_mtimes_waits_for_an_unchanged_listing(tmp_path: Path) -> None:
    """``cp -p``/``rsync -a`` in progress: files keep old mtimes, only the listing shows the copy."""
    write_version(tmp_path, 1)
    recorder = Recorder()
    source = source_for(tmp_path, recorder)
    source.poll_once()
    path = write_version(tmp_path, 2)
    make_old(path / "model.onnx")  # copied with its mtime; the directory itself is still being filled
    source.poll_once()
    assert recorder.last() == [1]
    (path / "variables").mkdir()
    (path / "variables" / "data").write_bytes(b"y" * 10)
    make_old(path / "variables")
    source.poll_once()  # the listing changed: the quiet period starts again
    assert recorder.last() == [1]
    time.sleep(SETTLE + 0.05)
    source.poll_once()  # unchanged for the settle time
    assert recorder.last() == [2]


def test_future_mtimes_do_not_stall_a_version(tmp_path: Path) -> None:
    write_version(tmp_path, 1)
    recorder = Recorder()
    source = source_for(tmp_path, recorder)
    source.poll_once()
    path = write_version(tmp_path, 2)
    future = time.time() + 3600  # a clock-skewed writer
    os.utime(path / "model.onnx", (future, future))
    source.poll_once()
    assert recorder.last() == [1]
    time.sleep(SETTLE + 0.05)
    source.poll_once()
    assert recorder.last() == [2]


def test_a_chmod_changes_the_fingerprint(tmp_path: Path) -> None:
    path = write_version(tmp_path, 1)
    before = look_at(path).fingerprint
    (path / "model.onnx").chmod(0o600)
    assert look_at(path).fingerprint != before


def test_an_unreadable_base_path_keeps_the_versions(tmp_path: Path) -> None:
    base = tmp_path / "m"
    write_version(base, 1)
    recorder = Recorder()
    source = source_for(base, recorder)
    source.poll_once()
    assert recorder.last() == [1]
    base.rename(tmp_path / "elsewhere")  # e.g. a storage blip
    calls = len(recorder.calls)
    source.poll_once()
    assert len(recorder.calls) == calls, "nothing is announced while the base path cannot be read"


def test_fingerprint_changes_when_a_file_changes(tmp_path: Path) -> None:
    path = write_version(tmp_path, 1)
    first = look_at(path)
    assert look_at(path) == first
    (path / "model.onnx").write_bytes(b"other weights!")
    assert look_at(path).fingerprint != first.fingerprint


def test_aspired_versions_carry_fingerprints(tmp_path: Path) -> None:
    path = write_version(tmp_path, 1)
    recorder = Recorder()
    source_for(tmp_path, recorder).poll_once()
    (aspired,) = recorder.calls[-1][1]
    assert aspired.path == path and aspired.fingerprint == look_at(path).fingerprint


def test_settle_zero_offers_everything_at_once(tmp_path: Path) -> None:
    recorder = Recorder()
    config = ModelConfig(name="m", base_path=str(tmp_path))
    source = FileSystemSource([config], recorder, poll_wait_seconds=1, settle_seconds=0)
    source.poll_once()
    write_version(tmp_path, 3)
    source.poll_once()
    assert recorder.last() == [3]


def test_a_version_rewritten_in_place_stays_offered_with_its_last_quiet_fingerprint(tmp_path: Path) -> None:
    path = write_version(tmp_path, 1)
    recorder = Recorder()
    source = source_for(tmp_path, recorder)
    source.poll_once()
    quiet = recorder.calls[-1][1][0].fingerprint
    (path / "model.onnx").write_bytes(b"new weights being written")
    source.poll_once()
    (still,) = recorder.calls[-1][1]
    assert still.version == 1 and still.fingerprint == quiet, "a rewrite in progress must not be announced"
    time.sleep(SETTLE + 0.05)
    source.poll_once()
    (rewritten,) = recorder.calls[-1][1]
    assert rewritten.fingerprint == look_at(path).fingerprint != quiet


def test_a_directory_renamed_into_place_is_offered_on_first_sight(tmp_path: Path) -> None:
    write_version(tmp_path, 1)
    recorder = Recorder()
    source = source_for(tmp_path, recorder)
    source.poll_once()
    staging = write_version(tmp_path, 99).rename(tmp_path / "staging-2")
    make_old(staging)
    staging.rename(tmp_path / "2")
    source.poll_once()
    assert recorder.last() == [2]


def test_a_version_written_longer_than_the_settle_time_ago_is_offered_at_first_sight(tmp_path: Path) -> None:
    write_version(tmp_path, 1)
    recorder = Recorder()
    source = source_for(tmp_path, recorder)
    source.poll_once()
    write_version(tmp_path, 2)  # finished writing...
    time.sleep(SETTLE + 0.05)  # ...a settle period before the source first looks
    source.poll_once()
    assert recorder.last() == [2]
