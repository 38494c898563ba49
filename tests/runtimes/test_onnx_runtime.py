"""The ONNX Runtime adapter against ONNX Runtime called directly on the same files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from modelserve.core.servable import RuntimeSettings
from modelserve.core.signature import DEFAULT_SIGNATURE, PREDICT_METHOD, STRING
from modelserve.errors import FailedPrecondition, Internal, InvalidArgument, NotFound
from modelserve.runtimes import get_runtime
from modelserve.runtimes.onnx import OnnxRuntime, OnnxServable

SETTINGS = RuntimeSettings(intra_op_threads=1, use_gpu=False)


def load(version_dir: Path, settings: RuntimeSettings = SETTINGS) -> OnnxServable:
    return OnnxRuntime().load(version_dir, settings)


def run_direct(model_file: Path, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed), strict=True))


def write_graph(
    version_dir: Path,
    nodes: list[Any],
    inputs: list[Any],
    outputs: list[Any],
    initializers: list[Any] | None = None,
    file_name: str = "model.onnx",
) -> Path:
    """A small hand-written model (opset 17, IR 9) in ``version_dir``."""
    graph = helper.make_graph(nodes, "test", inputs, outputs, initializers or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    version_dir.mkdir(parents=True, exist_ok=True)
    onnx.save(model, version_dir / file_name)
    return version_dir / file_name


def tensor(name: str, elem_type: int, shape: list[Any] | None) -> Any:
    return helper.make_tensor_value_info(name, elem_type, shape)


@pytest.fixture(scope="module")
def tiny(tiny_repo: Path) -> OnnxServable:
    return load(tiny_repo / "1")


@pytest.fixture(scope="module")
def digits(digits_repo: Path) -> OnnxServable:
    return load(digits_repo / "1")


# -- signatures ----------------------------------------------------------------------------------------------


def test_registry_resolves_every_spelling_to_this_runtime() -> None:
    for name in ("onnx", "onnxruntime_onnx", "ONNXRuntime"):
        runtime = get_runtime(name)
        assert isinstance(runtime, OnnxRuntime)
        assert runtime.platform == "onnxruntime_onnx"


def test_tiny_signature(tiny: OnnxServable) -> None:
    assert tiny.platform == "onnxruntime_onnx"
    assert list(tiny.signatures) == [DEFAULT_SIGNATURE]
    signature = tiny.signatures[DEFAULT_SIGNATURE]
    assert signature.method_name == PREDICT_METHOD
    assert signature.batched
    (x,) = signature.inputs.values()
    (y,) = signature.outputs.values()
    assert (x.name, x.dtype, x.shape, x.tensor_name) == ("x", np.float32, (None, 64), "x")
    assert (y.name, y.dtype, y.shape, y.tensor_name) == ("y", np.float32, (None, 10), "y")


def test_digits_signature_keeps_graph_order_and_dtypes(digits: OnnxServable) -> None:
    signature = digits.signatures[DEFAULT_SIGNATURE]
    assert {n: (s.dtype, s.shape) for n, s in signature.inputs.items()} == {
        "images": (np.float32, (None, 64))
    }
    assert [(n, s.dtype, s.shape) for n, s in signature.outputs.items()] == [
        ("probabilities", np.float32, (None, 10)),
        ("classes", np.int64, (None,)),
    ]
    assert signature.batched


@pytest.mark.parametrize(
    ("x_shape", "y_shape", "expected_x", "batched"),
    [
        (["n", 3], ["n", 3], (None, 3), True),
        ([None, 3], [None, 3], (None, 3), True),
        ([2, 3], [2, 3], (2, 3), False),  # a fixed first dimension is not a batch dimension
        ([3], [3], (3,), False),
        ([], [], (), False),  # scalar
        (None, None, None, False),  # unknown rank: no promise about dimension 0
    ],
)
def test_shapes_and_batched(
    tmp_path: Path, x_shape: Any, y_shape: Any, expected_x: Any, batched: bool
) -> None:
    write_graph(
        tmp_path,
        [helper.make_node("Identity", ["x"], ["y"])],
        [tensor("x", TensorProto.FLOAT, x_shape)],
        [tensor("y", TensorProto.FLOAT, y_shape)],
    )
    signature = load(tmp_path).signatures[DEFAULT_SIGNATURE]
    assert signature.inputs["x"].shape == expected_x
    assert signature.batched is batched


def test_fixed_output_batch_dimension_is_not_batched(tmp_path: Path) -> None:
    # ReduceSum over the batch: the output cannot be split back into one result per request.
    write_graph(
        tmp_path,
        [helper.make_node("ReduceSum", ["x"], ["y"], keepdims=1)],
        [tensor("x", TensorProto.FLOAT, ["n", 3])],
        [tensor("y", TensorProto.FLOAT, [1, 1])],
    )
    assert load(tmp_path).signatures[DEFAULT_SIGNATURE].batched is False


def test_outputs_without_a_tensor_type_are_left_out(tmp_path: Path) -> None:
    write_graph(
        tmp_path,
        [
            helper.make_node("Identity", ["x"], ["y"]),
            helper.make_node("SequenceConstruct", ["x"], ["seq"]),
        ],
        [tensor("x", TensorProto.FLOAT, ["n", 2])],
        [
            tensor("y", TensorProto.FLOAT, ["n", 2]),
            helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, None),
        ],
    )
    servable = load(tmp_path)
    assert list(servable.signatures[DEFAULT_SIGNATURE].outputs) == ["y"]
    x = np.ones((1, 2), np.float32)
    np.testing.assert_array_equal(servable.predict(DEFAULT_SIGNATURE, {"x": x}, ["y"])["y"], x)


# -- predict -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 5])
def test_predict_equals_onnxruntime(tiny: OnnxServable, tiny_repo: Path, batch: int) -> None:
    x = np.random.default_rng(batch).standard_normal((batch, 64)).astype(np.float32)
    got = tiny.predict(DEFAULT_SIGNATURE, {"x": x}, ["y"])
    assert list(got) == ["y"]
    assert got["y"].dtype == np.float32
    assert got["y"].shape == (batch, 10)
    np.testing.assert_allclose(
        got["y"], run_direct(tiny_repo / "1" / "model.onnx", {"x": x})["y"], rtol=1e-5, atol=1e-6
    )


def test_predict_equals_numpy_math(tiny: OnnxServable, tiny_repo: Path) -> None:
    model = onnx.load(str(tiny_repo / "1" / "model.onnx"))
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    hidden = np.maximum(x @ weights["tiny_w0"] + weights["tiny_b0"], 0)
    hidden = np.maximum(hidden @ weights["tiny_w1"] + weights["tiny_b1"], 0)
    logits = hidden @ weights["tiny_w2"] + weights["tiny_b2"]
    np.testing.assert_allclose(
        tiny.predict(DEFAULT_SIGNATURE, {"x": x}, ["y"])["y"], logits, rtol=1e-4, atol=1e-5
    )


def test_predict_a_subset_of_outputs(digits: OnnxServable, digits_repo: Path) -> None:
    from modelserve.demo.models import digits_split

    images = digits_split().x_test[:4]
    expected = run_direct(digits_repo / "1" / "model.onnx", {"images": images})
    got = digits.predict(DEFAULT_SIGNATURE, {"images": images}, ["classes"])
    assert list(got) == ["classes"]
    np.testing.assert_array_equal(got["classes"], expected["classes"])
    both = digits.predict(DEFAULT_SIGNATURE, {"images": images}, ["classes", "probabilities"])
    assert list(both) == ["classes", "probabilities"]
    np.testing.assert_allclose(both["probabilities"], expected["probabilities"], rtol=1e-5, atol=1e-7)


def test_digits_accuracy_through_the_runtime(digits: OnnxServable) -> None:
    from modelserve.demo.models import digits_split

    split = digits_split()
    classes = digits.predict(DEFAULT_SIGNATURE, {"images": split.x_test}, ["classes"])["classes"]
    assert float(np.mean(classes == split.y_test)) > 0.9


def test_predict_is_thread_safe(tiny: OnnxServable, tiny_repo: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    xs = [np.random.default_rng(i).standard_normal((2, 64)).astype(np.float32) for i in range(32)]
    expected = [run_direct(tiny_repo / "1" / "model.onnx", {"x": x})["y"] for x in xs]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda x: tiny.predict(DEFAULT_SIGNATURE, {"x": x}, ["y"])["y"], xs))
    for got, want in zip(results, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_thread_settings_give_the_same_results(tiny_repo: Path) -> None:
    x = np.random.default_rng(3).standard_normal((4, 64)).astype(np.float32)
    reference = load(tiny_repo / "1").predict(DEFAULT_SIGNATURE, {"x": x}, ["y"])["y"]
    for settings in (
        RuntimeSettings(use_gpu=False),  # ONNX Runtime's defaults
        RuntimeSettings(intra_op_threads=2, inter_op_threads=2, use_gpu=False),  # parallel execution mode
    ):
        got = load(tiny_repo / "1", settings).predict(DEFAULT_SIGNATURE, {"x": x}, ["y"])["y"]
        np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-6)


def test_unknown_signature_is_not_found(tiny: OnnxServable) -> None:
    with pytest.raises(NotFound, match="other"):
        tiny.predict("other", {"x": np.zeros((1, 64), np.float32)}, ["y"])


def test_input_the_model_rejects_is_invalid_argument(tiny: OnnxServable) -> None:
    # The core validates shapes first; this is what happens if a bad one gets through anyway.
    with pytest.raises(InvalidArgument, match="dimensions"):
        tiny.predict(DEFAULT_SIGNATURE, {"x": np.zeros((1, 3), np.float32)}, ["y"])
    with pytest.raises(InvalidArgument, match="missing"):
        tiny.predict(DEFAULT_SIGNATURE, {}, ["y"])


def test_failure_inside_the_model_is_internal(tmp_path: Path) -> None:
    write_graph(
        tmp_path,
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        [tensor("x", TensorProto.FLOAT, ["n"]), tensor("shape", TensorProto.INT64, [2])],
        [tensor("y", TensorProto.FLOAT, None)],
    )
    servable = load(tmp_path)
    # Declared without a shape; ONNX Runtime infers the rank from the shape input's length.
    assert servable.signatures[DEFAULT_SIGNATURE].outputs["y"].shape == (None, None)
    feed: dict[str, np.ndarray] = {"x": np.zeros(4, np.float32), "shape": np.array([3, 2], np.int64)}
    with pytest.raises(Internal, match="cannot be reshaped"):
        servable.predict(DEFAULT_SIGNATURE, feed, ["y"])


# -- strings -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def strings(tmp_path_factory: pytest.TempPathFactory) -> OnnxServable:
    """Strings in; the same strings reversed (a Slice with step -1) and their count out."""
    version_dir = tmp_path_factory.mktemp("strings") / "1"
    constants = [
        onnx.numpy_helper.from_array(np.array([-1], np.int64), "start"),
        onnx.numpy_helper.from_array(np.array([np.iinfo(np.int64).min], np.int64), "end"),
        onnx.numpy_helper.from_array(np.array([0], np.int64), "axis"),
        onnx.numpy_helper.from_array(np.array([-1], np.int64), "step"),
    ]
    write_graph(
        version_dir,
        [
            helper.make_node("Slice", ["text", "start", "end", "axis", "step"], ["reversed"]),
            helper.make_node("Size", ["text"], ["count"]),
        ],
        [tensor("text", TensorProto.STRING, ["n"])],
        [tensor("reversed", TensorProto.STRING, ["n"]), tensor("count", TensorProto.INT64, [])],
        constants,
    )
    return load(version_dir)


def test_string_signature(strings: OnnxServable) -> None:
    signature = strings.signatures[DEFAULT_SIGNATURE]
    assert signature.inputs["text"].dtype == STRING
    assert signature.outputs["reversed"].dtype == STRING
    assert signature.outputs["count"].shape == ()
    assert signature.batched is False  # a scalar output


def test_strings_round_trip_as_bytes(strings: OnnxServable) -> None:
    text = np.array([b"hello", "wörld".encode(), b""], dtype=object)
    got = strings.predict(DEFAULT_SIGNATURE, {"text": text}, ["reversed", "count"])
    assert got["reversed"].dtype == object
    assert got["reversed"].tolist() == [b"", "wörld".encode(), b"hello"]
    assert int(got["count"]) == 3
    assert text.tolist()[0] == b"hello"  # the caller's array is left alone


def test_strings_that_are_not_utf8_are_invalid_argument(strings: OnnxServable) -> None:
    with pytest.raises(InvalidArgument, match=r"'text'.*UTF-8"):
        strings.predict(DEFAULT_SIGNATURE, {"text": np.array([b"\xff"], dtype=object)}, ["reversed"])


# -- loading -------------------------------------------------------------------------------------------------


def test_corrupt_model_file_is_invalid_argument_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"this is not a protobuf \x00\xff" * 10)
    with pytest.raises(InvalidArgument, match="cannot load ONNX model") as info:
        load(tmp_path)
    assert str(tmp_path / "model.onnx") in info.value.message


def test_truncated_model_file_is_invalid_argument(tmp_path: Path, tiny_repo: Path) -> None:
    data = (tiny_repo / "1" / "model.onnx").read_bytes()
    (tmp_path / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidArgument, match=r"model\.onnx"):
        load(tmp_path)


def test_missing_model_file_is_failed_precondition(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match="no ONNX model"):
        load(tmp_path)


def test_the_only_onnx_file_is_used_whatever_its_name(tmp_path: Path) -> None:
    write_graph(
        tmp_path,
        [helper.make_node("Identity", ["a"], ["b"])],
        [tensor("a", TensorProto.INT32, ["n"])],
        [tensor("b", TensorProto.INT32, ["n"])],
        file_name="exported.onnx",
    )
    got = load(tmp_path).predict(DEFAULT_SIGNATURE, {"a": np.arange(3, dtype=np.int32)}, ["b"])
    np.testing.assert_array_equal(got["b"], [0, 1, 2])
    write_graph(
        tmp_path,
        [helper.make_node("Identity", ["a"], ["b"])],
        [tensor("a", TensorProto.INT32, ["n"])],
        [tensor("b", TensorProto.INT32, ["n"])],
        file_name="other.onnx",
    )
    with pytest.raises(FailedPrecondition, match=r"several \.onnx files"):
        load(tmp_path)


def test_memory_is_the_size_on_disk(tiny: OnnxServable, tiny_repo: Path) -> None:
    assert tiny.memory_bytes() == (tiny_repo / "1" / "model.onnx").stat().st_size


def test_close_is_idempotent_and_later_calls_fail_clearly(tiny_repo: Path) -> None:
    servable = load(tiny_repo / "1")
    servable.close()
    servable.close()
    with pytest.raises(FailedPrecondition, match="unloaded"):
        servable.predict(DEFAULT_SIGNATURE, {"x": np.zeros((1, 64), np.float32)}, ["y"])
