"""``GET /modelserve/status`` and the memory metrics on a real server with labels, a split and a budget."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import requests


def test_status_shows_versions_memory_routes_and_metrics(
    start_server: Any, tiny_repo: Path, tmp_path: Path
) -> None:
    base = tmp_path / "tiny"
    for version in (1, 2):
        shutil.copytree(tiny_repo / "1", base / str(version))
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true path: '/metrics' }")
    config = tmp_path / "models.config"
    config.write_text(
        "model_config_list { config {\n"
        f"  name: 'tiny' base_path: '{base}' model_version_policy {{ all {{}} }}\n"
        "  version_labels { key: 'stable' value: 1 }\n"
        "  traffic_split { versions { version: 1 weight: 3 } versions { version: 2 weight: 1 } }\n"
        "} }\n"
    )
    server = start_server(
        f"--model_config_file={config}", f"--monitoring_config_file={monitoring}", "--memory_budget=1GiB"
    )
    status = requests.get(f"{server.url}/modelserve/status").json()
    model_bytes = (tiny_repo / "1" / "model.onnx").stat().st_size
    assert status["memory"] == {"budget_bytes": 1024**3, "used_bytes": 2 * model_bytes}
    assert status["process"]["pid"] == server.process.pid
    assert status["process"]["rss_bytes"] > 10 * 1024 * 1024 and status["process"]["pss_bytes"] > 0
    (tiny,) = status["models"]
    assert tiny["labels"] == {"stable": 1}
    assert tiny["traffic_splits"] == {"": [{"version": 1, "weight": 3}, {"version": 2, "weight": 1}]}
    assert tiny["versions"] == [
        {"version": 2, "state": "AVAILABLE", "memory_bytes": model_bytes, "error": None},
        {"version": 1, "state": "AVAILABLE", "memory_bytes": model_bytes, "error": None},
    ]
    metrics = requests.get(f"{server.url}/metrics").text
    assert f'modelserve_model_memory_bytes{{model="tiny",version="1"}} {float(model_bytes)}' in metrics
    assert "modelserve_memory_budget_bytes 1.073741824e+09" in metrics

    # The default split serves both versions and says which one answered.
    body = {"instances": np.zeros((1, 64)).tolist()}
    served = {
        requests.post(f"{server.url}/v1/models/tiny:predict", json=body).headers["x-model-version"]
        for _ in range(60)
    }
    assert served == {"1", "2"}
    sticky = {
        requests.post(
            f"{server.url}/v1/models/tiny:predict", json=body, headers={"x-routing-key": "user-1"}
        ).headers["x-model-version"]
        for _ in range(10)
    }
    assert len(sticky) == 1
    labelled = requests.post(f"{server.url}/v1/models/tiny/labels/stable:predict", json=body)
    assert labelled.status_code == 200 and labelled.headers["x-model-version"] == "1"


def test_grpc_routing_key_and_served_version(start_server: Any, tiny_repo: Path, tmp_path: Path) -> None:
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from modelserve.codecs.tensor_proto import encode_tensor

    base = tmp_path / "tiny"
    for version in (1, 2):
        shutil.copytree(tiny_repo / "1", base / str(version))
    config = tmp_path / "models.config"
    config.write_text(
        "model_config_list { config {\n"
        f"  name: 'tiny' base_path: '{base}' model_version_policy {{ all {{}} }}\n"
        "  traffic_split { label: 'ab' versions { version: 1 weight: 1 } versions { version: 2 weight: 1 } }\n"
        "} }\n"
    )
    server = start_server(f"--model_config_file={config}")
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "tiny"
        request.model_spec.version_label = "ab"
        request.inputs["x"].ParseFromString(encode_tensor(np.zeros((1, 64), np.float32)).SerializeToString())
        spread = {stub.Predict(request).model_spec.version.value for _ in range(60)}
        assert spread == {1, 2}
        sticky = {
            stub.Predict(request, metadata=[("x-routing-key", "user-9")]).model_spec.version.value
            for _ in range(10)
        }
        assert len(sticky) == 1
