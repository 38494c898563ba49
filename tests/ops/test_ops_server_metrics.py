"""Prometheus metrics of a real model server change by exactly the requests it served (REST and gRPC,
successes and errors), with TF Serving's names beside ours."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from modelserve.codecs.tensor_proto import encode_tensor
from modelserve.config.options import ServerOptions
from modelserve.metrics import UNKNOWN_MODEL
from modelserve.proto.inference import grpc_service_pb2, grpc_service_pb2_grpc
from modelserve.proto.tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from modelserve.server import ModelServer

METRICS = "/monitoring/prometheus/metrics"
ROW = np.zeros((1, 64), dtype=np.float32)


def scrape(server: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition: (sample name, sorted labels) -> value."""
    reply = requests.get(server.url + METRICS, timeout=10)
    assert reply.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def delta(before: dict[Any, float], after: dict[Any, float], name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


@pytest.fixture(scope="module")
def server(start_module_server: Any, tiny_repo: Path, tmp_path_factory: Any) -> Any:
    monitoring = tmp_path_factory.mktemp("monitoring") / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }")
    return start_module_server(
        "--model_name=tiny", f"--model_base_path={tiny_repo}", f"--monitoring_config_file={monitoring}"
    )


def test_rest_requests_are_counted_by_model_version_api_and_status(server: Any) -> None:
    before = scrape(server)
    predict = f"{server.url}/v1/models/tiny:predict"
    for _ in range(3):
        assert requests.post(predict, json={"instances": ROW.tolist()}, timeout=10).status_code == 200
    bad = requests.post(predict, json={"instances": [[1.0, 2.0]]}, timeout=10)
    assert bad.status_code == 400
    missing = requests.post(f"{server.url}/v1/models/nope:predict", json={"instances": [[1.0]]}, timeout=10)
    assert missing.status_code == 404
    v2 = {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": ROW.ravel().tolist()}]}
    assert requests.post(f"{server.url}/v2/models/tiny/infer", json=v2, timeout=10).status_code == 200
    after = scrape(server)

    ours = "modelserve_requests_total"
    rest = {"protocol": "rest", "model": "tiny"}
    assert delta(before, after, ours, **rest, version="1", api="Predict", code="200") == 3
    assert delta(before, after, ours, **rest, version="", api="Predict", code="400") == 1
    assert (
        delta(
            before, after, ours, model=UNKNOWN_MODEL, version="", api="Predict", protocol="rest", code="404"
        )
        == 1
    )
    assert delta(before, after, ours, **rest, version="1", api="ModelInfer", code="200") == 1
    seconds = "modelserve_request_duration_seconds_count"
    assert delta(before, after, seconds, model="tiny", version="1", api="Predict", protocol="rest") == 3
    inf = ("modelserve_request_duration_seconds_bucket", "1", "Predict", "rest")
    assert (
        delta(before, after, inf[0], model="tiny", version=inf[1], api=inf[2], protocol=inf[3], le="+Inf")
        == 3
    )
    # TF Serving's names: status as the canonical code, latency in microseconds per API and entrypoint.
    tf = ":tensorflow:serving:request_count"
    assert delta(before, after, tf, model_name="tiny", status="OK") == 4
    assert delta(before, after, tf, model_name="tiny", status="INVALID_ARGUMENT") == 1
    assert delta(before, after, tf, model_name=UNKNOWN_MODEL, status="NOT_FOUND") == 1
    latency = ":tensorflow:serving:request_latency_count"
    assert delta(before, after, latency, model_name="tiny", API="Predict", entrypoint="REST") == 4
    assert delta(before, after, latency, model_name="tiny", API="ModelInfer", entrypoint="REST") == 1
    assert after[("modelserve_requests_in_flight", (("protocol", "rest"),))] == 0


def test_grpc_requests_are_counted_by_model_version_api_and_status(server: Any) -> None:
    before = scrape(server)
    with grpc.insecure_channel(server.grpc_target) as channel:
        predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "tiny"
        encode_tensor(ROW, request.inputs["x"])
        for _ in range(2):
            predict.Predict(request, timeout=10)
        request.model_spec.name = "nope"
        with pytest.raises(grpc.RpcError) as failed:
            predict.Predict(request, timeout=10)
        assert failed.value.code() is grpc.StatusCode.NOT_FOUND
        v2 = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
        infer = grpc_service_pb2.ModelInferRequest(model_name="tiny")
        tensor = infer.inputs.add(name="x", datatype="FP32", shape=[1, 64])
        tensor.contents.fp32_contents.extend(ROW.ravel().tolist())
        v2.ModelInfer(infer, timeout=10)
    after = scrape(server)

    ours = "modelserve_requests_total"
    assert (
        delta(before, after, ours, model="tiny", version="1", api="Predict", protocol="grpc", code="OK") == 2
    )
    assert (
        delta(
            before,
            after,
            ours,
            model=UNKNOWN_MODEL,
            version="",
            api="Predict",
            protocol="grpc",
            code="NOT_FOUND",
        )
        == 1
    )
    assert (
        delta(before, after, ours, model="tiny", version="1", api="ModelInfer", protocol="grpc", code="OK")
        == 1
    )
    latency = ":tensorflow:serving:request_latency_count"
    assert delta(before, after, latency, model_name="tiny", API="Predict", entrypoint="GRPC") == 2
    assert (
        delta(
            before, after, ":tensorflow:serving:request_count", model_name=UNKNOWN_MODEL, status="NOT_FOUND"
        )
        == 1
    )
    assert after[("modelserve_requests_in_flight", (("protocol", "grpc"),))] == 0


def test_model_load_latency_and_version_metrics(server: Any, tiny_repo: Path) -> None:
    samples = scrape(server)
    path = str(tiny_repo / "1")
    assert samples[(":tensorflow:cc:saved_model:load_latency", (("model_path", path),))] > 0
    assert (
        samples[
            (":tensorflow:cc:saved_model:load_attempt_count", (("model_path", path), ("status", "success")))
        ]
        == 1
    )
    assert samples[("modelserve_model_load_seconds", (("model", "tiny"), ("version", "1")))] > 0
    state = ("modelserve_model_version_state", (("model", "tiny"), ("state", "AVAILABLE"), ("version", "1")))
    assert samples[state] == 1
    assert samples[("modelserve_model_memory_bytes", (("model", "tiny"), ("version", "1")))] > 0


def request_label_sets(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> set[Any]:
    return {labels for name, labels in samples if name == "modelserve_requests_total"}


def test_made_up_model_names_add_at_most_one_label_set(server: Any) -> None:
    """Clients choose model names: 100 random ones (and versions) must not add 100 series."""
    before = request_label_sets(scrape(server))
    rng = np.random.default_rng(7)
    with requests.Session() as session:
        for name in rng.integers(0, 2**62, size=100):
            version = int(name) % 1000
            reply = session.post(
                f"{server.url}/v1/models/m{name}/versions/{version}:predict", json={"instances": [[1.0]]}
            )
            assert reply.status_code == 404
    after = request_label_sets(scrape(server))
    added = after - before
    assert len(added) <= 1, sorted(added)[:5]
    assert all(dict(labels)["model"] == UNKNOWN_MODEL for labels in added)


@pytest.mark.parametrize("monitoring", [False, True])
def test_batches_are_observed_only_when_metrics_are_exposed(
    tiny_repo: Path, tmp_path: Path, monitoring: bool
) -> None:
    """With Prometheus off, batch threads record nothing (no histogram observes, no shared lock)."""
    config = tmp_path / "monitoring.config"
    config.write_text("prometheus_config { enable: true }")
    options = ServerOptions(
        model_name="tiny", model_base_path=str(tiny_repo), enable_batching=True, port=0,
        rest_api_host="127.0.0.1", ephemeral_ports=True,
        monitoring_config_file=str(config) if monitoring else "",
    )  # fmt: skip

    async def scenario() -> str:
        server = ModelServer(options)
        ports = await server.startup()
        try:
            url = f"http://127.0.0.1:{ports.rest_port}/v1/models/tiny:predict"
            reply = await asyncio.to_thread(requests.post, url, json={"instances": ROW.tolist()}, timeout=10)
            assert reply.status_code == 200
            return server.metrics.render().decode()
        finally:
            await server.shutdown()

    text = asyncio.run(scenario())
    observed = 'modelserve_batch_size_count{model="tiny",version="1"} 1.0' in text
    assert observed is monitoring
    assert ('batching_session:input_batch_size_count{model_name="tiny"}' in text) is monitoring
