"""The models of ``protocols.py`` and the five ways a client asks for their prediction, as pre-built bytes.

Protocols (the same tensor in every request, one row):

- ``rest-predict``: TF Serving REST ``POST /v1/models/M:predict``, ``{"instances": x.tolist()}``;
- ``v2-json``: V2 REST ``POST /v2/models/M/infer`` with the tensor in ``data`` (JSON numbers);
- ``v2-binary``: V2 REST with the binary tensor data extension: a JSON header (its length in
  ``Inference-Header-Content-Length``), then the raw little-endian bytes; the output comes back binary;
- ``grpc-predict``: TF Serving ``PredictionService/Predict``, the tensor in ``tensor_content``;
- ``v2-grpc``: V2 ``GRPCInferenceService/ModelInfer`` with ``raw_input_contents``.

Every request is serialized once, here, so the load generators send bytes and the client's JSON or
protobuf encoding is never part of what is measured. JSON numbers are written as a client's ``x.tolist()``
writes them (shortest repr of the float64), as ``rest_predict.py`` does. ``decode`` reads a reply back
into numpy, for the correctness check.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PROTOCOLS = ("rest-predict", "v2-json", "v2-binary", "grpc-predict", "v2-grpc")
REST_PROTOCOLS = PROTOCOLS[:3]
WIDE_FEATURES = 262_144  # float32: 1 MiB per row
PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"


@dataclass(frozen=True, slots=True)
class BenchModel:
    """A generated model in TF Serving's layout and the one-row tensor every request carries."""

    name: str
    base_path: Path
    model_file: Path
    x: np.ndarray  # input "x", float32 [1, features]
    tolerance: float  # max abs difference from in-process ONNX Runtime


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One REST request: path, headers (besides Host and Content-Length) and the exact body."""

    path: str
    headers: dict[str, str]
    body: bytes

    def wire(self, host: str, port: int) -> bytes:
        """The whole HTTP/1.1 request as it goes on the socket (keep-alive, as wrk sends it)."""
        lines = [f"POST {self.path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(self.body)}"]
        lines += [f"{name}: {value}" for name, value in self.headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


@dataclass(frozen=True, slots=True)
class GrpcRequest:
    """One gRPC unary call: the full method name and the serialized request message."""

    method: str
    body: bytes


def write_tiny(directory: Path) -> BenchModel:
    """The tiny MLP (x [-1, 64] -> y [-1, 10], ~10 µs a call): pure serving overhead."""
    from modelserve.demo.models import write_tiny_mlp

    base = directory / "tiny"
    model_file = write_tiny_mlp(base, version=1)
    x = np.random.default_rng(0).standard_normal((1, 64), dtype=np.float32)
    return BenchModel("tiny", base, model_file, x, 1e-5)


def write_wide(directory: Path) -> BenchModel:
    """x float32 [-1, 262144] (1 MiB a row) -> y = mean over the row, [-1, 1]: the model costs ~0.1 ms,
    so the time goes to moving and decoding the 1 MiB request, which is what the protocols differ in."""
    import onnx
    from onnx import TensorProto
    from onnx.helper import make_graph, make_model, make_node, make_opsetid, make_tensor_value_info

    graph = make_graph(
        [make_node("ReduceMean", ["x"], ["y"], axes=[1], keepdims=1)],  # opset 17: axes is an attribute
        "wide_mean",
        [make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WIDE_FEATURES])],
        [make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
    )
    model = make_model(graph, opset_imports=[make_opsetid("", 17)], producer_name="modelserve.bench")
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    base = directory / "wide"
    (base / "1").mkdir(parents=True)
    model_file = base / "1" / "model.onnx"
    onnx.save(model, model_file)
    x = np.random.default_rng(1).standard_normal((1, WIDE_FEATURES), dtype=np.float32)
    return BenchModel("wide", base, model_file, x, 1e-5)


def expected_output(model: BenchModel) -> np.ndarray:
    """What in-process ONNX Runtime answers to the request (1 intra-op thread)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model.model_file), options, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["y"], {"x": model.x})[0])


def build(protocol: str, model: BenchModel) -> HttpRequest | GrpcRequest:
    """The request of ``protocol`` carrying ``model.x``, serialized once."""
    x, name = model.x, model.name
    shape = list(x.shape)
    if protocol == "rest-predict":
        body = json.dumps({"instances": x.tolist()}).encode()
        return HttpRequest(f"/v1/models/{name}:predict", {"Content-Type": "application/json"}, body)
    if protocol == "v2-json":
        tensor: dict[str, Any] = {
            "name": "x",
            "shape": shape,
            "datatype": "FP32",
            "data": x.reshape(-1).tolist(),
        }
        body = json.dumps({"inputs": [tensor]}).encode()
        return HttpRequest(f"/v2/models/{name}/infer", {"Content-Type": "application/json"}, body)
    raw = np.ascontiguousarray(x, dtype="<f4").tobytes()
    if protocol == "v2-binary":
        tensor = {
            "name": "x",
            "shape": shape,
            "datatype": "FP32",
            "parameters": {"binary_data_size": len(raw)},
        }
        output = {"name": "y", "parameters": {"binary_data": True}}
        header = json.dumps({"inputs": [tensor], "outputs": [output]}).encode()
        headers = {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(header)),
        }
        return HttpRequest(f"/v2/models/{name}/infer", headers, header + raw)
    if protocol == "grpc-predict":
        from modelserve.codecs.tensor_proto import encode_tensor
        from modelserve.proto.tensorflow_serving.apis.predict_pb2 import PredictRequest

        predict = PredictRequest()
        predict.model_spec.name = name
        encode_tensor(x, predict.inputs["x"])
        return GrpcRequest(PREDICT_METHOD, predict.SerializeToString())
    if protocol == "v2-grpc":
        from modelserve.proto.inference.grpc_service_pb2 import ModelInferRequest

        infer = ModelInferRequest(model_name=name, raw_input_contents=[raw])
        infer.inputs.add(name="x", datatype="FP32", shape=shape)
        return GrpcRequest(INFER_METHOD, infer.SerializeToString())
    raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")


def decode(protocol: str, headers: Mapping[str, str], body: bytes) -> np.ndarray:
    """The output ``y`` in a reply of ``protocol`` (``headers`` lower-cased; empty for gRPC)."""
    if protocol == "rest-predict":
        return np.asarray(json.loads(body)["predictions"], dtype=np.float32)
    if protocol == "v2-json":
        (out,) = json.loads(body)["outputs"]
        return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
    if protocol == "v2-binary":
        size = int(headers["inference-header-content-length"])
        (out,) = json.loads(body[:size])["outputs"]
        return np.frombuffer(body[size:], dtype="<f4").reshape(out["shape"])
    if protocol == "grpc-predict":
        from modelserve.codecs.tensor_proto import decode_tensor
        from modelserve.proto.tensorflow_serving.apis.predict_pb2 import PredictResponse

        return decode_tensor(PredictResponse.FromString(body).outputs["y"])
    if protocol == "v2-grpc":
        from modelserve.proto.inference.grpc_service_pb2 import ModelInferResponse

        reply = ModelInferResponse.FromString(body)
        return np.frombuffer(reply.raw_output_contents[0], dtype="<f4").reshape(list(reply.outputs[0].shape))
    raise ValueError(f"unknown protocol {protocol!r}")


def ask(protocol: str, request: HttpRequest | GrpcRequest, rest_port: int, grpc_port: int) -> np.ndarray:
    """Send ``request`` once (the very bytes the load generators send) and decode the answer."""
    if isinstance(request, HttpRequest):
        connection = http.client.HTTPConnection("127.0.0.1", rest_port, timeout=30)
        try:
            connection.request("POST", request.path, body=request.body, headers=request.headers)
            reply = connection.getresponse()
            body = reply.read()
            if reply.status != 200:
                raise RuntimeError(f"{protocol}: HTTP {reply.status}: {body[:500]!r}")
            return decode(protocol, {k.lower(): v for k, v in reply.getheaders()}, body)
        finally:
            connection.close()
    return decode(protocol, {}, grpc_reply(request, grpc_port))


def grpc_reply(request: GrpcRequest, grpc_port: int) -> bytes:
    """The serialized reply message to ``request`` (grpcio's client, no serializers: bytes in, bytes out)."""
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        reply: bytes = channel.unary_unary(request.method)(request.body, timeout=30)
        return reply
