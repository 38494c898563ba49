"""String and binary tensors over REST: plain JSON strings, ``{"b64": ...}`` inputs, ``*_bytes`` outputs."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import requests


@pytest.fixture(scope="module")
def strings_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ONNX model echoing a string tensor twice: as ``text`` and as ``echo_bytes``."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["text"], ["echo"]),
            helper.make_node("Identity", ["text"], ["echo_bytes"]),
        ],
        "strings",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["batch"])],
        [
            helper.make_tensor_value_info("echo", TensorProto.STRING, ["batch"]),
            helper.make_tensor_value_info("echo_bytes", TensorProto.STRING, ["batch"]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    base = tmp_path_factory.mktemp("models") / "strings"
    (base / "1").mkdir(parents=True)
    onnx.save(model, base / "1" / "model.onnx")
    return base


@pytest.fixture(scope="module")
def server(start_module_server: Any, strings_repo: Path) -> Any:
    return start_module_server("--model_name=strings", f"--model_base_path={strings_repo}")


def test_metadata_reports_string_tensors(server: Any) -> None:
    signature = requests.get(f"{server.url}/v1/models/strings/metadata").json()["metadata"]["signature_def"]
    assert signature["signature_def"]["serving_default"]["inputs"]["text"]["dtype"] == "DT_STRING"


def test_b64_in_and_bytes_out(server: Any) -> None:
    reply = requests.post(
        f"{server.url}/v1/models/strings:predict",
        json={"instances": ["plain", {"b64": base64.b64encode(b"hello").decode()}]},
    )
    assert reply.status_code == 200, reply.text
    predictions = reply.json()["predictions"]
    assert predictions[0] == {"echo": "plain", "echo_bytes": {"b64": base64.b64encode(b"plain").decode()}}
    assert predictions[1]["echo"] == "hello"
    reply = requests.post(
        f"{server.url}/v1/models/strings:predict",
        json={"inputs": {"text": [{"b64": base64.b64encode("héllo".encode()).decode()}]}},
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["outputs"]["echo"] == ["héllo"]


def test_number_for_a_string_input_is_rejected(server: Any) -> None:
    reply = requests.post(f"{server.url}/v1/models/strings:predict", json={"instances": [5]})
    assert reply.status_code == 400
    assert "is not of expected type: string" in reply.json()["error"]
