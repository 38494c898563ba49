"""End to end: ``modelserve serve --model_base_path=s3://...`` against a real S3-compatible server (moto).

The model server reaches storage through ``CuttableProxy`` (its ``AWS_ENDPOINT_URL``), so a test can cut
storage off and count the polls; the test uploads straight to moto. Version ``N`` of the model answers
``[[N, N]]`` to zeros, so every answer tells which version served it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import requests
from e2e.version_repo import ZEROS, add_model_bytes, available, statuses, wait_for, wait_serving_only
from s3_support import CuttableProxy, S3Server

POLL_FLAGS = ("--file_system_poll_wait_seconds=1", "--port=0")


def serve_flags(prefix: str, cache: Path, settle: float = 0.5) -> list[str]:
    return [
        "--model_name=m",
        f"--model_base_path=s3://models/{prefix}",
        f"--storage_cache_dir={cache}",
        f"--version_settle_seconds={settle}",
        *POLL_FLAGS,
    ]


def predict(url: str) -> float:
    reply = requests.post(f"{url}/v1/models/m:predict", json={"instances": ZEROS}, timeout=10)
    reply.raise_for_status()
    value: float = reply.json()["predictions"][0][0]
    return value


def cached(cache: Path, version: int) -> Path | None:
    """The cache folder of ``version`` of model ``m`` (there is one base URL per test)."""
    found = list((cache / "m").glob(f"*/{version}"))
    return found[0] if found else None


def onnx_files(value: float, pad_floats: int = 0) -> dict[str, bytes]:
    return {"model.onnx": add_model_bytes(value, pad_floats=pad_floats)}


def partial_downloads(cache: Path) -> list[Path]:
    return list(cache.glob("m/*/.partial-*"))


SLOW_BYTES_PER_SECOND = 100_000
BIG_FLOATS = 750_000  # a 3 MB model: about 30 s at SLOW_BYTES_PER_SECOND


def external_data_files(value: float) -> dict[str, bytes]:
    """The model as two files: the graph (``model.onnx``) and its weights (``weights.bin``)."""
    model = onnx.load_from_string(add_model_bytes(value, pad_floats=4096))
    with tempfile.TemporaryDirectory() as folder:
        onnx.save_model(
            model,
            f"{folder}/model.onnx",
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location="weights.bin",
            size_threshold=0,
        )
        return {name: Path(folder, name).read_bytes() for name in ("model.onnx", "weights.bin")}


def test_serves_from_s3_and_follows_new_and_removed_versions(
    s3_server: S3Server, s3_proxy: CuttableProxy, start_server: Any, tmp_path: Path
) -> None:
    prefix, cache = "follow/m", tmp_path / "cache"
    s3_server.upload(prefix, 1, onnx_files(1))
    server = start_server(*serve_flags(prefix, cache))
    assert predict(server.url) == 1
    assert cached(cache, 1) is not None

    s3_server.upload(prefix, 2, onnx_files(2))
    wait_serving_only(server.url, "m", 2)
    assert predict(server.url) == 2
    wait_for(lambda: cached(cache, 1) is None, what="the cache folder of unloaded version 1 removed")

    s3_server.delete_version(prefix, 2)  # version 1 is the latest on storage again
    wait_serving_only(server.url, "m", 1)
    assert predict(server.url) == 1
    wait_for(lambda: cached(cache, 2) is None, what="the cache folder of removed version 2 removed")
    assert cached(cache, 1) is not None


def test_a_storage_outage_keeps_the_loaded_version_serving(
    s3_server: S3Server, s3_proxy: CuttableProxy, start_server: Any, tmp_path: Path
) -> None:
    prefix = "outage/m"
    s3_server.upload(prefix, 1, onnx_files(1))
    server = start_server(*serve_flags(prefix, tmp_path / "cache"))
    assert predict(server.url) == 1

    s3_proxy.cut()
    served = 0

    def serving_and(condition: Callable[[], bool]) -> Callable[[], bool]:
        def check() -> bool:
            nonlocal served
            assert predict(server.url) == 1  # every request during the outage succeeds
            served += 1
            return condition()

        return check

    wait_for(serving_and(lambda: bool(outage_lines(server.log()))), timeout=30, what="the outage logged")
    refused = s3_proxy.refused
    # Another poll fails (each makes about a dozen connection attempts with its retries): no new line.
    wait_for(serving_and(lambda: s3_proxy.refused >= refused + 12), timeout=30, what="another failed poll")
    assert available(server.url, "m") == {1}
    (line,) = outage_lines(server.log())
    assert "the loaded versions keep serving" in line

    s3_server.upload(prefix, 2, onnx_files(2))  # published while the server cannot see storage
    s3_proxy.restore()
    wait_serving_only(server.url, "m", 2)
    assert predict(server.url) == 2
    assert served > 10
    assert len(outage_lines(server.log())) == 1, "one line per outage, not one per poll"
    assert "can be read again" in server.log()


def outage_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "cannot read base path s3://" in line]


def test_an_incomplete_upload_is_not_loaded_before_it_settles(
    s3_server: S3Server, s3_proxy: CuttableProxy, start_server: Any, tmp_path: Path
) -> None:
    settle = 8.0  # room for two 1 s polls on a loaded machine; the version then loads after it
    prefix = "incomplete/m"
    s3_server.upload(prefix, 1, external_data_files(1))
    server = start_server(*serve_flags(prefix, tmp_path / "cache", settle=settle))
    assert predict(server.url) == 1

    files = external_data_files(2)
    s3_server.upload(prefix, 2, {"model.onnx": files["model.onnx"]})  # the graph, not yet its weights
    uploaded, listings = time.monotonic(), s3_proxy.listings  # every listing from now on sees the graph
    wait_for(lambda: s3_proxy.listings >= listings + 2, what="two polls that saw half of version 2")
    seen = statuses(server.url, "m")
    # Before the settle time nothing may load it; after it, it would load rightly: then this run proves
    # nothing, and says so rather than pass or fail by chance.
    assert time.monotonic() - uploaded < settle, (
        "the machine was too slow for two polls within the settle time"
    )
    assert 2 not in seen
    assert predict(server.url) == 1

    s3_server.upload(prefix, 2, {"weights.bin": files["weights.bin"]})
    wait_serving_only(server.url, "m", 2, timeout=30)
    assert predict(server.url) == 2
    assert statuses(server.url, "m")[2]["status"]["error_code"] == "OK", "no load was tried on half the files"


def test_a_corrupt_version_fails_to_load_and_the_old_one_keeps_serving(
    s3_server: S3Server, s3_proxy: CuttableProxy, start_server: Any, tmp_path: Path
) -> None:
    prefix, cache = "corrupt/m", tmp_path / "cache"
    s3_server.upload(prefix, 1, onnx_files(1))
    server = start_server(*serve_flags(prefix, cache))
    s3_server.upload(prefix, 2, {"model.onnx": b"this is not an ONNX model"})

    def failed() -> bool:
        return statuses(server.url, "m").get(2, {}).get("status", {}).get("error_code", "OK") != "OK"

    wait_for(failed, what="version 2 failed to load")
    assert available(server.url, "m") == {1}
    assert predict(server.url) == 1
    assert cached(cache, 1) is not None, "the version still serving keeps its files"


def test_a_restart_reuses_the_cache_unless_storage_changed(
    s3_server: S3Server, s3_proxy: CuttableProxy, start_server: Any, tmp_path: Path
) -> None:
    prefix, cache = "restart/m", tmp_path / "cache"
    s3_server.upload(prefix, 1, onnx_files(1))
    first = start_server(*serve_flags(prefix, cache))
    assert predict(first.url) == 1
    copy = cached(cache, 1)
    assert copy is not None
    inode = (copy / "model.onnx").stat().st_ino
    assert first.stop() == 0

    second = start_server(*serve_flags(prefix, cache))
    assert predict(second.url) == 1
    assert (copy / "model.onnx").stat().st_ino == inode, "an intact copy is reused, not downloaded again"
    assert "downloading model=m" not in second.log()
    assert second.stop() == 0

    # Same size, other weights: only the ETag in the cache's manifest tells the copy is stale.
    replacement = onnx_files(1.5)
    assert len(replacement["model.onnx"]) == (copy / "model.onnx").stat().st_size
    s3_server.upload(prefix, 1, replacement)
    third = start_server(*serve_flags(prefix, cache))
    assert predict(third.url) == 1.5


def test_a_restart_sweeps_the_copies_of_a_base_path_no_longer_configured(
    s3_server: S3Server, s3_proxy: CuttableProxy, start_server: Any, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    s3_server.upload("sweep-old/m", 1, onnx_files(1))
    s3_server.upload("sweep-new/m", 1, onnx_files(2))
    first = start_server(*serve_flags("sweep-old/m", cache))
    assert predict(first.url) == 1
    old_copy = cached(cache, 1)
    assert old_copy is not None
    assert first.stop() == 0

    # Model m now lives under another prefix: the old prefix's copy is no longer named by the config.
    second = start_server(*serve_flags("sweep-new/m", cache))
    assert predict(second.url) == 2
    assert not old_copy.exists(), "the copy of the old base path is swept at startup"
    new_copy = cached(cache, 1)
    assert new_copy is not None and new_copy != old_copy
    assert "removed cached copies no model of the config uses" in second.log()


def test_a_stop_during_a_slow_download_exits_at_once_and_leaves_nothing(
    s3_server: S3Server, s3_proxy: CuttableProxy, start_server: Any, tmp_path: Path
) -> None:
    prefix, cache = "slow/m", tmp_path / "cache"
    s3_server.upload(prefix, 1, onnx_files(1))
    server = start_server(*serve_flags(prefix, cache))
    assert predict(server.url) == 1

    s3_proxy.throttle(SLOW_BYTES_PER_SECOND)
    s3_server.upload(prefix, 2, onnx_files(2, pad_floats=BIG_FLOATS))
    wait_for(lambda: partial_downloads(cache), timeout=30, what="version 2 being downloaded")
    for _ in range(20):  # the loaded version keeps answering while the next one downloads
        started = time.monotonic()
        assert predict(server.url) == 1
        assert time.monotonic() - started < 2
    assert partial_downloads(cache), "still downloading: the requests above overlapped the download"
    assert 2 not in statuses(server.url, "m")

    started = time.monotonic()
    assert server.stop(timeout=20) == 0
    assert time.monotonic() - started < 5, "SIGTERM waited for the download"
    assert partial_downloads(cache) == [], "the abandoned download is cleaned up"
    assert cached(cache, 2) is None
    assert "downloaded model=m version=2" not in server.log()


def test_a_stop_during_the_downloads_at_startup_exits_at_once(
    s3_server: S3Server, s3_proxy: CuttableProxy, tmp_path: Path
) -> None:
    prefix, cache = "slow-start/m", tmp_path / "cache"
    s3_server.upload(prefix, 1, onnx_files(1, pad_floats=BIG_FLOATS))
    s3_proxy.throttle(SLOW_BYTES_PER_SECOND)
    command = [
        sys.executable, "-m", "modelserve", "serve", "--rest_api_host=127.0.0.1", "--grpc_host=127.0.0.1",
        "--ephemeral_ports", f"--ready_file={tmp_path / 'ready.json'}", *serve_flags(prefix, cache),
    ]  # fmt: skip
    with (tmp_path / "server.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: partial_downloads(cache), timeout=60, what="version 1 being downloaded at startup")
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=20)
        elapsed = time.monotonic() - started
    finally:
        process.kill()
        process.wait()
    output = (tmp_path / "server.log").read_text()
    assert code == 0, output
    assert elapsed < 5, f"SIGTERM at startup waited {elapsed:.1f}s for the download"
    assert partial_downloads(cache) == [] and cached(cache, 1) is None
    assert not (tmp_path / "ready.json").exists(), "a server stopped while starting never announces ready"
    assert "stop requested while starting" in output
