"""The V2 (Open Inference Protocol) gRPC API, through Triton's official ``tritonclient.grpc``.

In process first (our gRPC transport carrying only our servicer, over a ModelManager), then end to end
through ``modelserve serve``'s gRPC port. Inference results are compared with ONNX Runtime called directly.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest

grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

from modelserve.config.model_config import ModelConfig  # noqa: E402
from modelserve.core.inference import InferenceService, InferenceSettings  # noqa: E402
from modelserve.core.manager import ModelManager  # noqa: E402
from modelserve.core.source import AspiredVersion  # noqa: E402
from modelserve.frontends.grpc.transport import GrpcHttp2Server  # noqa: E402
from modelserve.frontends.grpc.v2_servicer import add_v2_services  # noqa: E402
from modelserve.runtimes import get_runtime  # noqa: E402


def run_direct(base: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(base / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def images(n: int = 3) -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().data[:n].astype(np.float32)


class InProcessServer:
    """Our gRPC server transport with only the V2 servicer, on its own event loop thread, 127.0.0.1, OS port."""

    def __init__(self, service: InferenceService) -> None:
        self.loop = asyncio.new_event_loop()
        self.service = service
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._server: Any = None

    def start(self) -> InProcessServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        return self

    async def _start(self) -> None:
        self._server = GrpcHttp2Server()
        assert add_v2_services(self._server, self.service) == ["inference.GRPCInferenceService"]
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._server.stop(None), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@pytest.fixture(scope="module")
def in_process(digits_repo: Path, tiny_repo: Path) -> Iterator[InProcessServer]:
    runtime = get_runtime("onnx")
    from modelserve.core.servable import RuntimeSettings

    manager = ModelManager(lambda config, path: runtime.load(path, RuntimeSettings()))
    manager.set_models(
        [
            ModelConfig(name="digits", base_path=str(digits_repo)),
            ModelConfig(name="tiny", base_path=str(tiny_repo)),
        ]
    )
    manager.set_aspired_versions("digits", [AspiredVersion(1, digits_repo / "1")])
    manager.set_aspired_versions("tiny", [AspiredVersion(1, tiny_repo / "1")])
    assert manager.wait_until_settled(60)
    # inline_threshold 0: every call goes through service.run, so the deadline path is exercised too.
    service = InferenceService(manager, InferenceSettings(inline_threshold_seconds=0.0))
    server = InProcessServer(service).start()
    yield server
    server.stop()
    service.close()
    manager.close()


@pytest.fixture(scope="module")
def real_server(start_module_server: Any, tiny_repo: Path, digits_repo: Path, tmp_path_factory: Any) -> Any:
    config = tmp_path_factory.mktemp("config") / "models.config"
    config.write_text(
        "model_config_list {\n"
        f"  config {{ name: 'tiny' base_path: '{tiny_repo}' }}\n"
        f"  config {{ name: 'digits' base_path: '{digits_repo}' }}\n"
        "}\n"
    )
    server = start_module_server(f"--model_config_file={config}")
    if not server.grpc_port:
        pytest.skip("this build of modelserve serve reports no gRPC port")
    return server


@pytest.fixture(params=["in_process", "real_server"])
def target(request: pytest.FixtureRequest) -> str:
    server = request.getfixturevalue(request.param)
    return f"127.0.0.1:{server.port}" if request.param == "in_process" else str(server.grpc_target)


@pytest.fixture
def client(target: str) -> Iterator[Any]:
    triton = grpcclient.InferenceServerClient(target)
    yield triton
    triton.close()


def infer_digits(
    client: Any, x: np.ndarray, outputs: tuple[str, ...] = ("probabilities", "classes"), **kwargs: Any
) -> Any:
    tensor = grpcclient.InferInput("images", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return client.infer(
        "digits", [tensor], outputs=[grpcclient.InferRequestedOutput(name) for name in outputs], **kwargs
    )


def test_health_and_metadata(client: Any) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("digits")
    assert client.is_model_ready("tiny", "1")
    assert not client.is_model_ready("tiny", "2")
    assert not client.is_model_ready("nope")
    server = client.get_server_metadata(as_json=True)
    assert server["name"] == "modelserve"
    assert "binary_tensor_data" in server["extensions"]
    model = client.get_model_metadata("tiny", as_json=True)
    assert model == {
        "name": "tiny",
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": ["-1", "64"]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": ["-1", "10"]}],
    }
    with pytest.raises(InferenceServerException) as raised:
        client.get_model_metadata("nope")
    assert raised.value.status() == "StatusCode.NOT_FOUND"


def test_infer_raw_contents(client: Any, digits_repo: Path) -> None:
    x = images()
    result = infer_digits(client, x, request_id="abc", model_version="1")
    expected = run_direct(digits_repo, {"images": x})
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), expected["probabilities"], rtol=1e-6, atol=1e-7
    )
    np.testing.assert_array_equal(result.as_numpy("classes"), expected["classes"])
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("digits", "1", "abc")


def test_requested_output_subset(client: Any, digits_repo: Path) -> None:
    x = images(2)
    result = infer_digits(client, x, outputs=("classes",))
    assert [o.name for o in result.get_response().outputs] == ["classes"]
    assert result.as_numpy("probabilities") is None
    np.testing.assert_array_equal(
        result.as_numpy("classes"), run_direct(digits_repo, {"images": x})["classes"]
    )


def test_infer_typed_contents(target: str, tiny_repo: Path) -> None:
    from modelserve.proto.inference import grpc_service_pb2 as pb
    from modelserve.proto.inference import grpc_service_pb2_grpc as pb_grpc

    x = np.random.default_rng(5).standard_normal((2, 64)).astype(np.float32)
    request = pb.ModelInferRequest(model_name="tiny")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[2, 64])
    tensor.contents.fp32_contents.extend(x.ravel().tolist())
    with grpc.insecure_channel(target) as channel:
        response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    (output,) = response.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("y", "FP32", [2, 10])
    got = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(2, 10)
    np.testing.assert_allclose(got, run_direct(tiny_repo, {"x": x})["y"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("model", "name", "shape", "datatype", "status", "message"),
    [
        ("nope", "images", [1, 64], "FP32", "NOT_FOUND", "Servable not found for request: Latest(nope)"),
        (
            "digits",
            "pixels",
            [1, 64],
            "FP32",
            "INVALID_ARGUMENT",
            "Sent extra: {pixels}. Missing but required: {images}",
        ),
        (
            "digits",
            "images",
            [1, 63],
            "FP32",
            "INVALID_ARGUMENT",
            "input 'images' has shape [1,63] but the signature expects [-1,64]",
        ),
        (
            "digits",
            "images",
            [1, 64],
            "FP64",
            "INVALID_ARGUMENT",
            "input 'images' has datatype FP64 but model 'digits' expects FP32",
        ),
    ],
)
def test_errors_then_the_server_stays_healthy(
    client: Any, model: str, name: str, shape: list[int], datatype: str, status: str, message: str
) -> None:
    tensor = grpcclient.InferInput(name, shape, datatype)
    tensor.set_data_from_numpy(np.zeros(shape, dtype=np.float64 if datatype == "FP64" else np.float32))
    with pytest.raises(InferenceServerException) as raised:
        client.infer(model, [tensor])
    assert raised.value.status() == f"StatusCode.{status}"
    assert raised.value.message() == message or message in raised.value.message()
    assert infer_digits(client, images(1)).as_numpy("classes").shape == (1,)


def test_stream_infer_reports_errors_in_band(client: Any, digits_repo: Path) -> None:
    results: list[Any] = []
    done = threading.Semaphore(0)

    def callback(result: Any, error: Any) -> None:
        results.append((result, error))
        done.release()

    client.start_stream(callback)
    x = images(2)
    good = grpcclient.InferInput("images", [2, 64], "FP32")
    good.set_data_from_numpy(x)
    bad = grpcclient.InferInput("images", [2, 63], "FP32")
    bad.set_data_from_numpy(np.zeros((2, 63), np.float32))
    client.async_stream_infer("digits", [good], request_id="1")
    client.async_stream_infer("digits", [bad], request_id="2")
    client.async_stream_infer("digits", [good], request_id="3")
    for _ in range(3):
        assert done.acquire(timeout=30)
    client.stop_stream()
    assert results[0][1] is None and results[2][1] is None
    np.testing.assert_array_equal(
        results[0][0].as_numpy("classes"), run_direct(digits_repo, {"images": x})["classes"]
    )
    assert "shape [2,63]" in results[1][1].message()


def test_unimplemented_triton_rpcs(client: Any) -> None:
    with pytest.raises(InferenceServerException) as raised:
        client.get_model_repository_index()
    assert raised.value.status() == "StatusCode.UNIMPLEMENTED"
