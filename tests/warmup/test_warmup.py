"""Warm-up on real models: replaying TF Serving warm-up files on a SavedModel, the generic zero-filled
warm-up on ONNX and SavedModels, and the errors a bad file or a failing model gives."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelserve.codecs.tensor_proto import encode_tensor
from modelserve.codecs.tfrecord import encode_record, write_records
from modelserve.core.servable import RuntimeSettings, Servable
from modelserve.errors import FailedPrecondition, InvalidArgument
from modelserve.proto.tensorflow.core.example import example_pb2
from modelserve.proto.tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    predict_pb2,
    prediction_log_pb2,
    regression_pb2,
)
from modelserve.runtimes.onnx import OnnxRuntime
from modelserve.warmup import WARMUP_FILE, WarmupOptions, WarmupReport, warm_up

SETTINGS = RuntimeSettings(intra_op_threads=1, use_gpu=False)
HINT = "; provide assets.extra/tf_serving_warmup_requests or pass --enable_model_warmup=false"


# -- warm-up records -----------------------------------------------------------------------------------------


def predict_record(signature: str = "", output_filter: Iterable[str] = (), **inputs: Any) -> bytes:
    request = predict_pb2.PredictRequest(output_filter=list(output_filter))
    request.model_spec.name = "m"
    request.model_spec.signature_name = signature
    for name, value in inputs.items():
        encode_tensor(np.asarray(value), request.inputs[name])
    log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
    return log.SerializeToString()


def examples_input(*rows: dict[str, float]) -> Any:
    examples = []
    for row in rows:
        example = example_pb2.Example()
        for name, value in row.items():
            example.features.feature[name].float_list.value.append(value)
        examples.append(example)
    request = classification_pb2.ClassificationRequest()
    request.input.example_list.examples.extend(examples)
    return request.input


def classify_record(signature: str, *rows: dict[str, float]) -> bytes:
    request = classification_pb2.ClassificationRequest(input=examples_input(*rows))
    request.model_spec.signature_name = signature
    log = prediction_log_pb2.PredictionLog(classify_log=prediction_log_pb2.ClassifyLog(request=request))
    return log.SerializeToString()


def regress_record(signature: str, *rows: dict[str, float]) -> bytes:
    request = regression_pb2.RegressionRequest(input=examples_input(*rows))
    request.model_spec.signature_name = signature
    log = prediction_log_pb2.PredictionLog(regress_log=prediction_log_pb2.RegressLog(request=request))
    return log.SerializeToString()


def write_warmup(version_dir: Path, records: Iterable[bytes]) -> Path:
    path = version_dir / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_records(path, records)
    return path


def failure(servable: Servable, version_dir: Path, options: WarmupOptions | None = None) -> str:
    with pytest.raises(FailedPrecondition) as info:
        warm_up(servable, version_dir, options or WarmupOptions())
    return info.value.message


# -- models --------------------------------------------------------------------------------------------------


def write_onnx(
    version_dir: Path, nodes: list[Any], inputs: list[Any], outputs: list[Any], init: list[Any]
) -> Path:
    graph = helper.make_graph(nodes, "warmup_test", inputs, outputs, init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    version_dir.mkdir(parents=True)
    onnx.save(model, version_dir / "model.onnx")
    return version_dir


@pytest.fixture(scope="module")
def half_plus_two(half_plus_two_repo: Path) -> Servable:
    from modelserve.runtimes.tensorflow import TensorFlowRuntime

    return TensorFlowRuntime().load(half_plus_two_repo / "123", SETTINGS)


@pytest.fixture
def reshape_to_two_rows(tmp_path: Path) -> Servable:
    """x float [batch, 3] reshaped to [2, 3]: runs for batch 2 only, so zero-filled inputs (batch 1) fail."""
    shape = numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "shape")
    version_dir = write_onnx(
        tmp_path / "reshape" / "1",
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [shape],
    )
    return OnnxRuntime().load(version_dir, SETTINGS)


# -- the warm-up file ----------------------------------------------------------------------------------------


@pytest.mark.tensorflow
def test_predict_records_are_replayed_each_iteration(half_plus_two: Servable, tmp_path: Path) -> None:
    write_warmup(
        tmp_path,
        [
            predict_record(x=np.array([1.0, 2.0], np.float32)),
            predict_record("serving_default", ["y"], x=np.array([5.0], np.float32)),
            predict_record(x=np.zeros(7, np.float32)),
        ],
    )
    report = warm_up(half_plus_two, tmp_path, WarmupOptions(iterations=2))
    assert (report.mode, report.records, report.calls) == ("file", 3, 6)
    assert report.seconds > 0
    assert report.describe().startswith(
        "replayed 3 warm-up records (6 calls) from assets.extra/tf_serving_warmup_requests in "
    )


@pytest.mark.tensorflow
def test_classify_and_regress_records_feed_the_serialized_examples(
    half_plus_two: Servable, tmp_path: Path
) -> None:
    write_warmup(
        tmp_path,
        [
            classify_record("classify_x_to_y", {"x": 1.0}, {"x": 2.0, "x2": 3.0}),
            regress_record("regress_x2_to_y3", {"x": 1.0, "x2": 4.0}),
        ],
    )
    report = warm_up(half_plus_two, tmp_path, WarmupOptions())
    assert (report.mode, report.records, report.calls) == ("file", 2, 2)


@pytest.mark.tensorflow
def test_a_warmup_file_in_a_loaded_version_directory(half_plus_two_repo: Path, tmp_path: Path) -> None:
    """As the server does it: the file ships inside the version directory the runtime loads."""
    from modelserve.runtimes.tensorflow import TensorFlowRuntime

    version_dir = tmp_path / "half_plus_two" / "123"
    shutil.copytree(half_plus_two_repo / "123", version_dir)
    write_warmup(version_dir, [predict_record(x=np.array([1.0], np.float32))] * 4)
    servable = TensorFlowRuntime().load(version_dir, SETTINGS)
    try:
        report = warm_up(servable, version_dir, WarmupOptions(iterations=3))
    finally:
        servable.close()
    assert (report.mode, report.records, report.calls) == ("file", 4, 12)


@pytest.mark.tensorflow
def test_a_file_made_with_tensorflow_and_the_official_protos_is_replayed(
    half_plus_two: Servable, tmp_path: Path
) -> None:
    tf = pytest.importorskip("tensorflow")
    official = pytest.importorskip("tensorflow_serving.apis.prediction_log_pb2")
    official_predict = pytest.importorskip("tensorflow_serving.apis.predict_pb2")
    request = official_predict.PredictRequest(inputs={"x": tf.make_tensor_proto([1.0, 2.0], tf.float32)})
    request.model_spec.name = "half_plus_two"
    log = official.PredictionLog(predict_log=official.PredictLog(request=request))
    path = tmp_path / WARMUP_FILE
    path.parent.mkdir()
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(log.SerializeToString())
    report = warm_up(half_plus_two, tmp_path, WarmupOptions())
    assert (report.mode, report.records, report.calls) == ("file", 1, 1)


BAD_RECORDS = {
    "missing signature": (
        predict_record("nope", x=np.ones(1, np.float32)),
        "predict, signature nope",
        'Serving signature name: "nope" not found in signature def (the model has: classify_x2_to_y3, '
        "classify_x_to_y, regress_x2_to_y3, regress_x_to_y, regress_x_to_y2, serving_default)",
    ),
    "wrong input name": (
        predict_record(z=np.ones(1, np.float32)),
        "predict, signature serving_default",
        "input size does not match signature: 1!=1 len({z}) != len({x}). Sent extra: {z}. Missing but required: {x}.",
    ),
    "wrong input shape": (
        predict_record(x=np.ones((2, 2), np.float32)),
        "predict, signature serving_default",
        "input 'x' has shape [2,2] but the signature expects [-1]",
    ),
    "unknown output": (
        predict_record(output_filter=["nope"], x=np.ones(1, np.float32)),
        "predict, signature serving_default",
        "output tensor alias not found in signature: nope Outputs expected to be in the set {y}.",
    ),
    "classify on a regress signature": (
        classify_record("regress_x_to_y", {"x": 1.0}),
        "classify, signature regress_x_to_y",
        "Expected classification signature method_name to be tensorflow/serving/classify. "
        "Was: tensorflow/serving/regress",
    ),
    "example without a required feature": (
        regress_record("regress_x_to_y", {"x2": 1.0}),
        "regress, signature regress_x_to_y",
        "Feature: x (data type: float) is required but could not be found.",
    ),
}


@pytest.mark.tensorflow
@pytest.mark.parametrize(("record", "where", "cause"), BAD_RECORDS.values(), ids=BAD_RECORDS.keys())
def test_a_bad_record_fails_naming_the_record_and_the_signature(
    half_plus_two: Servable, tmp_path: Path, record: bytes, where: str, cause: str
) -> None:
    write_warmup(tmp_path, [predict_record(x=np.ones(1, np.float32)), record])
    message = failure(half_plus_two, tmp_path)
    assert message.startswith(f"warm-up failed on record 1 ({where}): "), message
    assert cause in message


@pytest.mark.parametrize(
    ("log", "error"),
    [
        (
            prediction_log_pb2.PredictionLog(
                multi_inference_log=prediction_log_pb2.MultiInferenceLog(
                    request=inference_pb2.MultiInferenceRequest()
                )
            ),
            "warm-up failed on record 0 (multi_inference_log): unsupported warm-up record type; modelserve "
            "replays predict_log, classify_log, regress_log records",
        ),
        (
            prediction_log_pb2.PredictionLog(session_run_log=prediction_log_pb2.SessionRunLog()),
            "warm-up failed on record 0 (session_run_log): unsupported warm-up record type; modelserve "
            "replays predict_log, classify_log, regress_log records",
        ),
        (
            prediction_log_pb2.PredictionLog(),
            "warm-up failed on record 0 (no log type): the PredictionLog holds no request (no log_type is set)",
        ),
    ],
    ids=["multi_inference_log", "session_run_log", "empty"],
)
def test_records_that_cannot_be_replayed_fail_by_type(tmp_path: Path, log: Any, error: str) -> None:
    servable = OnnxRuntime().load(_tiny_identity(tmp_path), SETTINGS)
    write_warmup(tmp_path, [log.SerializeToString()])
    assert failure(servable, tmp_path) == error


def test_a_record_that_is_not_a_prediction_log(tmp_path: Path) -> None:
    servable = OnnxRuntime().load(_tiny_identity(tmp_path), SETTINGS)
    # Field 1 (log_metadata), length-delimited, announcing 127 bytes that are not there.
    write_warmup(tmp_path, [predict_record(x=np.ones((1, 2), np.float32)), b"\x0a\x7f"])
    message = failure(servable, tmp_path)
    assert message.startswith("warm-up failed on record 1: not a tensorflow.serving.PredictionLog ("), message


def test_a_corrupt_warmup_file_fails_before_any_call(tmp_path: Path) -> None:
    servable = OnnxRuntime().load(_tiny_identity(tmp_path), SETTINGS)
    path = write_warmup(tmp_path, [])
    record = predict_record(x=np.ones((1, 2), np.float32))
    path.write_bytes(encode_record(record) + encode_record(record)[:-1])
    size = len(record) + 4
    assert failure(servable, tmp_path) == (
        f"warm-up failed: corrupt TFRecord file {path}: record 1: truncated data ({size - 1} of {size} bytes)"
    )


@pytest.mark.parametrize(("max_records", "written"), [(2, 3), (1000, 1001)])
def test_more_records_than_the_limit_fail(tmp_path: Path, max_records: int, written: int) -> None:
    servable = OnnxRuntime().load(_tiny_identity(tmp_path), SETTINGS)
    path = write_warmup(tmp_path, [predict_record(x=np.ones((1, 2), np.float32))] * written)
    options = WarmupOptions(max_records=max_records) if max_records != 1000 else WarmupOptions()
    assert failure(servable, tmp_path, options) == (
        f"warm-up failed: {path} has more than {max_records} records, the most a warm-up file may hold"
    )
    write_warmup(tmp_path, [predict_record(x=np.ones((1, 2), np.float32))] * max_records)
    assert warm_up(servable, tmp_path, options).calls == max_records


def test_a_warmup_file_fixes_a_model_the_generic_warmup_cannot_run(
    reshape_to_two_rows: Servable, tmp_path: Path
) -> None:
    write_warmup(tmp_path, [predict_record(x=np.zeros((2, 3), np.float32))])
    assert warm_up(reshape_to_two_rows, tmp_path, WarmupOptions()).calls == 1


# -- generic warm-up -----------------------------------------------------------------------------------------


def _tiny_identity(tmp_path: Path) -> Path:
    """x float [batch, 2] -> y, the same."""
    return write_onnx(
        tmp_path / "identity" / "1",
        [helper.make_node("Identity", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        [],
    )


def test_generic_warmup_on_the_tiny_onnx_model(tiny_repo: Path) -> None:
    servable = OnnxRuntime().load(tiny_repo / "1", SETTINGS)
    report = warm_up(servable, tiny_repo / "1", WarmupOptions(iterations=5))
    assert (report.mode, report.calls, report.records, dict(report.skipped_signatures)) == (
        "generic",
        1,
        0,
        {},
    )
    assert report.describe().startswith("called 1 of 1 signatures with zero-filled inputs in ")


def test_generic_warmup_synthesises_every_kind_of_input(tmp_path: Path) -> None:
    """Numbers, bools and strings; symbolic, unknown and fixed dimensions; unknown rank."""
    version_dir = write_onnx(
        tmp_path / "mixed" / "1",
        [
            helper.make_node("Identity", ["floats"], ["floats_out"]),
            helper.make_node("Identity", ["ints"], ["ints_out"]),
            helper.make_node("Not", ["flags"], ["flags_out"]),
            helper.make_node("Identity", ["names"], ["names_out"]),
        ],
        [
            helper.make_tensor_value_info("floats", TensorProto.FLOAT, ["batch", None, 4]),
            helper.make_tensor_value_info("ints", TensorProto.INT64, None),
            helper.make_tensor_value_info("flags", TensorProto.BOOL, [3]),
            helper.make_tensor_value_info("names", TensorProto.STRING, ["batch"]),
        ],
        [
            helper.make_tensor_value_info("floats_out", TensorProto.FLOAT, ["batch", None, 4]),
            helper.make_tensor_value_info("ints_out", TensorProto.INT64, None),
            helper.make_tensor_value_info("flags_out", TensorProto.BOOL, [3]),
            helper.make_tensor_value_info("names_out", TensorProto.STRING, ["batch"]),
        ],
        [],
    )
    report = warm_up(OnnxRuntime().load(version_dir, SETTINGS), version_dir, WarmupOptions())
    assert (report.mode, report.calls) == ("generic", 1)


@pytest.mark.tensorflow
def test_generic_warmup_on_a_saved_model_skips_the_example_signatures(
    half_plus_two: Servable, tmp_path: Path
) -> None:
    report = warm_up(half_plus_two, tmp_path, WarmupOptions())
    assert (report.mode, report.calls) == ("generic", 1)
    assert sorted(report.skipped_signatures) == [
        "classify_x2_to_y3",
        "classify_x_to_y",
        "regress_x2_to_y3",
        "regress_x_to_y",
        "regress_x_to_y2",
    ]
    assert "serialized tf.Examples" in report.skipped_signatures["classify_x_to_y"]
    assert report.describe().endswith(
        "; skipped classify_x2_to_y3, classify_x_to_y, regress_x2_to_y3, regress_x_to_y, regress_x_to_y2: "
        "a classify or regress signature takes serialized tf.Examples, which cannot be made up"
    )
    assert report.describe().startswith("called 1 of 6 signatures with zero-filled inputs in ")


def test_generic_warmup_failure_says_how_to_fix_it(reshape_to_two_rows: Servable, tmp_path: Path) -> None:
    message = failure(reshape_to_two_rows, tmp_path)
    assert message.startswith("warm-up with zero-filled inputs failed on signature serving_default: "), (
        message
    )
    assert "Reshape" in message
    assert message.endswith(HINT)


# -- options -------------------------------------------------------------------------------------------------


def test_disabled_warmup_reads_and_runs_nothing(reshape_to_two_rows: Servable, tmp_path: Path) -> None:
    (tmp_path / WARMUP_FILE).parent.mkdir()
    (tmp_path / WARMUP_FILE).write_bytes(b"not a TFRecord file")
    assert warm_up(reshape_to_two_rows, tmp_path, WarmupOptions(enabled=False)) == WarmupReport("skipped")


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"iterations": 0}, "warm-up iterations must be at least 1, got 0"),
        ({"max_records": 0}, "warm-up max_records must be at least 1, got 0"),
    ],
)
def test_options_are_validated(options: dict[str, Any], error: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        WarmupOptions(**options)
    assert info.value.message == error
