"""Version labels and A/B traffic splits end to end: gRPC ``HandleReloadConfigRequest``, the polled model
config file, and every API that can name a label (TF Serving REST and gRPC, V2 REST and gRPC).

Real server processes and real clients: ``requests``, the official ``tensorflow-serving-api`` stubs,
``tritonclient``. Version ``N`` of the test model computes ``x + N``, so the body of each answer says which
version served it, and it must agree with the ``x-model-version`` header / ``model_spec.version``.
Traffic splits are a modelserve extension of ``ModelConfig`` (field 1002) that the official protos lack:
reloads that carry one go through modelserve's own copy of the protos.
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import requests
from google.protobuf import text_format
from version_repo import (
    ZEROS,
    LoadGenerator,
    add_model_bytes,
    check_consistent,
    describe,
    publish,
    rest_predict,
    rest_predict_sender,
    statuses,
    wait_for,
)

NOT_AVAILABLE = (
    "Request to assign label to version {v} of model {m}, which is not currently available for inference"
)


def model_entry(
    name: str,
    base: Path,
    labels: dict[str, int] | None = None,
    splits: Sequence[tuple[str, Sequence[tuple[int, int]]]] = (),
    policy: str = "all {}",
) -> str:
    """One ``config { ... }`` of a ModelConfigList in text format."""
    text = f"config {{ name: '{name}' base_path: '{base}' model_version_policy {{ {policy} }}"
    for label, version in (labels or {}).items():
        text += f" version_labels {{ key: '{label}' value: {version} }}"
    for label, weights in splits:
        versions = " ".join(f"versions {{ version: {v} weight: {w} }}" for v, w in weights)
        text += f" traffic_split {{ label: '{label}' {versions} }}"
    return text + " }"


def config_text(*entries: str) -> str:
    return "model_config_list {\n" + "".join(f"  {entry}\n" for entry in entries) + "}\n"


def write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def repository(root: Path, name: str, versions: Sequence[int]) -> Path:
    base = root / name
    for version in versions:
        publish(base, version, add_model_bytes(version))
    return base


def sticky_versions(url: str, path: str, keys: int = 20, repeats: int = 5) -> dict[str, set[int]]:
    """For each routing key, the versions that answered ``repeats`` requests carrying it."""
    seen: dict[str, set[int]] = collections.defaultdict(set)
    for index in range(keys):
        key = f"user-{index}"
        for _ in range(repeats):
            version, value = rest_predict(url, "m", path, headers={"x-routing-key": key})
            assert value == version
            seen[key].add(version)
    return seen


# -- gRPC HandleReloadConfigRequest ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def official() -> Any:
    """The official ``tensorflow_serving`` client modules (they need TensorFlow)."""
    tf = pytest.importorskip("tensorflow")
    pytest.importorskip("tensorflow_serving")
    from tensorflow_serving.apis import (
        model_management_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    return {
        "tf": tf,
        "model_management_pb2": model_management_pb2,
        "model_service_pb2_grpc": model_service_pb2_grpc,
        "predict_pb2": predict_pb2,
        "prediction_service_pb2_grpc": prediction_service_pb2_grpc,
    }


def reload(channel: grpc.Channel, text: str, official: Any | None = None) -> None:
    """HandleReloadConfigRequest with ``text``; the official protos unless it holds a traffic split."""
    from modelserve.proto.tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

    management: Any = model_management_pb2
    service: Any = model_service_pb2_grpc
    if official is not None:
        management, service = official["model_management_pb2"], official["model_service_pb2_grpc"]
    request = management.ReloadConfigRequest()
    text_format.Parse(text, request.config)
    reply = service.ModelServiceStub(channel).HandleReloadConfigRequest(request, timeout=60)
    assert reply.status.error_code == 0, reply


def grpc_predict(channel: grpc.Channel, official: Any, label: str = "", routing_key: str = "") -> int:
    """Official client: Predict, with ``model_spec.version_label`` and ``x-routing-key`` metadata if given;
    returns the served version."""
    request = official["predict_pb2"].PredictRequest()
    request.model_spec.name = "m"
    if label:
        request.model_spec.version_label = label
    request.inputs["x"].CopyFrom(official["tf"].make_tensor_proto(np.zeros((1, 2), np.float32)))
    metadata = [("x-routing-key", routing_key)] if routing_key else None
    stub = official["prediction_service_pb2_grpc"].PredictionServiceStub(channel)
    reply = stub.Predict(request, timeout=15, metadata=metadata)
    value = float(official["tf"].make_ndarray(reply.outputs["y"])[0][0])
    assert value == reply.model_spec.version.value
    return int(reply.model_spec.version.value)


@pytest.fixture
def channel_to(request: pytest.FixtureRequest) -> Iterator[Any]:
    opened: list[grpc.Channel] = []

    def open_channel(target: str) -> grpc.Channel:
        opened.append(grpc.insecure_channel(target))
        return opened[-1]

    yield open_channel
    for channel in opened:
        channel.close()


@pytest.mark.tensorflow
def test_labels_and_splits_change_under_load_through_reload_config(
    start_server: Any, tmp_path: Path, official: Any, channel_to: Any
) -> None:
    base = repository(tmp_path, "m", [1, 2])
    config = tmp_path / "models.config"
    # At startup a label on a missing version is only logged; it answers NOT_FOUND, the rest serves.
    config.write_text(config_text(model_entry("m", base, {"stable": 1, "broken": 9})))
    server = start_server(f"--model_config_file={config}")
    assert NOT_AVAILABLE.format(v=9, m="m") in server.log()
    broken = requests.post(
        f"{server.url}/v1/models/m/labels/broken:predict", json={"instances": ZEROS}, timeout=10
    )
    assert broken.status_code == 404, broken.text
    channel = channel_to(server.grpc_target)
    labelled = LoadGenerator(rest_predict_sender(server.url, "m", "/labels/stable"), "stable", 25).start()
    default = LoadGenerator(rest_predict_sender(server.url, "m"), "default", 25).start()
    try:
        labelled.wait_for_answers(10)
        default.wait_for_answers(10)
        assert grpc_predict(channel, official, "stable") == 1

        # stable: 1 -> 2 (the official protos: version_labels are TF Serving's own).
        relabel = time.monotonic()
        reload(channel, config_text(model_entry("m", base, {"stable": 2})), official)
        relabelled = time.monotonic()
        assert grpc_predict(channel, official, "stable") == 2
        labelled.wait_for_answers(10)

        # A 50/50 split on the default route (requests naming no version or label).
        split_config = config_text(model_entry("m", base, {"stable": 2}, [("", [(1, 50), (2, 50)])]))
        split_asked = time.monotonic()
        reload(channel, split_config)
        split = time.monotonic()
        wait_for(lambda: len(default.since(split)) >= 100, 15, what="100 answers on the default split")
        sticky = sticky_versions(server.url, "")
        # gRPC metadata x-routing-key: sticky too, and the same key picks the same version as over REST.
        sticky_grpc = {
            key: {grpc_predict(channel, official, routing_key=key) for _ in range(3)} for key in sticky
        }

        # A label on a version that is not loaded is refused with TF Serving's message; nothing changes.
        refused_config = config_text(model_entry("m", base, {"stable": 3}, [("", [(1, 50), (2, 50)])]))
        with pytest.raises(grpc.RpcError) as error:
            reload(channel, refused_config)
        refused = time.monotonic()
        labelled.wait_for_answers(20)
        default.wait_for_answers(20)
        assert grpc_predict(channel, official, "stable") == 2
    finally:
        answers = {"stable": labelled.stop(), "default": default.stop()}
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION, error.value
    assert NOT_AVAILABLE.format(v=3, m="m") in (error.value.details() or ""), error.value.details()
    for answered in answers.values():
        check_consistent(answered, allowed={1, 2})
    # The label: v1 until the reload was asked for, v2 once it returned.
    before = [a for a in labelled.answers if a.received <= relabel]
    assert before and {a.version for a in before} == {1}, describe(before)
    after = labelled.since(relabelled)
    assert after and {a.version for a in after} == {2}, describe([a for a in after if a.version != 2])
    # The default route: the latest version until the split, then both (and still both after the refusal).
    unsplit = [a for a in default.answers if a.received <= split_asked]
    assert {a.version for a in unsplit} == {2}, describe([a for a in unsplit if a.version != 2])
    shares = collections.Counter(a.version for a in default.since(split, refused))
    assert set(shares) == {1, 2} and min(shares.values()) >= 10, shares
    assert {a.version for a in default.since(refused)} == {1, 2}
    # x-routing-key: one version per key, and the keys spread over both versions.
    assert all(len(versions) == 1 for versions in sticky.values()), sticky
    assert set().union(*sticky.values()) == {1, 2}, sticky
    assert sticky_grpc == sticky


def test_labels_on_unavailable_versions_with_allow_flag(
    start_server: Any, tmp_path: Path, channel_to: Any
) -> None:
    """--allow_version_labels_for_unavailable_models: a NEW label may point at a version not loaded yet
    (it answers once the version loads); moving an existing label there is still refused."""
    base = repository(tmp_path, "m", [1, 2])
    config = tmp_path / "models.config"
    config.write_text(config_text(model_entry("m", base, {"stable": 1})))
    server = start_server(
        f"--model_config_file={config}",
        "--allow_version_labels_for_unavailable_models=true",
        "--file_system_poll_wait_seconds=1",
        "--version_settle_seconds=0.2",
    )
    assert rest_predict(server.url, "m", "/labels/stable") == (1, 1.0)
    channel = channel_to(server.grpc_target)
    reload(channel, config_text(model_entry("m", base, {"stable": 1, "canary": 3})))
    reply = requests.post(
        f"{server.url}/v1/models/m/labels/canary:predict", json={"instances": ZEROS}, timeout=10
    )
    assert reply.status_code == 404, reply.text
    with pytest.raises(grpc.RpcError) as error:
        reload(channel, config_text(model_entry("m", base, {"stable": 3, "canary": 3})))
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert NOT_AVAILABLE.format(v=3, m="m") in (error.value.details() or "")
    assert rest_predict(server.url, "m", "/labels/stable") == (1, 1.0)
    publish(base, 3, add_model_bytes(3))
    wait_for(lambda: statuses(server.url, "m").get(3, {}).get("state") == "AVAILABLE", 10, what="v3")
    assert rest_predict(server.url, "m", "/labels/canary") == (3, 3.0)
    assert rest_predict(server.url, "m", "/labels/stable") == (1, 1.0)


# -- the polled config file -------------------------------------------------------------------------------


def test_config_file_edits_are_applied_while_serving(start_server: Any, tmp_path: Path) -> None:
    a = repository(tmp_path, "a", [1])
    b = repository(tmp_path, "b", [1, 2])
    config = tmp_path / "models.config"
    config.write_text(config_text(model_entry("a", a)))
    server = start_server(f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1")
    assert rest_predict(server.url, "a") == (1, 1.0)
    assert requests.get(f"{server.url}/v1/models/b", timeout=10).status_code == 404

    def answer(model: str, path: str = "") -> tuple[int, float] | None:
        reply = requests.post(
            f"{server.url}/v1/models/{model}{path}:predict", json={"instances": ZEROS}, timeout=10
        )
        if reply.status_code != 200:
            return None
        return int(reply.headers["x-model-version"]), float(reply.json()["predictions"][0][0])

    # Add a model, with a label.
    write_atomically(config, config_text(model_entry("a", a), model_entry("b", b, {"stable": 1})))
    assert wait_for(lambda: answer("b", "/labels/stable"), 10, what="model b") == (1, 1.0)
    assert {v for v, e in statuses(server.url, "b").items() if e["state"] == "AVAILABLE"} == {1, 2}
    # Move the label.
    write_atomically(config, config_text(model_entry("a", a), model_entry("b", b, {"stable": 2})))
    wait_for(lambda: answer("b", "/labels/stable") == (2, 2.0), 10, what="stable -> 2")
    # Add a split behind a label of its own.
    ab = ("ab", [(1, 50), (2, 50)])
    edited = config_text(model_entry("a", a), model_entry("b", b, {"stable": 2}, [ab]))
    write_atomically(config, edited)
    wait_for(lambda: answer("b", "/labels/ab"), 10, what="split label ab")
    served = collections.Counter(answer("b", "/labels/ab") for _ in range(100))
    assert set(served) == {(1, 1.0), (2, 2.0)}, served
    # A syntax error is logged; everything keeps serving as before.
    write_atomically(config, edited.replace("model_config_list {", "model_config_list {{ oops", 1))
    wait_for(
        lambda: "is invalid, keeping the current config" in server.log(), 10, what="the error in the log"
    )
    assert answer("a") == (1, 1.0)
    assert answer("b", "/labels/stable") == (2, 2.0)
    assert {answer("b", "/labels/ab") for _ in range(50)} == {(1, 1.0), (2, 2.0)}
    # Removing a model unloads it.
    write_atomically(config, config_text(model_entry("b", b, {"stable": 2}, [ab])))
    wait_for(
        lambda: requests.get(f"{server.url}/v1/models/a", timeout=10).status_code == 404, 10, what="a removed"
    )
    reply = requests.post(f"{server.url}/v1/models/a:predict", json={"instances": ZEROS}, timeout=10)
    assert reply.status_code == 404, reply.text
    assert answer("b", "/labels/stable") == (2, 2.0)


# -- V2 ---------------------------------------------------------------------------------------------------


def test_v2_version_labels(start_server: Any, tmp_path: Path) -> None:
    httpclient = pytest.importorskip("tritonclient.http")
    grpcclient = pytest.importorskip("tritonclient.grpc")
    base = repository(tmp_path, "m", [1, 2])
    config = tmp_path / "models.config"
    config.write_text(config_text(model_entry("m", base, {"stable": 1, "canary": 2})))
    server = start_server(f"--model_config_file={config}")
    body: dict[str, Any] = {
        "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [0.0, 0.0]}]
    }
    for label, version in (("stable", 1), ("canary", 2)):
        reply = requests.post(f"{server.url}/v2/models/m/versions/{label}/infer", json=body, timeout=10)
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-model-version"] == str(version)
        assert reply.json()["model_version"] == str(version)
        assert reply.json()["outputs"][0]["data"] == [float(version)] * 2
        ready = requests.get(f"{server.url}/v2/models/m/versions/{label}/ready", timeout=10)
        assert ready.status_code == 200, ready.text
    assert requests.get(f"{server.url}/v2/models/m/versions/nope/ready", timeout=10).status_code != 200
    unknown = requests.post(f"{server.url}/v2/models/m/versions/nope/infer", json=body, timeout=10)
    assert unknown.status_code == 400, unknown.text  # TF Serving: an unknown label is INVALID_ARGUMENT

    x = np.zeros((1, 2), np.float32)
    triton = httpclient.InferenceServerClient(f"127.0.0.1:{server.rest_port}")
    try:
        assert triton.is_model_ready("m", "stable")
        tensor = httpclient.InferInput("x", [1, 2], "FP32")
        tensor.set_data_from_numpy(x)
        for label, version in (("stable", 1), ("canary", 2)):
            result = triton.infer("m", [tensor], model_version=label)
            assert result.get_response()["model_version"] == str(version)
            np.testing.assert_array_equal(result.as_numpy("y"), x + version)
    finally:
        triton.close()

    triton_grpc = grpcclient.InferenceServerClient(server.grpc_target)
    try:
        tensor = grpcclient.InferInput("x", [1, 2], "FP32")
        tensor.set_data_from_numpy(x)
        for label, version in (("stable", 1), ("canary", 2)):
            result = triton_grpc.infer("m", [tensor], model_version=label)
            assert result.get_response().model_version == str(version)
            np.testing.assert_array_equal(result.as_numpy("y"), x + version)
    finally:
        triton_grpc.close()
