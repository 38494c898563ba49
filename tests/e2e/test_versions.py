"""Model versions end to end: hot swaps under load, failed and partial versions, memory budget, warm-up.

Real server processes polling a model repository in ``tmp_path`` (``--file_system_poll_wait_seconds=1``,
short ``--version_settle_seconds``); real clients (``requests``, grpcio with modelserve's copy of TF
Serving's protos). Version ``N`` of the test model computes ``x + N``, so every answer says in its body
which version served it, and that must agree with the ``x-model-version`` header / ``model_spec.version``.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import requests
from version_repo import (
    ZEROS,
    LoadGenerator,
    add_model_bytes,
    available,
    check_consistent,
    copy_in_place,
    describe,
    publish,
    remove_version,
    rest_predict,
    rest_predict_sender,
    statuses,
    wait_for,
    wait_serving_only,
)

POLL = "--file_system_poll_wait_seconds=1"


def grpc_predict_sender(target: str, model: str) -> Callable[[], tuple[bool, int | None, float | None, str]]:
    """A ``LoadGenerator`` send: TF Serving gRPC Predict (modelserve's protos) with zeros."""
    from modelserve.codecs.tensor_proto import decode_tensor, encode_tensor
    from modelserve.proto.tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    channel = grpc.insecure_channel(target)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    encode_tensor(np.zeros((1, 2), np.float32), request.inputs["x"])

    def send() -> tuple[bool, int | None, float | None, str]:
        try:
            reply = stub.Predict(request, timeout=15)
        except grpc.RpcError as exc:
            return False, None, None, f"{exc.code()} {exc.details()}"
        return True, reply.model_spec.version.value, float(decode_tensor(reply.outputs["y"])[0][0]), ""

    return send


def check_phase(load: LoadGenerator, start: float, end: float, version: int, minimum: int = 3) -> None:
    """Requests sent once ``version`` was the only one available, answered before the next change."""
    answers = load.since(start, end)
    assert len(answers) >= minimum, f"{load.name}: only {len(answers)} answers while v{version} served alone"
    wrong = [a for a in answers if a.version != version]
    assert not wrong, f"{load.name}: answers not from v{version} while it served alone:\n{describe(wrong)}"


def test_versions_swap_under_load_without_a_failed_request(start_server: Any, tmp_path: Path) -> None:
    """latest{}: publish v2 (rename), v3 (copied in place), v4, delete old ones, then delete v4 (rollback to
    v1): REST and gRPC clients hammering the model never see a failure nor a version outside the repo."""
    base = tmp_path / "m"
    # ~100k weights (a copy takes a while) and some work per call (requests are in flight during swaps).
    models = {v: add_model_bytes(v, pad_floats=100_000, work=800) for v in range(1, 5)}
    publish(base, 1, models[1])
    server = start_server("--model_name=m", f"--model_base_path={base}", POLL, "--version_settle_seconds=0.3")
    started = time.monotonic()
    loads = [
        *(LoadGenerator(rest_predict_sender(server.url, "m"), f"rest{i}", max_seconds=30) for i in range(3)),
        LoadGenerator(grpc_predict_sender(server.grpc_target, "m"), "grpc", max_seconds=30),
    ]
    for load in loads:
        load.start()
    phases: list[tuple[float, float, int]] = []

    def serve_alone(version: int) -> float:
        """Wait until ``version`` alone is available and every client was answered by it a few times."""
        since = wait_serving_only(server.url, "m", version)
        for load in loads:
            load.wait_for_answers_since(since, 5)
        return since

    try:
        since = serve_alone(1)
        publish(base, 2, models[2])  # atomic: written under a hidden name, renamed into place
        phases.append((since, time.monotonic(), 1))
        since = serve_alone(2)
        # Like cp -r: the directory fills up file by file, over time.
        extra = {"assets/vocab.txt": b"a\nb\n", "README": b"version 3\n"}
        copy_in_place(base, 3, models[3], chunks=5, pause=0.05, extra_files=extra)
        phases.append((since, time.monotonic(), 2))
        since = serve_alone(3)
        publish(base, 4, models[4])
        phases.append((since, time.monotonic(), 3))
        since = serve_alone(4)
        remove_version(base, 2)  # versions nobody serves any more: deleting them changes nothing
        remove_version(base, 3)
        time.sleep(1.2)  # one poll sees the deletions while the clients keep going
        assert available(server.url, "m") == {4}
        remove_version(base, 4)  # the serving version goes: v1 (the latest left) takes over first
        phases.append((since, time.monotonic(), 4))
        since = serve_alone(1)
        phases.append((since, time.monotonic(), 1))
    finally:
        answers = {load.name: load.stop() for load in loads}
    for load in loads:
        check_consistent(answers[load.name], allowed={1, 2, 3, 4})
        for start, end, version in phases:
            check_phase(load, start, end, version)
        assert {a.version for a in answers[load.name]} == {1, 2, 3, 4}
    assert statuses(server.url, "m").get(4, {"state": "END"})["state"] == "END"  # unloaded (or forgotten)
    assert time.monotonic() - started < 25, "the swaps took too long"


def test_a_corrupt_version_fails_alone_and_loads_once_fixed(start_server: Any, tmp_path: Path) -> None:
    base = tmp_path / "m"
    publish(base, 1, add_model_bytes(1))
    server = start_server("--model_name=m", f"--model_base_path={base}", POLL, "--version_settle_seconds=0.3")
    load = LoadGenerator(rest_predict_sender(server.url, "m"), "rest", max_seconds=25).start()
    try:
        since = wait_serving_only(server.url, "m", 1)
        publish(base, 2, b"this is not an ONNX model")

        def failed() -> dict[str, Any] | None:
            entry = statuses(server.url, "m").get(2)
            return entry if entry is not None and entry["state"] == "END" else None

        entry = wait_for(failed, 10, what="version 2 to fail")
        assert entry["status"]["error_code"] not in ("OK", ""), entry
        assert entry["status"]["error_message"], entry
        # It stays failed (no retry while its files are unchanged), and v1 keeps serving.
        load.wait_for_answers(20)
        time.sleep(1.2)
        now = statuses(server.url, "m")
        assert now[2] == entry, now
        assert now[1]["state"] == "AVAILABLE", now
        assert server.log().count("version_failed model=m version=2 ") == 1, server.log()
        assert rest_predict(server.url, "m") == (1, 1.0)
        (base / "2" / "model.onnx").write_bytes(add_model_bytes(2))  # fixed in place: retried
        fixed = time.monotonic()
        serving = wait_serving_only(server.url, "m", 2)
        load.wait_for_answers(10)
    finally:
        answers = load.stop()
    check_consistent(answers, allowed={1, 2})
    check_phase(load, since, fixed, 1)
    check_phase(load, serving, float("inf"), 2)
    reply = requests.get(f"{server.url}/v1/models/m/versions/2", timeout=10).json()
    assert reply["model_version_status"][0]["status"] == {"error_code": "OK", "error_message": ""}


def test_a_version_is_not_loaded_while_it_is_being_written(start_server: Any, tmp_path: Path) -> None:
    """--version_settle_seconds=0.5: a copy that pauses less than that between writes is never picked up
    half-way, even across several polls; once quiet it loads."""
    base = tmp_path / "m"
    publish(base, 1, add_model_bytes(1))
    server = start_server("--model_name=m", f"--model_base_path={base}", POLL, "--version_settle_seconds=0.5")
    model = add_model_bytes(2, pad_floats=10_000)
    seen_early: list[dict[int, dict[str, Any]]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            found = statuses(server.url, "m")
            if 2 in found and not done.is_set():
                seen_early.append(found)
            time.sleep(0.03)

    watcher = threading.Thread(target=watch, daemon=True)
    load = LoadGenerator(rest_predict_sender(server.url, "m"), "rest", max_seconds=20).start()
    try:
        wait_serving_only(server.url, "m", 1)
        watcher.start()
        started = time.monotonic()
        # 16 writes 0.15 s apart: 2.4 s of copying, so at least two polls look at the directory meanwhile.
        copy_in_place(base, 2, model, chunks=14, pause=0.15, extra_files={"assets/a": b"a", "assets/b": b"b"})
        done.set()
        copied = time.monotonic()
        watcher.join(timeout=10)
        assert copied - started > 2.0
        serving = wait_serving_only(server.url, "m", 2, timeout=10)
        load.wait_for_answers(10)
    finally:
        done.set()
        answers = load.stop()
    assert not seen_early, f"version 2 was picked up before its copy finished: {seen_early[:3]}"
    assert serving - copied < 5, "the copied version took too long to load"
    check_consistent(answers, allowed={1, 2})
    check_phase(load, 0, copied, 1)
    check_phase(load, serving, float("inf"), 2)
    # The source says why it waits (the exact wording is the source's own).
    assert any("version=2" in line and "being written" in line for line in server.log().splitlines())


# -- memory budget -------------------------------------------------------------------------------------------

BIG_PAD = 2_000_000  # 8 MB of weights: large beside what the process measures around a load


def test_memory_budget_refuses_a_second_copy_and_the_first_keeps_serving(
    start_server: Any, tmp_path: Path
) -> None:
    base = tmp_path / "m"
    publish(base, 1, add_model_bytes(1, pad_floats=BIG_PAD))
    size = (base / "1" / "model.onnx").stat().st_size
    budget = int(size * 1.5)  # one copy fits, two do not
    server = start_server(
        "--model_name=m",
        f"--model_base_path={base}",
        POLL,
        "--version_settle_seconds=0.3",
        f"--memory_budget={budget}",
    )
    first = statuses(server.url, "m")
    assert first[1]["state"] == "AVAILABLE", (
        f"v1 ({size} bytes of files) does not load under a budget of {budget} bytes: {first}"
    )
    load = LoadGenerator(rest_predict_sender(server.url, "m"), "rest", max_seconds=20).start()
    try:
        load.wait_for_answers(10)
        publish(base, 2, add_model_bytes(2, pad_floats=BIG_PAD))

        def refused() -> dict[str, Any] | None:
            entry = statuses(server.url, "m").get(2)
            return entry if entry is not None and entry["state"] == "END" else None

        entry = wait_for(refused, 10, what="version 2 to be refused")
        load.wait_for_answers(10)
    finally:
        answers = load.stop()
    assert entry["status"]["error_code"] == "RESOURCE_EXHAUSTED", entry
    assert "memory budget" in entry["status"]["error_message"], entry
    assert available(server.url, "m") == {1}
    assert rest_predict(server.url, "m") == (1, 1.0)
    check_consistent(answers, allowed={1})


def test_memory_budget_smaller_than_a_model_at_startup(start_server: Any, tmp_path: Path) -> None:
    """The model that does not fit fails with a clear message; the server starts and the others serve."""
    publish(tmp_path / "big", 1, add_model_bytes(1, pad_floats=BIG_PAD))
    publish(tmp_path / "small", 1, add_model_bytes(7))
    size = (tmp_path / "big" / "1" / "model.onnx").stat().st_size
    config = tmp_path / "models.config"
    config.write_text(
        "model_config_list {\n"
        f"  config {{ name: 'big' base_path: '{tmp_path / 'big'}' }}\n"
        f"  config {{ name: 'small' base_path: '{tmp_path / 'small'}' }}\n"
        "}\n"
    )
    server = start_server(f"--model_config_file={config}", f"--memory_budget={size // 2}")
    big = statuses(server.url, "big")[1]
    assert big["state"] == "END", big
    assert big["status"]["error_code"] == "RESOURCE_EXHAUSTED", big
    assert "memory budget" in big["status"]["error_message"], big
    reply = requests.post(f"{server.url}/v1/models/big:predict", json={"instances": ZEROS}, timeout=10)
    assert reply.status_code == 404, reply.text
    small = statuses(server.url, "small")
    assert small[1]["state"] == "AVAILABLE", f"small (122 bytes) should fit a budget of {size // 2}: {small}"
    assert rest_predict(server.url, "small") == (1, 7.0)


# -- warm-up -------------------------------------------------------------------------------------------------


def _half_plus_two_version(source: Path, base: Path, version: int, signature: str) -> None:
    """Copy the SavedModel to ``base/<version>`` with a warm-up file of one predict on ``signature``."""
    from modelserve.codecs.tensor_proto import encode_tensor
    from modelserve.codecs.tfrecord import write_records
    from modelserve.proto.tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "hp"
    request.model_spec.signature_name = signature
    encode_tensor(np.array([1.0, 2.0, 5.0], dtype=np.float32), request.inputs["x"])
    log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
    base.mkdir(parents=True, exist_ok=True)
    staging = base / f".staging-{version}"
    shutil.copytree(source, staging)
    (staging / "assets.extra").mkdir()
    write_records(staging / "assets.extra" / "tf_serving_warmup_requests", [log.SerializeToString()])
    staging.rename(base / str(version))


@pytest.mark.tensorflow
def test_warm_up_file_runs_before_a_version_serves_and_a_failing_one_keeps_the_old(
    start_server: Any, half_plus_two_repo: Path, tmp_path: Path
) -> None:
    base = tmp_path / "hp"
    _half_plus_two_version(half_plus_two_repo / "123", base, 1, "serving_default")
    server = start_server(
        "--model_name=hp", f"--model_base_path={base}", POLL, "--version_settle_seconds=0.2"
    )
    assert "warm-up model=hp version=1: replayed 1 warm-up records" in server.log()
    session = requests.Session()

    def predict() -> tuple[bool, int | None, float | None, str]:
        reply = session.post(f"{server.url}/v1/models/hp:predict", json={"instances": [4.0]}, timeout=15)
        if reply.status_code != 200:
            return False, None, None, f"{reply.status_code} {reply.text[:300]}"
        return True, int(reply.headers["x-model-version"]), float(reply.json()["predictions"][0]), ""

    load = LoadGenerator(predict, "rest", max_seconds=25).start()
    try:
        load.wait_for_answers(5, timeout=15)
        _half_plus_two_version(half_plus_two_repo / "123", base, 2, "no_such_signature")

        def failed() -> dict[str, Any] | None:
            entry = statuses(server.url, "hp").get(2)
            return entry if entry is not None and entry["state"] == "END" else None

        entry = wait_for(failed, 20, what="version 2 to fail its warm-up")
        load.wait_for_answers(5, timeout=15)
    finally:
        answers = load.stop()
    message = entry["status"]["error_message"]
    assert entry["status"]["error_code"] != "OK", entry
    assert "warm-up failed" in message and "no_such_signature" in message, entry
    assert available(server.url, "hp") == {1}
    failed_requests = [a for a in answers if not a.ok]
    assert not failed_requests, describe(failed_requests)
    assert {a.version for a in answers} == {1}
    assert {a.value for a in answers} == {4.0}  # 0.5 * 4 + 2
