"""The V2 (Open Inference Protocol) REST API end to end, through Triton's official ``tritonclient.http``.

A real server process; every inference result is compared with ONNX Runtime called directly on the same
model file. Raw ``requests`` calls cover what the client never sends: malformed JSON and binary framing.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import requests

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402


def run_direct(base: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(base / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def images(n: int = 3) -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().data[:n].astype(np.float32)


@pytest.fixture(scope="module")
def server(start_module_server: Any, tiny_repo: Path, digits_repo: Path, tmp_path_factory: Any) -> Any:
    config = tmp_path_factory.mktemp("config") / "models.config"
    config.write_text(
        "model_config_list {\n"
        f"  config {{ name: 'tiny' base_path: '{tiny_repo}' }}\n"
        f"  config {{ name: 'digits' base_path: '{digits_repo}' }}\n"
        "}\n"
    )
    return start_module_server(f"--model_config_file={config}")


@pytest.fixture
def client(server: Any) -> Any:
    triton = httpclient.InferenceServerClient(f"127.0.0.1:{server.rest_port}")
    yield triton
    triton.close()


def infer_digits(
    client: Any, x: np.ndarray, binary_in: bool = True, binary_out: bool = True, **kwargs: Any
) -> Any:
    tensor = httpclient.InferInput("images", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary_in)
    outputs = [
        httpclient.InferRequestedOutput(name, binary_data=binary_out) for name in ("probabilities", "classes")
    ]
    return client.infer("digits", [tensor], outputs=outputs, **kwargs)


def test_health_and_server_metadata(client: Any) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("tiny")
    assert client.is_model_ready("digits", "1")
    assert not client.is_model_ready("digits", "2")
    assert not client.is_model_ready("nope")
    metadata = client.get_server_metadata()
    assert metadata["name"] == "modelserve"
    assert "binary_tensor_data" in metadata["extensions"]


def test_model_metadata(client: Any) -> None:
    assert client.get_model_metadata("digits") == {
        "name": "digits",
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "images", "datatype": "FP32", "shape": [-1, 64]}],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
            {"name": "classes", "datatype": "INT64", "shape": [-1]},
        ],
    }
    assert client.get_model_metadata("tiny", "1")["outputs"] == [
        {"name": "y", "datatype": "FP32", "shape": [-1, 10]}
    ]
    with pytest.raises(InferenceServerException) as raised:
        client.get_model_metadata("nope")
    assert raised.value.status() == "404"


@pytest.mark.parametrize(
    ("binary_in", "binary_out"), [(False, False), (True, False), (False, True), (True, True)]
)
def test_infer_json_and_binary(client: Any, digits_repo: Path, binary_in: bool, binary_out: bool) -> None:
    x = images()
    result = infer_digits(client, x, binary_in, binary_out, request_id="req-7")
    expected = run_direct(digits_repo, {"images": x})
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), expected["probabilities"], rtol=1e-6, atol=1e-7
    )
    np.testing.assert_array_equal(result.as_numpy("classes"), expected["classes"])
    response = result.get_response()
    assert response["model_name"] == "digits"
    assert response["model_version"] == "1"
    assert response["id"] == "req-7"


def test_requested_output_subset_and_version(client: Any, digits_repo: Path) -> None:
    x = images(2)
    tensor = httpclient.InferInput("images", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer(
        "digits", [tensor], model_version="1", outputs=[httpclient.InferRequestedOutput("classes")]
    )
    assert [o["name"] for o in result.get_response()["outputs"]] == ["classes"]
    assert result.as_numpy("probabilities") is None
    np.testing.assert_array_equal(
        result.as_numpy("classes"), run_direct(digits_repo, {"images": x})["classes"]
    )


def test_infer_tiny_with_nested_json(server: Any, tiny_repo: Path) -> None:
    x = np.random.default_rng(3).standard_normal((2, 64)).astype(np.float32)
    body = {"inputs": [{"name": "x", "shape": [2, 64], "datatype": "FP32", "data": x.tolist()}]}
    reply = requests.post(f"{server.url}/v2/models/tiny/infer", json=body)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/json"
    (output,) = reply.json()["outputs"]
    assert output["name"] == "y" and output["shape"] == [2, 10] and output["datatype"] == "FP32"
    expected = run_direct(tiny_repo, {"x": x})["y"]
    np.testing.assert_allclose(
        np.array(output["data"], np.float32).reshape(2, 10), expected, rtol=1e-6, atol=1e-6
    )


def good_request(client: Any) -> None:
    x = images(1)
    np.testing.assert_array_equal(infer_digits(client, x).as_numpy("classes").shape, (1,))


@pytest.mark.parametrize(
    ("model", "name", "shape", "datatype", "status", "message"),
    [
        ("nope", "images", [1, 64], "FP32", "404", "Servable not found for request: Latest(nope)"),
        ("digits", "pixels", [1, 64], "FP32", "400", "Sent extra: {pixels}. Missing but required: {images}"),
        (
            "digits",
            "images",
            [1, 63],
            "FP32",
            "400",
            "input 'images' has shape [1,63] but the signature expects [-1,64]",
        ),
        (
            "digits",
            "images",
            [1, 64],
            "FP64",
            "400",
            "input 'images' has datatype FP64 but model 'digits' expects FP32",
        ),
    ],
)
def test_errors_then_the_server_stays_healthy(
    client: Any, model: str, name: str, shape: list[int], datatype: str, status: str, message: str
) -> None:
    tensor = httpclient.InferInput(name, shape, datatype)
    tensor.set_data_from_numpy(np.zeros(shape, dtype=np.float64 if datatype == "FP64" else np.float32))
    with pytest.raises(InferenceServerException) as raised:
        client.infer(model, [tensor])
    assert raised.value.status() == status
    assert message in raised.value.message()
    good_request(client)


def test_unknown_output_is_400(client: Any) -> None:
    tensor = httpclient.InferInput("images", [1, 64], "FP32")
    tensor.set_data_from_numpy(images(1))
    with pytest.raises(InferenceServerException, match="output tensor alias not found in signature: logits"):
        client.infer("digits", [tensor], outputs=[httpclient.InferRequestedOutput("logits")])
    good_request(client)


def binary_body(x: np.ndarray, size: int | None = None) -> tuple[bytes, int]:
    raw = x.tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "images",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw) if size is None else size},
                }
            ],
            "outputs": [{"name": "classes", "parameters": {"binary_data": True}}],
        }
    ).encode()
    return header + raw, len(header)


def test_binary_response_framing(server: Any, digits_repo: Path) -> None:
    x = images(2)
    body, length = binary_body(x)
    reply = requests.post(
        f"{server.url}/v2/models/digits/infer",
        data=body,
        headers={"Inference-Header-Content-Length": str(length)},
    )
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/octet-stream"
    head_length = int(reply.headers["inference-header-content-length"])
    header = json.loads(reply.content[:head_length])
    assert header["outputs"] == [
        {"name": "classes", "datatype": "INT64", "shape": [2], "parameters": {"binary_data_size": 16}}
    ]
    classes = struct.unpack("<2q", reply.content[head_length:])
    assert list(classes) == run_direct(digits_repo, {"images": x})["classes"].tolist()


@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        (b"{not json", {}, "malformed JSON in the request body"),
        (b'{"inputs": [{"name": "images", "shape": [1, 64], "datatype": "FP32"}]}', {}, "neither 'data' nor"),
        (
            None,
            {"Inference-Header-Content-Length": "abc"},
            "Inference-Header-Content-Length must be a non-negative integer",
        ),
        (None, {"Inference-Header-Content-Length": "999999"}, "Inference-Header-Content-Length is 999999"),
        (None, {"Inference-Header-Content-Length": "10"}, "malformed JSON"),
        (
            "truncated",
            {},
            "needs 256 bytes of binary data at offset 0 but the binary part of the body has only 200",
        ),
        ("size_mismatch", {}, "input 'images' has 252 bytes of FP32 data but shape [1,64] needs 256"),
        (
            "trailing",
            {},
            "the binary part of the body has 260 bytes but the inputs' binary_data_size add up to 256",
        ),
    ],
)
def test_malformed_requests(server: Any, body: Any, headers: dict[str, str], message: str) -> None:
    x = images(1)
    if body is None or isinstance(body, str):
        payload, length = binary_body(x, size=252 if body == "size_mismatch" else None)
        if body == "truncated":
            payload = payload[:-56]
        elif body == "trailing":
            payload += b"\0" * 4
        headers = {"Inference-Header-Content-Length": str(length), **headers}
        body = payload
    reply = requests.post(f"{server.url}/v2/models/digits/infer", data=body, headers=headers)
    assert reply.status_code == 400, reply.text
    assert message in reply.json()["error"]
    good = requests.post(
        f"{server.url}/v2/models/digits/infer",
        json={
            "inputs": [{"name": "images", "shape": [1, 64], "datatype": "FP32", "data": x.ravel().tolist()}]
        },
    )
    assert good.status_code == 200, good.text


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v2/health/live", 200),
        ("GET", "/v2/models/tiny/versions/1/ready", 200),
        ("GET", "/v2/models/tiny/versions/7/ready", 400),
        ("GET", "/v2/models/tiny/versions/x/ready", 400),
        ("GET", "/v2/models/tiny/infer", 400),
        ("POST", "/v2/models/tiny", 400),
        ("GET", "/v2/repository/index", 404),
        ("GET", "/v2/models/tiny/versions/7", 404),
    ],
)
def test_routes(server: Any, method: str, path: str, status: int) -> None:
    reply = requests.request(method, f"{server.url}{path}")
    assert reply.status_code == status, reply.text
    if status != 200 and not path.endswith("/ready"):
        assert reply.json()["error"]


def test_server_not_ready_while_a_model_has_no_available_version(
    start_server: Any, tiny_repo: Path, tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt"
    (corrupt / "1").mkdir(parents=True)
    (corrupt / "1" / "model.onnx").write_bytes(b"not an onnx file")
    config = tmp_path / "models.config"
    config.write_text(
        "model_config_list {\n"
        f"  config {{ name: 'tiny' base_path: '{tiny_repo}' }}\n"
        f"  config {{ name: 'corrupt' base_path: '{corrupt}' }}\n"
        "}\n"
    )
    server = start_server(f"--model_config_file={config}")
    assert requests.get(f"{server.url}/v2/health/live").status_code == 200
    assert requests.get(f"{server.url}/v2/health/ready").status_code == 400
    assert requests.get(f"{server.url}/v2/models/corrupt/ready").status_code == 400
    assert requests.get(f"{server.url}/v2/models/tiny/ready").status_code == 200


@pytest.mark.tensorflow
def test_infer_savedmodel(start_server: Any, half_plus_two_repo: Path) -> None:
    server = start_server("--model_name=half_plus_two", f"--model_base_path={half_plus_two_repo}")
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.rest_port}")
    metadata = client.get_model_metadata("half_plus_two")
    assert metadata["platform"] == "tensorflow_savedmodel"
    assert metadata["versions"] == ["123"]
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1]}]
    tensor = httpclient.InferInput("x", [3], "FP32")
    tensor.set_data_from_numpy(np.array([1.0, 2.0, 5.0], np.float32))
    result = client.infer("half_plus_two", [tensor])
    np.testing.assert_array_equal(result.as_numpy("y"), [2.5, 3.0, 4.5])
    assert result.get_response()["model_version"] == "123"
    client.close()
