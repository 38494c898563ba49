"""TF Serving's REST API end to end on ONNX models: a real server process and a real HTTP client.

Every inference result is compared with ONNX Runtime called directly on the same model file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import requests


def run_direct(base: Path, version: int, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(
        str(base / str(version) / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


@pytest.fixture(scope="module")
def tiny_server(start_module_server: Any, tiny_repo: Path) -> Any:
    return start_module_server("--model_name=tiny", f"--model_base_path={tiny_repo}")


@pytest.fixture(scope="module")
def two_models(start_module_server: Any, tiny_repo: Path, digits_repo: Path, tmp_path_factory: Any) -> Any:
    config = tmp_path_factory.mktemp("config") / "models.config"
    config.write_text(
        "model_config_list {\n"
        f"  config {{ name: 'tiny' base_path: '{tiny_repo}' model_platform: 'onnx' }}\n"
        f"  config {{ name: 'digits' base_path: '{digits_repo}' version_labels {{ key: 'stable' value: 1 }} }}\n"
        "}\n"
    )
    return start_module_server(f"--model_config_file={config}")


def rows(seed: int, n: int = 1, width: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, width)).astype(np.float32)


def test_status(tiny_server: Any) -> None:
    reply = requests.get(f"{tiny_server.url}/v1/models/tiny")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    assert requests.get(f"{tiny_server.url}/v1/models/tiny/versions/1").json() == reply.json()


def test_metadata_describes_the_signature(tiny_server: Any) -> None:
    reply = requests.get(f"{tiny_server.url}/v1/models/tiny/metadata")
    assert reply.status_code == 200
    body = reply.json()
    assert body["model_spec"] == {"name": "tiny", "signature_name": "", "version": "1"}
    signature = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    x = signature["inputs"]["x"]
    assert x["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in x["tensor_shape"]["dim"]] == ["-1", "64"]
    y = signature["outputs"]["y"]
    assert y["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in y["tensor_shape"]["dim"]] == ["-1", "10"]


@pytest.mark.parametrize("n", [1, 3])
def test_predict_row_format(tiny_server: Any, tiny_repo: Path, n: int) -> None:
    x = rows(n, n)
    reply = requests.post(f"{tiny_server.url}/v1/models/tiny:predict", json={"instances": x.tolist()})
    assert reply.status_code == 200, reply.text
    got = np.array(reply.json()["predictions"], dtype=np.float32)
    np.testing.assert_allclose(got, run_direct(tiny_repo, 1, {"x": x})["y"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("inputs_key", ["named", "unnamed"])
def test_predict_columnar_format(tiny_server: Any, tiny_repo: Path, inputs_key: str) -> None:
    x = rows(7, 2)
    inputs: Any = {"x": x.tolist()} if inputs_key == "named" else x.tolist()
    reply = requests.post(f"{tiny_server.url}/v1/models/tiny:predict", json={"inputs": inputs})
    assert reply.status_code == 200, reply.text
    got = np.array(reply.json()["outputs"], dtype=np.float32)
    np.testing.assert_allclose(got, run_direct(tiny_repo, 1, {"x": x})["y"], rtol=1e-6, atol=1e-6)


def test_several_outputs_row_and_columnar(two_models: Any, digits_repo: Path) -> None:
    from sklearn.datasets import load_digits

    images = load_digits().data[:3].astype(np.float32)
    expected = run_direct(digits_repo, 1, {"images": images})
    reply = requests.post(f"{two_models.url}/v1/models/digits:predict", json={"instances": images.tolist()})
    assert reply.status_code == 200, reply.text
    predictions = reply.json()["predictions"]
    assert [p["classes"] for p in predictions] == expected["classes"].tolist()
    np.testing.assert_allclose(
        [p["probabilities"] for p in predictions], expected["probabilities"], rtol=1e-5
    )

    reply = requests.post(
        f"{two_models.url}/v1/models/digits:predict", json={"inputs": {"images": images.tolist()}}
    )
    outputs = reply.json()["outputs"]
    assert set(outputs) == {"probabilities", "classes"}
    assert outputs["classes"] == expected["classes"].tolist()


@pytest.mark.parametrize("path", ["versions/1", "labels/stable"])
def test_version_and_label_paths(two_models: Any, path: str) -> None:
    reply = requests.post(
        f"{two_models.url}/v1/models/digits/{path}:predict", json={"instances": [[0.0] * 64]}
    )
    assert reply.status_code == 200, reply.text
    status = requests.get(f"{two_models.url}/v1/models/digits/{path}")
    assert status.json()["model_version_status"][0]["version"] == "1"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        (
            "POST",
            "/v1/models/nope:predict",
            {"instances": [[0.0] * 64]},
            404,
            "Servable not found for request: Latest(nope)",
        ),
        ("POST", "/v1/models/tiny/versions/9:predict", {"instances": [[0.0] * 64]}, 404, "Specific(tiny, 9)"),
        ("POST", "/v1/models/tiny/labels/canary:predict", {"instances": [[0.0] * 64]}, 400, "canary"),
        ("GET", "/v1/models/nope", None, 404, "Could not find any versions of model nope"),
        ("GET", "/v1/models/tiny/versions/9", None, 404, "version 9"),
        ("POST", "/v1/models/tiny:predict", b"{not json", 400, "JSON"),
        ("POST", "/v1/models/tiny:predict", {"instances": [{"z": [0.0] * 64}]}, 400, "z"),
        ("POST", "/v1/models/tiny:predict", {"inputs": {"z": [[0.0] * 64]}}, 400, "Missing named input: x"),
        ("POST", "/v1/models/tiny:predict", {"instances": [[0.0] * 63]}, 400, "shape"),
        ("POST", "/v1/models/tiny:predict", {"instances": [["a"] * 64]}, 400, ""),
        ("POST", "/v1/models/tiny:predict", {"instances": [[0.0] * 64, [0.0] * 3]}, 400, ""),
        ("POST", "/v1/models/tiny:predict", {"instances": []}, 400, ""),
        ("POST", "/v1/models/tiny:predict", {"instances": [[0.0] * 64], "inputs": [[0.0] * 64]}, 400, ""),
        (
            "POST",
            "/v1/models/tiny:predict",
            {"signature_name": "nope", "instances": [[0.0] * 64]},
            400,
            "nope",
        ),
        ("POST", "/v1/models/tiny:classify", {"examples": [{"x": 1.0}]}, 400, "classification"),
        ("GET", "/v1/models/tiny:predict", None, 400, "Malformed request: GET /v1/models/tiny:predict"),
        ("GET", "/elsewhere", None, 404, ""),
    ],
)
def test_bad_requests_get_precise_errors_and_the_server_stays_healthy(
    tiny_server: Any, method: str, path: str, body: Any, status: int, message: str
) -> None:
    url = f"{tiny_server.url}{path}"
    if isinstance(body, bytes):
        reply = requests.request(method, url, data=body)
    else:
        reply = requests.request(method, url, json=body)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert message in error
    assert error  # never an empty message
    good = requests.post(f"{tiny_server.url}/v1/models/tiny:predict", json={"instances": [[0.0] * 64]})
    assert good.status_code == 200


def test_body_over_the_limit_is_413(start_server: Any, tiny_repo: Path) -> None:
    server = start_server(
        "--model_name=tiny", f"--model_base_path={tiny_repo}", "--max_request_body_bytes=2000"
    )
    big = {"instances": rows(1, 20).tolist()}
    reply = requests.post(f"{server.url}/v1/models/tiny:predict", json=big)
    assert reply.status_code == 413
    assert "2000" in reply.json()["error"]
    chunked = requests.post(  # no Content-Length: the limit is enforced while reading
        f"{server.url}/v1/models/tiny:predict", data=iter([b'{"instances": [', b"[0.5]," * 500, b"[0.5]]}"])
    )
    assert chunked.status_code == 413
    assert requests.post(f"{server.url}/v1/models/tiny:predict", json={"instances": [[0.0] * 64]}).ok


def test_corrupt_model_and_empty_model_do_not_stop_the_others(
    start_server: Any, tiny_repo: Path, tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt"
    (corrupt / "1").mkdir(parents=True)
    (corrupt / "1" / "model.onnx").write_bytes(b"this is not an onnx file")
    empty = tmp_path / "empty"
    empty.mkdir()
    config = tmp_path / "models.config"
    config.write_text(
        "model_config_list {\n"
        f"  config {{ name: 'tiny' base_path: '{tiny_repo}' }}\n"
        f"  config {{ name: 'corrupt' base_path: '{corrupt}' }}\n"
        f"  config {{ name: 'empty' base_path: '{empty}' }}\n"
        "}\n"
    )
    server = start_server(f"--model_config_file={config}")
    status = requests.get(f"{server.url}/v1/models/corrupt").json()["model_version_status"][0]
    assert status["version"] == "1" and status["state"] == "END"
    assert status["status"]["error_code"] != "OK"
    assert "model.onnx" in status["status"]["error_message"]
    reply = requests.post(f"{server.url}/v1/models/corrupt:predict", json={"instances": [[0.0] * 64]})
    assert reply.status_code == 404
    empty_status = requests.get(f"{server.url}/v1/models/empty")
    assert empty_status.status_code == 404
    assert "Could not find any versions of model empty" in empty_status.json()["error"]
    assert requests.post(f"{server.url}/v1/models/tiny:predict", json={"instances": [[0.0] * 64]}).ok


def test_new_version_is_picked_up_and_old_one_unloaded(start_server: Any, tmp_path: Path) -> None:
    from modelserve.demo.models import write_tiny_mlp

    base = tmp_path / "tiny"
    write_tiny_mlp(base, version=1, seed=1)
    server = start_server(
        "--model_name=tiny", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1"
    )
    write_tiny_mlp(base, version=2, seed=2)
    import time

    deadline = time.monotonic() + 30
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        states = {
            s["version"]: s["state"]
            for s in requests.get(f"{server.url}/v1/models/tiny").json()["model_version_status"]
        }
        if states == {"2": "AVAILABLE", "1": "END"}:
            break
        time.sleep(0.1)
    assert states == {"2": "AVAILABLE", "1": "END"}
    x = rows(3)
    got = requests.post(f"{server.url}/v1/models/tiny:predict", json={"instances": x.tolist()}).json()
    np.testing.assert_allclose(got["predictions"], run_direct(base, 2, {"x": x})["y"], rtol=1e-6, atol=1e-6)
