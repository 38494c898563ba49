"""Server-side batching end to end: a real server, real clients on every front-end, exact rows back.

Batches are made observable through the Prometheus histogram ``modelserve_batch_size`` (the server's
``--monitoring_config_file``), so each test can check that requests were really merged, not just answered.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import requests
from onnx import TensorProto, helper

from modelserve.codecs.tensor_proto import decode_tensor, encode_tensor
from modelserve.proto.inference import grpc_service_pb2, grpc_service_pb2_grpc
from modelserve.proto.tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

METRICS = "/monitoring/prometheus/metrics"
CLIENTS = 64


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def server_flags(tmp: Path, batching: str, *extra: str) -> list[str]:
    return [
        "--enable_batching",
        f"--batching_parameters_file={write(tmp / 'batching.config', batching)}",
        f"--monitoring_config_file={write(tmp / 'monitoring.config', 'prometheus_config { enable: true }')}",
        *extra,
    ]


def batch_stats(url: str, model: str, metric: str = "modelserve_batch_size") -> tuple[float, float]:
    """(number of batches, rows) run so far for ``model``."""
    text = requests.get(url + METRICS, timeout=10).text
    values = {}
    for kind in ("count", "sum"):
        match = re.search(rf'^{metric}_{kind}{{model="{model}",version="\d+"}} (\S+)$', text, re.M)
        values[kind] = float(match.group(1)) if match else 0.0
    return values["count"], values["sum"]


def concurrently(calls: int, call: Callable[[int], None]) -> None:
    """Run ``call(i)`` for i in range(calls) from ``calls`` threads released together."""
    start = threading.Barrier(calls)

    def run(i: int) -> None:
        start.wait()
        call(i)

    with ThreadPoolExecutor(calls) as pool:
        list(pool.map(run, range(calls)))


def client_rows(i: int) -> np.ndarray:
    """Client ``i``'s own input: 1 to 3 rows, every value distinct across clients."""
    rows = 1 + i % 3
    return (np.arange(rows * 64, dtype=np.float32).reshape(rows, 64) / 64 + i).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_session(tiny_repo: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(tiny_repo / "1" / "model.onnx"), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def batching_server(start_module_server, tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Static 5 ms timeout: concurrent requests reliably share batches."""
    tmp = tmp_path_factory.mktemp("batching")
    flags = server_flags(tmp, "max_batch_size { value: 32 } batch_timeout_micros { value: 5000 }")
    return start_module_server("--model_name=tiny", f"--model_base_path={tiny_repo}", *flags)


def expect(session: ort.InferenceSession, x: np.ndarray, got: np.ndarray) -> None:
    np.testing.assert_allclose(got, session.run(None, {"x": x})[0], rtol=1e-5, atol=1e-6)


def test_rest_clients_get_exactly_their_own_rows(batching_server, tiny_session) -> None:  # type: ignore[no-untyped-def]
    before = batch_stats(batching_server.url, "tiny")
    session = requests.Session()

    def call(i: int) -> None:
        x = client_rows(i)
        reply = session.post(
            f"{batching_server.url}/v1/models/tiny:predict", json={"instances": x.tolist()}, timeout=30
        )
        assert reply.status_code == 200, reply.text
        expect(tiny_session, x, np.asarray(reply.json()["predictions"], dtype=np.float32))

    concurrently(CLIENTS, call)
    batches, rows = (a - b for a, b in zip(batch_stats(batching_server.url, "tiny"), before, strict=True))
    assert rows == sum(client_rows(i).shape[0] for i in range(CLIENTS))
    assert batches < CLIENTS, "requests were not merged into batches"


def test_grpc_predict_clients_get_exactly_their_own_rows(batching_server, tiny_session) -> None:  # type: ignore[no-untyped-def]
    before = batch_stats(batching_server.url, "tiny")
    with grpc.insecure_channel(batching_server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        def call(i: int) -> None:
            x = client_rows(i)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "tiny"
            encode_tensor(x, request.inputs["x"])
            response = stub.Predict(request, timeout=30)
            expect(tiny_session, x, decode_tensor(response.outputs["y"]))

        concurrently(CLIENTS, call)
    batches, rows = (a - b for a, b in zip(batch_stats(batching_server.url, "tiny"), before, strict=True))
    assert rows == sum(client_rows(i).shape[0] for i in range(CLIENTS)) and batches < CLIENTS


def test_v2_rest_and_grpc_clients_get_exactly_their_own_rows(batching_server, tiny_session) -> None:  # type: ignore[no-untyped-def]
    before = batch_stats(batching_server.url, "tiny")
    session = requests.Session()
    with grpc.insecure_channel(batching_server.grpc_target) as channel:
        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)

        def call(i: int) -> None:
            x = client_rows(i)
            if i % 2:  # V2 REST, JSON
                body = {
                    "inputs": [
                        {"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
                    ]
                }
                reply = session.post(f"{batching_server.url}/v2/models/tiny/infer", json=body, timeout=30)
                assert reply.status_code == 200, reply.text
                output = reply.json()["outputs"][0]
                got = np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
            else:  # V2 gRPC, raw contents
                request = grpc_service_pb2.ModelInferRequest(model_name="tiny")
                tensor = request.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
                assert tensor is not None
                request.raw_input_contents.append(x.tobytes())
                response = stub.ModelInfer(request, timeout=30)
                got = np.frombuffer(response.raw_output_contents[0], dtype=np.float32).reshape(
                    response.outputs[0].shape
                )
            expect(tiny_session, x, got)

        concurrently(CLIENTS, call)
    batches, rows = (a - b for a, b in zip(batch_stats(batching_server.url, "tiny"), before, strict=True))
    assert rows == sum(client_rows(i).shape[0] for i in range(CLIENTS)) and batches < CLIENTS


def test_metrics_expose_batching(batching_server) -> None:  # type: ignore[no-untyped-def]
    text = requests.get(batching_server.url + METRICS, timeout=10).text
    for name in (
        "modelserve_batch_size_bucket",
        "modelserve_batch_queue_delay_seconds_bucket",
        "modelserve_batch_run_seconds_count",
        'modelserve_batch_queue_rows{model="tiny",version="1"}',
    ):
        assert name in text


@pytest.mark.tensorflow
def test_tensorflow_model_batched_across_every_front_end(
    start_server, half_plus_two_repo: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    server = start_server(
        "--model_name=half_plus_two",
        f"--model_base_path={half_plus_two_repo}",
        *server_flags(tmp_path, "max_batch_size { value: 16 } batch_timeout_micros { value: 5000 }"),
    )
    session = requests.Session()
    with grpc.insecure_channel(server.grpc_target) as channel:
        tfserving = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        v2 = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)

        def call(i: int) -> None:
            x = np.array([i, i + 0.5], dtype=np.float32)  # x: float32 [-1]; y = 0.5 x + 2
            if i % 4 == 0:
                reply = session.post(
                    f"{server.url}/v1/models/half_plus_two:predict",
                    json={"instances": x.tolist()},
                    timeout=30,
                )
                assert reply.status_code == 200, reply.text
                got = np.asarray(reply.json()["predictions"], dtype=np.float32)
            elif i % 4 == 1:
                request = predict_pb2.PredictRequest()
                request.model_spec.name = "half_plus_two"
                encode_tensor(x, request.inputs["x"])
                got = decode_tensor(tfserving.Predict(request, timeout=30).outputs["y"])
            elif i % 4 == 2:
                body = {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": x.tolist()}]}
                reply = session.post(f"{server.url}/v2/models/half_plus_two/infer", json=body, timeout=30)
                assert reply.status_code == 200, reply.text
                got = np.asarray(reply.json()["outputs"][0]["data"], dtype=np.float32)
            else:
                request = grpc_service_pb2.ModelInferRequest(model_name="half_plus_two")
                request.inputs.add(name="x", datatype="FP32", shape=[2])
                request.raw_input_contents.append(x.tobytes())
                got = np.frombuffer(
                    v2.ModelInfer(request, timeout=30).raw_output_contents[0], dtype=np.float32
                )
            np.testing.assert_allclose(got, 0.5 * x + 2)

        concurrently(CLIENTS, call)
    batches, rows = batch_stats(server.url, "half_plus_two")
    assert rows == 2 * CLIENTS and batches < CLIENTS


def test_large_requests_split_and_padded_to_allowed_sizes(
    start_server, tiny_repo: Path, tmp_path: Path, tiny_session
) -> None:  # type: ignore[no-untyped-def]
    server = start_server(
        "--model_name=tiny",
        f"--model_base_path={tiny_repo}",
        *server_flags(
            tmp_path,
            "max_batch_size { value: 64 } batch_timeout_micros { value: 0 } "
            "enable_large_batch_splitting { value: true } max_execution_batch_size { value: 8 } "
            "allowed_batch_sizes: 4 allowed_batch_sizes: 8",
        ),
    )
    x = np.random.default_rng(1).standard_normal((21, 64)).astype(np.float32)
    reply = requests.post(f"{server.url}/v1/models/tiny:predict", json={"inputs": x.tolist()}, timeout=30)
    assert reply.status_code == 200, reply.text
    expect(tiny_session, x, np.asarray(reply.json()["outputs"], dtype=np.float32))
    batches, rows = batch_stats(server.url, "tiny")
    _, padded_rows = batch_stats(server.url, "tiny", "modelserve_padded_batch_size")
    assert (batches, rows) == (3, 21)  # 8 + 8 + 5
    assert padded_rows == 24  # the last piece of 5 rows ran as 8
    too_large = requests.post(
        f"{server.url}/v1/models/tiny:predict", json={"inputs": np.zeros((65, 64)).tolist()}, timeout=30
    )
    assert too_large.status_code == 400
    assert "Task size 65 is larger than maximum input batch size 64" in too_large.json()["error"]


def write_sequence_model(base: Path) -> None:
    """x int64 [-1,-1] (token ids) -> total [-1] = sum over tokens, doubled [-1,-1] = 2x per token."""
    graph = helper.make_graph(
        [
            helper.make_node("ReduceSum", ["x", "axes"], ["total"], keepdims=0),
            helper.make_node("Add", ["x", "x"], ["doubled"]),
        ],
        "sequence",
        [helper.make_tensor_value_info("x", TensorProto.INT64, [None, None])],
        [
            helper.make_tensor_value_info("total", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("doubled", TensorProto.INT64, [None, None]),
        ],
        [helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    (base / "1").mkdir(parents=True)
    onnx.save(model, base / "1" / "model.onnx")


def test_variable_length_inputs_padded_and_results_unpadded(start_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write_sequence_model(tmp_path / "sequence")
    server = start_server(
        "--model_name=sequence",
        f"--model_base_path={tmp_path / 'sequence'}",
        *server_flags(
            tmp_path,
            "max_batch_size { value: 64 } batch_timeout_micros { value: 20000 } pad_variable_length_inputs: true",
        ),
    )

    def call(i: int) -> None:
        tokens = [[i * 100 + t for t in range(1 + i % 7)]]  # lengths 1 to 7 in one batch
        reply = requests.post(f"{server.url}/v1/models/sequence:predict", json={"inputs": tokens}, timeout=30)
        assert reply.status_code == 200, reply.text
        outputs = reply.json()["outputs"]
        assert outputs["total"] == [sum(tokens[0])]
        assert outputs["doubled"] == [[2 * t for t in tokens[0]]]

    concurrently(16, call)
    batches, rows = batch_stats(server.url, "sequence")
    assert rows == 16 and batches < 16


def test_full_queue_answers_429_at_once_and_the_server_recovers(
    start_server, tiny_repo: Path, tmp_path: Path, tiny_session
) -> None:  # type: ignore[no-untyped-def]
    # The queue holds one batch of 4 rows; a request of 3 rows waits for the 0.5 s timeout, so a second
    # request of 2 rows finds it full.
    server = start_server(
        "--model_name=tiny",
        f"--model_base_path={tiny_repo}",
        *server_flags(
            tmp_path,
            "max_batch_size { value: 4 } batch_timeout_micros { value: 500000 } max_enqueued_batches { value: 1 } "
            "num_batch_threads { value: 1 }",
        ),
    )
    url = f"{server.url}/v1/models/tiny:predict"
    x3, x2 = client_rows(2), client_rows(1)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(requests.post, url, json={"inputs": x3.tolist()}, timeout=30)
        time.sleep(0.1)  # let it reach the queue (the 0.5 s timeout leaves ample margin)
        started = time.monotonic()
        rejected = requests.post(url, json={"inputs": x2.tolist()}, timeout=30)
        assert time.monotonic() - started < 0.3, "a full queue must answer at once"
        assert rejected.status_code == 429, rejected.text
        assert "queue to which this task was submitted is full" in rejected.json()["error"]
        first = waiting.result()
    assert first.status_code == 200
    expect(tiny_session, x3, np.asarray(first.json()["outputs"], dtype=np.float32))
    after = requests.post(url, json={"inputs": x2.tolist()}, timeout=30)
    assert after.status_code == 200
    expect(tiny_session, x2, np.asarray(after.json()["outputs"], dtype=np.float32))


def test_deadline_expires_while_queued_and_the_request_never_runs(
    start_server, tiny_repo: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    server = start_server(
        "--model_name=tiny",
        f"--model_base_path={tiny_repo}",
        "--rest_api_timeout_in_ms=100",
        *server_flags(tmp_path, "max_batch_size { value: 64 } batch_timeout_micros { value: 1000000 }"),
    )
    started = time.monotonic()
    reply = requests.post(
        f"{server.url}/v1/models/tiny:predict", json={"inputs": client_rows(0).tolist()}, timeout=30
    )
    assert reply.status_code == 504, reply.text
    assert time.monotonic() - started < 0.9  # answered at the deadline, not when the batch timed out
    with grpc.insecure_channel(server.grpc_target) as channel:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "tiny"
        encode_tensor(client_rows(1), request.inputs["x"])
        with pytest.raises(grpc.RpcError) as caught:
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=0.1)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    time.sleep(1.2)  # past the batch timeout: the expired requests were dropped, not run
    assert batch_stats(server.url, "tiny") == (0.0, 0.0)
    assert requests.get(f"{server.url}/v1/models/tiny", timeout=10).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b'{"instances": [[1.0, 2.0]]}', 400, "has shape [1,2] but the signature expects [-1,64]"),
        (b'{"inputs": {"z": [[0.0]]}}', 400, "Missing named input: x"),
        (b'{"instances": [["a"]]}', 400, ""),
        (b'{"instances": [[1.0', 400, "JSON Parse error"),
        (b"{}", 400, ""),
    ],
)
def test_bad_requests_on_a_batching_server_fail_alone(
    batching_server, tiny_session, body: bytes, status: int, message: str
) -> None:  # type: ignore[no-untyped-def]
    url = f"{batching_server.url}/v1/models/tiny:predict"
    reply = requests.post(url, data=body, timeout=30)
    assert reply.status_code == status, reply.text
    assert message in reply.json()["error"]
    x = client_rows(5)
    good = requests.post(url, json={"inputs": x.tolist()}, timeout=30)
    assert good.status_code == 200
    expect(tiny_session, x, np.asarray(good.json()["outputs"], dtype=np.float32))
