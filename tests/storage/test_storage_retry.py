"""Failed downloads: retried with backoff per version and listing, and never blocking the other versions.

The source-level tests read a real S3-compatible server through ``CuttableProxy``, which answers 403 to the
objects a test denies: an object that can never be read.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from core.source_recorder import Recorder
from s3_support import CuttableProxy, S3Server

from modelserve.config.model_config import ModelConfig, VersionPolicy
from modelserve.core.source import FileSystemSource
from modelserve.storage.repository import StorageRepositories
from modelserve.storage.retry import MAX_DELAY_SECONDS, RetrySchedule, retry_delay


@pytest.mark.parametrize(
    ("failures", "delay"),
    [
        (0, 0.0),
        (1, 1.0),
        (2, 2.0),
        (3, 4.0),
        (9, 256.0),
        (10, MAX_DELAY_SECONDS),
        (10_000, MAX_DELAY_SECONDS),
    ],
)
def test_retry_delay_doubles_up_to_a_cap(failures: int, delay: float) -> None:
    assert retry_delay(failures) == delay


def test_a_new_listing_or_a_success_starts_afresh() -> None:
    schedule = RetrySchedule()
    assert schedule.wait_left(2, "a") == 0
    assert schedule.failed(2, "a").count == 1
    assert schedule.failed(2, "a").count == 2
    assert 1.0 < schedule.wait_left(2, "a") <= 2.0
    assert schedule.wait_left(2, "b") == 0, "another listing of the version is tried at once"
    assert schedule.failed(2, "b").count == 1
    schedule.succeeded(2)
    assert schedule.wait_left(2, "b") == 0
    schedule.failed(3, "c")
    schedule.forget_except({2})
    assert schedule.wait_left(3, "c") == 0


def source_for(
    prefix: str, cache: Path, policy: VersionPolicy, recorder: Recorder, settle: float = 1.0
) -> FileSystemSource:
    config = ModelConfig(name="m", base_path=f"s3://models/{prefix}", version_policy=policy)
    return FileSystemSource(
        [config],
        recorder,
        settle_seconds=settle,
        open_repository=StorageRepositories(str(cache), lambda m, v: False).open,
    )


def test_an_unreadable_version_is_retried_with_backoff_and_does_not_block_the_others(
    s3_server: S3Server, s3_proxy: CuttableProxy, tmp_path: Path
) -> None:
    prefix = "denied/m"
    s3_server.upload(prefix, 1, {"model.onnx": b"v1"})
    s3_server.upload(prefix, 2, {"model.onnx": b"v2", "weights.bin": b"unreadable"})
    s3_proxy.deny(f"{prefix}/2/weights.bin")
    recorder = Recorder()
    source = source_for(prefix, tmp_path / "cache", VersionPolicy(kind="latest"), recorder)

    source.poll_once()
    assert recorder.last() == [1], "the newest version that can be fetched serves meanwhile"
    assert s3_proxy.denied == 1
    for _ in range(5):  # polls within the first backoff delay (1 s) do not download again
        source.poll_once()
    assert s3_proxy.denied == 1
    assert recorder.last() == [1]

    time.sleep(1.1)
    source.poll_once()
    assert s3_proxy.denied == 2, "tried again once the delay is over"
    source.poll_once()
    assert s3_proxy.denied == 2, "the next delay is longer"

    s3_proxy.deny()  # the object became readable; its listing did not change: the backoff still holds
    source.poll_once()
    assert recorder.last() == [1]
    time.sleep(2.1)
    source.poll_once()
    assert recorder.last() == [2]
    assert (recorder.calls[-1][1][0].path / "weights.bin").read_bytes() == b"unreadable"


def test_with_several_versions_aspired_one_unreadable_version_leaves_out_only_itself(
    s3_server: S3Server, s3_proxy: CuttableProxy, tmp_path: Path
) -> None:
    prefix = "denied-all/m"
    for version in (1, 2, 3):
        s3_server.upload(prefix, version, {"model.onnx": f"v{version}".encode()})
    s3_proxy.deny(f"{prefix}/2/")
    recorder = Recorder()
    source = source_for(prefix, tmp_path / "cache", VersionPolicy(kind="all"), recorder)
    source.poll_once()
    assert recorder.last() == [1, 3]


def test_when_no_chosen_version_can_be_fetched_the_aspired_set_stays(
    s3_server: S3Server, s3_proxy: CuttableProxy, tmp_path: Path
) -> None:
    prefix = "denied-only/m"
    s3_server.upload(prefix, 1, {"model.onnx": b"v1"})
    recorder = Recorder()
    policy = VersionPolicy(kind="specific", versions=(1,))
    source = source_for(prefix, tmp_path / "cache", policy, recorder, settle=0)  # a rewrite counts at once
    source.poll_once()
    assert recorder.last() == [1]
    s3_server.upload(prefix, 1, {"model.onnx": b"v1, rewritten"})
    s3_proxy.deny(f"{prefix}/1/")
    source.poll_once()
    assert s3_proxy.denied == 1
    (kept,) = recorder.calls[-1][1]
    assert kept.version == 1 and (kept.path / "model.onnx").read_bytes() == b"v1", (
        "the version announced keeps its last copy"
    )
