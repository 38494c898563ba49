"""TF Serving's gRPC API end to end: a real server process, the official ``tensorflow-serving-api`` client.

Results are compared with the model run in-process (ONNX Runtime on the same file; y = 0.5·x + 2 for
half_plus_two). Health checking and reflection use grpcio's own clients, and one test runs the server and
a client built from our protos in an interpreter where TensorFlow cannot be imported.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

TENSORFLOW_SERVICES = {"tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"}


def rows(seed: int, n: int = 2, width: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, width)).astype(np.float32)


def run_onnx(base: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(base / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


@pytest.fixture(scope="module")
def onnx_server(start_module_server: Any, tiny_repo: Path, digits_repo: Path, tmp_path_factory: Any) -> Any:
    config = tmp_path_factory.mktemp("grpc_config") / "models.config"
    config.write_text(
        "model_config_list {\n"
        f"  config {{ name: 'tiny' base_path: '{tiny_repo}' }}\n"
        f"  config {{ name: 'digits' base_path: '{digits_repo}' version_labels {{ key: 'stable' value: 1 }} }}\n"
        "}\n"
    )
    return start_module_server(f"--model_config_file={config}")


@pytest.fixture
def channel(onnx_server: Any) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(onnx_server.grpc_target) as opened:
        yield opened


# -- without TensorFlow: health, reflection, the servicers through our own protos ------------------------------


def test_health_check_reports_serving_for_the_server_and_each_service(channel: grpc.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ["", *TENSORFLOW_SERVICES]:
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
    with pytest.raises(grpc.RpcError) as error:
        stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def _reflect(channel: grpc.Channel, request: Any) -> Any:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    return next(iter(stub.ServerReflectionInfo(iter([request]), timeout=10)))


def test_reflection_lists_and_describes_our_services(channel: grpc.Channel) -> None:
    listed = _reflect(channel, reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {service.name for service in listed.list_services_response.service}
    assert names >= TENSORFLOW_SERVICES | {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    for symbol in (
        "tensorflow.serving.PredictionService",
        "tensorflow.serving.ModelService",
        "grpc.health.v1.Health",
    ):
        described = _reflect(channel, reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol))
        assert described.file_descriptor_response.file_descriptor_proto, symbol


def test_grpc_works_without_tensorflow(run_without_tensorflow: Any, tiny_repo: Path) -> None:
    output = run_without_tensorflow(
        f"""
        import asyncio
        import grpc
        import numpy as np
        from modelserve.codecs.tensor_proto import decode_tensor, encode_tensor
        from modelserve.config.options import ServerOptions
        from modelserve.proto.tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
        from modelserve.server import ModelServer

        async def main():
            server = ModelServer(ServerOptions(
                model_name="tiny", model_base_path={str(tiny_repo)!r}, rest_api_port=0,
                grpc_host="127.0.0.1", ephemeral_ports=True,
            ))
            ports = await server.startup()
            async with grpc.aio.insecure_channel(f"127.0.0.1:{{ports.grpc_port}}") as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                request = predict_pb2.PredictRequest()
                request.model_spec.name = "tiny"
                encode_tensor(np.zeros((3, 64), np.float32), request.inputs["x"])
                reply = await stub.Predict(request, timeout=30)
            await server.shutdown()
            print(decode_tensor(reply.outputs["y"]).shape, reply.model_spec.version.value)
            print(any(name.split(".")[0] == "tensorflow" and sys.modules[name] for name in sys.modules))

        asyncio.run(main())
        """
    )
    assert output.split("\n")[:2] == ["(3, 10) 1", "False"]


def test_port_zero_turns_grpc_off(start_server: Any, tiny_repo: Path) -> None:
    server = start_server("--model_name=tiny", f"--model_base_path={tiny_repo}", "--port=0")
    assert server.grpc_port == 0
    assert "gRPC on off" in server.log()


def test_unix_socket(start_server: Any, tiny_repo: Path, tmp_path: Path) -> None:
    socket_path = tmp_path / "grpc.sock"
    server = start_server(
        "--model_name=tiny", f"--model_base_path={tiny_repo}", f"--grpc_socket_path={socket_path}"
    )
    assert server.grpc_port  # TCP stays on beside the socket
    with grpc.insecure_channel(f"unix:{socket_path}") as opened:
        reply = health_pb2_grpc.HealthStub(opened).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_health_service_can_be_turned_off(start_server: Any, tiny_repo: Path) -> None:
    server = start_server(
        "--model_name=tiny",
        f"--model_base_path={tiny_repo}",
        "--enable_grpc_healthcheck_service=false",
        "--grpc_channel_arguments=grpc.max_concurrent_streams=16,grpc.http2.max_pings_without_data=0",
    )
    with grpc.insecure_channel(server.grpc_target) as opened, pytest.raises(grpc.RpcError) as error:
        health_pb2_grpc.HealthStub(opened).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED


# -- the official client (needs TensorFlow) --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tf() -> Any:
    return pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def apis(tf: Any) -> Any:
    """The official ``tensorflow_serving.apis`` modules."""
    from tensorflow_serving import apis as package
    from tensorflow_serving.apis import (
        classification_pb2,
        get_model_metadata_pb2,
        get_model_status_pb2,
        inference_pb2,
        model_management_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
        regression_pb2,
    )

    for module in (
        classification_pb2, get_model_metadata_pb2, get_model_status_pb2, inference_pb2,
        model_management_pb2, model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc, regression_pb2,
    ):  # fmt: skip
        setattr(package, module.__name__.rsplit(".", 1)[1], module)
    return package


def predict_request(apis: Any, tf: Any, model: str, inputs: dict[str, Any], **spec: Any) -> Any:
    request = apis.predict_pb2.PredictRequest()
    request.model_spec.name = model
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


@pytest.mark.tensorflow
def test_predict_onnx_equals_onnxruntime(channel: grpc.Channel, apis: Any, tf: Any, tiny_repo: Path) -> None:
    stub = apis.prediction_service_pb2_grpc.PredictionServiceStub(channel)
    x = rows(0, 5)
    reply = stub.Predict(predict_request(apis, tf, "tiny", {"x": x}), timeout=30)
    np.testing.assert_allclose(
        tf.make_ndarray(reply.outputs["y"]), run_onnx(tiny_repo, {"x": x})["y"], rtol=1e-5
    )
    assert reply.model_spec.name == "tiny"
    assert reply.model_spec.version.value == 1
    assert reply.model_spec.signature_name == "serving_default"


@pytest.mark.tensorflow
@pytest.mark.parametrize("spec", [{}, {"version": 1}, {"version_label": "stable"}])
def test_predict_several_outputs_version_label_and_output_filter(
    channel: grpc.Channel, apis: Any, tf: Any, digits_repo: Path, spec: dict[str, Any]
) -> None:
    stub = apis.prediction_service_pb2_grpc.PredictionServiceStub(channel)
    images = np.abs(rows(1, 4)) * 4
    expected = run_onnx(digits_repo, {"images": images})
    reply = stub.Predict(predict_request(apis, tf, "digits", {"images": images}, **spec), timeout=30)
    assert set(reply.outputs) == {"probabilities", "classes"}
    np.testing.assert_array_equal(tf.make_ndarray(reply.outputs["classes"]), expected["classes"])
    np.testing.assert_allclose(
        tf.make_ndarray(reply.outputs["probabilities"]), expected["probabilities"], rtol=1e-5
    )
    assert reply.model_spec.version.value == 1

    request = predict_request(apis, tf, "digits", {"images": images}, **spec)
    request.output_filter.append("classes")
    filtered = stub.Predict(request, timeout=30)
    assert set(filtered.outputs) == {"classes"}


@pytest.mark.tensorflow
def test_metadata_and_status_of_the_onnx_model(channel: grpc.Channel, apis: Any) -> None:
    stub = apis.prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = apis.get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "tiny"
    reply = stub.GetModelMetadata(request, timeout=10)
    assert reply.model_spec.name == "tiny" and reply.model_spec.version.value == 1
    packed = reply.metadata["signature_def"]
    assert packed.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    signatures = apis.get_model_metadata_pb2.SignatureDefMap()
    assert packed.Unpack(signatures)
    x = signatures.signature_def["serving_default"].inputs["x"]
    assert x.dtype == 1  # DT_FLOAT
    assert [d.size for d in x.tensor_shape.dim] == [-1, 64]

    models = apis.model_service_pb2_grpc.ModelServiceStub(channel)
    status_request = apis.get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "digits"
    status = models.GetModelStatus(status_request, timeout=10)
    (version,) = status.model_version_status
    assert version.version == 1
    assert version.state == apis.get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert version.status.error_code == 0


def _expect_error(call: Any, request: Any, code: grpc.StatusCode, message: str, **kwargs: Any) -> None:
    with pytest.raises(grpc.RpcError) as error:
        call(request, **kwargs)
    assert error.value.code() == code, error.value.details()
    assert message in (error.value.details() or "")


@pytest.mark.tensorflow
def test_errors_map_to_grpc_status_codes_and_the_server_keeps_serving(
    channel: grpc.Channel, apis: Any, tf: Any
) -> None:
    stub = apis.prediction_service_pb2_grpc.PredictionServiceStub(channel)
    x = rows(2, 1)
    cases = [
        (predict_request(apis, tf, "nope", {"x": x}), grpc.StatusCode.NOT_FOUND, "nope"),
        (predict_request(apis, tf, "tiny", {"x": x}, version=9), grpc.StatusCode.NOT_FOUND, "9"),
        (
            predict_request(apis, tf, "tiny", {"x": x}, version_label="canary"),
            grpc.StatusCode.INVALID_ARGUMENT,  # TF Serving's ServerCore::GetModelVersionForLabel
            "canary",
        ),
        (
            predict_request(apis, tf, "tiny", {"z": x}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Missing but required: {x}",
        ),
        (predict_request(apis, tf, "tiny", {"x": rows(2, 1, 63)}), grpc.StatusCode.INVALID_ARGUMENT, "shape"),
        (
            predict_request(apis, tf, "tiny", {"x": np.array([["a"] * 64])}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "dtype",
        ),
        (
            predict_request(apis, tf, "tiny", {"x": x}, signature_name="nope"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "nope",
        ),
        (predict_request(apis, tf, "", {"x": x}), grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec"),
    ]
    filtered = predict_request(apis, tf, "tiny", {"x": x})
    filtered.output_filter.append("nope")
    cases.append((filtered, grpc.StatusCode.INVALID_ARGUMENT, "output tensor alias not found"))
    short = predict_request(apis, tf, "tiny", {})
    short.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
    short.inputs["x"].tensor_content = short.inputs["x"].tensor_content[:-4]
    cases.append((short, grpc.StatusCode.INVALID_ARGUMENT, "tensor_content has 252 bytes"))
    for request, code, message in cases:
        _expect_error(stub.Predict, request, code, message, timeout=10)
        reply = stub.Predict(predict_request(apis, tf, "tiny", {"x": x}), timeout=10)
        assert tf.make_ndarray(reply.outputs["y"]).shape == (1, 10)


@pytest.mark.tensorflow
def test_deadline_exceeded(channel: grpc.Channel, apis: Any, tf: Any) -> None:
    stub = apis.prediction_service_pb2_grpc.PredictionServiceStub(channel)
    big = predict_request(apis, tf, "tiny", {"x": rows(3, 20_000)})  # 5 MB: cannot arrive within 0.1 ms
    _expect_error(stub.Predict, big, grpc.StatusCode.DEADLINE_EXCEEDED, "", timeout=1e-4)
    reply = stub.Predict(predict_request(apis, tf, "tiny", {"x": rows(3, 1)}), timeout=10)
    assert tf.make_ndarray(reply.outputs["y"]).shape == (1, 10)


@pytest.mark.tensorflow
def test_classify_on_a_predict_signature_is_invalid(channel: grpc.Channel, apis: Any) -> None:
    stub = apis.prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = apis.classification_pb2.ClassificationRequest()
    request.model_spec.name = "tiny"
    request.input.example_list.examples.add().features.feature["x"].float_list.value.append(1.0)
    _expect_error(stub.Classify, request, grpc.StatusCode.INVALID_ARGUMENT, "classification", timeout=10)


# -- half_plus_two: classify, regress, multi-inference, metadata, reload ----------------------------------------


@pytest.fixture(scope="module")
def tf_server(start_module_server: Any, half_plus_two_repo: Path) -> Any:
    return start_module_server("--model_name=half_plus_two", f"--model_base_path={half_plus_two_repo}")


@pytest.fixture
def tf_channel(tf_server: Any) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(tf_server.grpc_target) as opened:
        yield opened


def examples_input(
    target: Any, xs: list[float], context_x2: float | None = None, x2s: list[float | None] | None = None
) -> None:
    """Fill a ``tensorflow.serving.Input`` with examples {x[, x2]}, and a context when given."""
    if context_x2 is None:
        examples = target.example_list.examples
    else:
        target.example_list_with_context.context.features.feature["x2"].float_list.value.append(context_x2)
        examples = target.example_list_with_context.examples
    for i, x in enumerate(xs):
        example = examples.add()
        example.features.feature["x"].float_list.value.append(x)
        if x2s and x2s[i] is not None:
            example.features.feature["x2"].float_list.value.append(x2s[i])


@pytest.mark.tensorflow
def test_predict_half_plus_two(tf_channel: grpc.Channel, apis: Any, tf: Any) -> None:
    stub = apis.prediction_service_pb2_grpc.PredictionServiceStub(tf_channel)
    x = np.array([1.0, 2.0, 5.0], np.float32)
    reply = stub.Predict(predict_request(apis, tf, "half_plus_two", {"x": x}, version=123), timeout=30)
    np.testing.assert_allclose(tf.make_ndarray(reply.outputs["y"]), 0.5 * x + 2)
    assert (reply.model_spec.name, reply.model_spec.version.value) == ("half_plus_two", 123)
    # float_val with one value fills the shape (TensorFlow's broadcast).
    request = predict_request(apis, tf, "half_plus_two", {})
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(4.0, shape=[3], dtype=tf.float32))
    assert not request.inputs["x"].tensor_content
    np.testing.assert_allclose(tf.make_ndarray(stub.Predict(request, timeout=30).outputs["y"]), [4.0] * 3)


@pytest.mark.tensorflow
def test_regress_and_classify(tf_channel: grpc.Channel, apis: Any) -> None:
    stub = apis.prediction_service_pb2_grpc.PredictionServiceStub(tf_channel)
    regress = apis.regression_pb2.RegressionRequest()
    regress.model_spec.name = "half_plus_two"
    regress.model_spec.signature_name = "regress_x_to_y"
    examples_input(regress.input, [1.0, 2.0])
    reply = stub.Regress(regress, timeout=30)
    assert [r.value for r in reply.result.regressions] == [2.5, 3.0]
    assert reply.model_spec.signature_name == "regress_x_to_y"
    assert reply.model_spec.version.value == 123

    classify = apis.classification_pb2.ClassificationRequest()
    classify.model_spec.name = "half_plus_two"
    classify.model_spec.signature_name = "classify_x2_to_y3"
    examples_input(classify.input, [1.0, 2.0], context_x2=4.0, x2s=[None, 2.0])
    reply = stub.Classify(classify, timeout=30)
    # y3 = 0.5 * x2 + 3: the context's x2 for the first example, the example's own for the second.
    scores = [[(c.label, c.score) for c in item.classes] for item in reply.result.classifications]
    assert scores == [[("", 5.0)], [("", 4.0)]]

    wrong = apis.regression_pb2.RegressionRequest()
    wrong.CopyFrom(regress)
    wrong.model_spec.signature_name = "serving_default"
    _expect_error(
        stub.Regress, wrong, grpc.StatusCode.INVALID_ARGUMENT, "Expected regression signature", timeout=10
    )
    empty = apis.regression_pb2.RegressionRequest()
    empty.model_spec.name = "half_plus_two"
    _expect_error(stub.Regress, empty, grpc.StatusCode.INVALID_ARGUMENT, "Input is empty", timeout=10)


@pytest.mark.tensorflow
def test_multi_inference(tf_channel: grpc.Channel, apis: Any) -> None:
    stub = apis.prediction_service_pb2_grpc.PredictionServiceStub(tf_channel)
    request = apis.inference_pb2.MultiInferenceRequest()
    for signature, method in (
        ("regress_x_to_y", "regress"),
        ("regress_x_to_y2", "regress"),
        ("classify_x2_to_y3", "classify"),
    ):
        task = request.tasks.add()
        task.model_spec.name = "half_plus_two"
        task.model_spec.signature_name = signature
        task.method_name = f"tensorflow/serving/{method}"
    examples_input(request.input, [2.0], x2s=[6.0])
    reply = stub.MultiInference(request, timeout=30)
    first, second, third = reply.results
    assert [r.value for r in first.regression_result.regressions] == [3.0]
    assert [r.value for r in second.regression_result.regressions] == [4.0]
    assert [c.score for c in third.classification_result.classifications[0].classes] == [6.0]
    assert [r.model_spec.signature_name for r in reply.results] == [
        "regress_x_to_y",
        "regress_x_to_y2",
        "classify_x2_to_y3",
    ]
    assert {r.model_spec.version.value for r in reply.results} == {123}


@pytest.mark.tensorflow
def test_metadata_lists_every_signature(tf_channel: grpc.Channel, apis: Any) -> None:
    stub = apis.prediction_service_pb2_grpc.PredictionServiceStub(tf_channel)
    request = apis.get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "half_plus_two"
    signatures = apis.get_model_metadata_pb2.SignatureDefMap()
    stub.GetModelMetadata(request, timeout=10).metadata["signature_def"].Unpack(signatures)
    assert set(signatures.signature_def) >= {"serving_default", "classify_x_to_y", "regress_x_to_y"}
    predict = signatures.signature_def["serving_default"]
    assert predict.method_name == "tensorflow/serving/predict"
    assert predict.inputs["x"].name == "x:0"
    assert signatures.signature_def["regress_x_to_y"].inputs["inputs"].tensor_shape.unknown_rank
    bad = apis.get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["nope"])
    bad.model_spec.name = "half_plus_two"
    _expect_error(stub.GetModelMetadata, bad, grpc.StatusCode.INVALID_ARGUMENT, "nope", timeout=10)


@pytest.mark.tensorflow
def test_reload_config_adds_and_removes_models(
    start_server: Any, apis: Any, tf: Any, tiny_repo: Path, digits_repo: Path
) -> None:
    server = start_server("--model_name=tiny", f"--model_base_path={tiny_repo}")
    with grpc.insecure_channel(server.grpc_target) as opened:
        models = apis.model_service_pb2_grpc.ModelServiceStub(opened)
        predictions = apis.prediction_service_pb2_grpc.PredictionServiceStub(opened)
        request = apis.model_management_pb2.ReloadConfigRequest()
        config = request.config.model_config_list.config.add()
        config.name = "digits"
        config.base_path = str(digits_repo)
        reply = models.HandleReloadConfigRequest(request, timeout=60)
        assert reply.status.error_code == 0
        images = np.zeros((1, 64), np.float32)
        answer = predictions.Predict(predict_request(apis, tf, "digits", {"images": images}), timeout=30)
        assert set(answer.outputs) == {"probabilities", "classes"}
        _expect_error(
            predictions.Predict,
            predict_request(apis, tf, "tiny", {"x": rows(0, 1)}),
            grpc.StatusCode.NOT_FOUND,
            "tiny",
            timeout=10,
        )
        _expect_error(
            models.HandleReloadConfigRequest,
            apis.model_management_pb2.ReloadConfigRequest(),
            grpc.StatusCode.FAILED_PRECONDITION,
            "ModelConfigList",
            timeout=10,
        )
