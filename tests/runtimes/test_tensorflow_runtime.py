"""The TensorFlow SavedModel adapter on a TF1-style SavedModel (half_plus_two) and a TF2 one.

Tests that need TensorFlow take the ``tf`` fixture, which skips them where the extra is not installed (CI
installs it); the rest run everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelserve.core.servable import RuntimeSettings
from modelserve.core.signature import (
    CLASSIFY_METHOD,
    DEFAULT_SIGNATURE,
    PREDICT_METHOD,
    REGRESS_METHOD,
    STRING,
)
from modelserve.errors import FailedPrecondition, InvalidArgument, NotFound
from modelserve.runtimes.tensorflow import TensorFlowRuntime, TensorFlowServable, tf_error_message

SETTINGS = RuntimeSettings(intra_op_threads=1, use_gpu=False)


@pytest.fixture(scope="module")
def tf() -> Any:
    return pytest.importorskip("tensorflow")


def load(path: Path, settings: RuntimeSettings = SETTINGS) -> TensorFlowServable:
    return TensorFlowRuntime().load(path, settings)


def examples(tf: Any, *rows: dict[str, float]) -> np.ndarray:
    """Serialized tf.train.Example protos, as the classify and regress APIs send them."""
    serialized = []
    for row in rows:
        example = tf.train.Example()
        for name, value in row.items():
            example.features.feature[name].float_list.value.append(value)
        serialized.append(example.SerializeToString())
    array = np.empty(len(serialized), dtype=object)
    array[:] = serialized
    return array


@pytest.fixture(scope="module")
def half_plus_two(tf: Any, half_plus_two_repo: Path) -> TensorFlowServable:
    return load(half_plus_two_repo / "123")


# -- the module itself ---------------------------------------------------------------------------------------


def test_module_imports_without_tensorflow_and_load_gives_the_install_hint(
    tmp_path: Path, run_without_tensorflow: Callable[[str], str]
) -> None:
    output = run_without_tensorflow(
        f"""
        from pathlib import Path
        from modelserve.core.servable import RuntimeSettings
        from modelserve.errors import FailedPrecondition
        from modelserve.runtimes.tensorflow import TensorFlowRuntime
        try:
            TensorFlowRuntime().load(Path({str(tmp_path)!r}), RuntimeSettings())
        except FailedPrecondition as exc:
            print(exc.message)
        """
    )
    assert "pip install 'modelserve[tensorflow]'" in output


def test_tf_error_message_drops_python_decorations() -> None:
    raw = (
        "Graph execution error:\n\nDetected at node ParseExample/ParseExampleV2 defined at (most recent call "
        'last):\n  File "/x/export.py", line 36, in <module>\n\nName: <unknown>, Feature: x (data type: float) '
        "is required but could not be found.\n\t [[{{node ParseExample/ParseExampleV2}}]] [Op:__inference_pruned_338]"
    )
    assert tf_error_message(Exception(raw)) == (
        "Name: <unknown>, Feature: x (data type: float) is required but could not be found.\n"
        "\t [[{{node ParseExample/ParseExampleV2}}]]"
    )
    assert tf_error_message(Exception("plain message")) == "plain message"
    two_paragraphs = (
        'Graph execution error:\n\nDetected at node n defined at (most recent call last):\n  File "a.py", line 1\n'
        '  File "b.py", line 2\n\nfirst paragraph\n\nsecond paragraph\n\t [[{{node n}}]] [Op:__inference_f_1]'
    )
    assert (
        tf_error_message(Exception(two_paragraphs))
        == "first paragraph\n\nsecond paragraph\n\t [[{{node n}}]]"
    )
    # Real TF separates frames with blank lines, or has none at all.
    spaced = (
        "Graph execution error:\n\nDetected at node r defined at (most recent call last):\n"
        '  File "a.py", line 1, in <module>\n\n  File "b.py", line 2, in f\n\n'
        "Input to reshape is a tensor with 2 values\n\t [[{{node r}}]] [Op:__inference_f_1]"
    )
    assert (
        tf_error_message(Exception(spaced)) == "Input to reshape is a tensor with 2 values\n\t [[{{node r}}]]"
    )
    unavailable = (
        "Graph execution error:\n\nDetected at node r defined at (most recent call last):\n"
        "<stack traces unavailable>\nInput to reshape is a tensor with 2 values\n\t [[{{node r}}]]"
    )
    assert (
        tf_error_message(Exception(unavailable))
        == "Input to reshape is a tensor with 2 values\n\t [[{{node r}}]]"
    )


# -- half_plus_two (TF1-style, SavedModelBuilder) ------------------------------------------------------------


@pytest.mark.tensorflow
def test_half_plus_two_signatures(half_plus_two: TensorFlowServable) -> None:
    assert half_plus_two.platform == "tensorflow"
    signatures = half_plus_two.signatures
    assert list(signatures) == [
        "classify_x2_to_y3",
        "classify_x_to_y",
        "regress_x2_to_y3",
        "regress_x_to_y",
        "regress_x_to_y2",
        "serving_default",
    ]
    predict = signatures[DEFAULT_SIGNATURE]
    assert predict.method_name == PREDICT_METHOD
    assert predict.batched
    (x,) = predict.inputs.values()
    (y,) = predict.outputs.values()
    assert (x.name, x.dtype, x.shape, x.tensor_name) == ("x", np.float32, (None,), "x:0")
    assert (y.name, y.dtype, y.shape, y.tensor_name) == ("y", np.float32, (None,), "y:0")
    expected = {
        "classify_x_to_y": (CLASSIFY_METHOD, "scores", "y:0"),
        "classify_x2_to_y3": (CLASSIFY_METHOD, "scores", "y3:0"),
        "regress_x_to_y": (REGRESS_METHOD, "outputs", "y:0"),
        "regress_x_to_y2": (REGRESS_METHOD, "outputs", "y2:0"),
        "regress_x2_to_y3": (REGRESS_METHOD, "outputs", "y3:0"),
    }
    for name, (method, output, tensor_name) in expected.items():
        signature = signatures[name]
        assert signature.method_name == method
        (inputs,) = signature.inputs.values()
        assert (inputs.name, inputs.dtype, inputs.shape, inputs.tensor_name) == (
            "inputs",
            STRING,
            None,
            "tf_example:0",
        )
        assert list(signature.outputs) == [output]
        assert signature.outputs[output].tensor_name == tensor_name
        assert signature.outputs[output].dtype == np.float32
        assert signature.batched is False  # unknown-rank serialized examples
    assert signatures["regress_x2_to_y3"].outputs["outputs"].shape == (None, 1)


@pytest.mark.tensorflow
def test_predict_is_half_plus_two_and_equals_tensorflow(
    tf: Any, half_plus_two: TensorFlowServable, half_plus_two_repo: Path
) -> None:
    x = np.array([1.0, 2.0, 5.0, -3.5], dtype=np.float32)
    got = half_plus_two.predict(DEFAULT_SIGNATURE, {"x": x}, ["y"])
    assert list(got) == ["y"]
    assert isinstance(got["y"], np.ndarray)
    np.testing.assert_array_equal(got["y"], 0.5 * x + 2)
    direct = tf.saved_model.load(str(half_plus_two_repo / "123")).signatures[DEFAULT_SIGNATURE]
    np.testing.assert_array_equal(got["y"], direct(x=tf.constant(x))["y"].numpy())


@pytest.mark.tensorflow
@pytest.mark.parametrize(
    ("signature", "output", "formula"),
    [
        ("regress_x_to_y", "outputs", lambda x, x2: 0.5 * x + 2),
        ("classify_x_to_y", "scores", lambda x, x2: 0.5 * x + 2),
        ("regress_x_to_y2", "outputs", lambda x, x2: 0.5 * x + 3),
        ("regress_x2_to_y3", "outputs", lambda x, x2: 0.5 * x2 + 3),
        ("classify_x2_to_y3", "scores", lambda x, x2: 0.5 * x2 + 3),
    ],
)
def test_classify_and_regress_on_serialized_examples(
    tf: Any, half_plus_two: TensorFlowServable, signature: str, output: str, formula: Any
) -> None:
    # x2 is optional in the examples (default 0.0).
    rows = [{"x": 1.0}, {"x": 2.0, "x2": 4.0}, {"x": -6.0, "x2": 1.0}]
    got = half_plus_two.predict(signature, {"inputs": examples(tf, *rows)}, [output])[output]
    expected = [formula(row["x"], row.get("x2", 0.0)) for row in rows]
    np.testing.assert_allclose(got.reshape(-1), expected)
    assert got.shape[0] == len(rows)


@pytest.mark.tensorflow
def test_bad_examples_are_invalid_argument_with_tensorflows_message(
    tf: Any, half_plus_two: TensorFlowServable
) -> None:
    with pytest.raises(InvalidArgument) as info:
        half_plus_two.predict("regress_x_to_y", {"inputs": examples(tf, {"x2": 1.0})}, ["outputs"])
    assert "Feature: x (data type: float) is required but could not be found" in info.value.message
    assert "Detected at node" not in info.value.message
    garbage = np.array([b"not a tf.Example"], dtype=object)
    with pytest.raises(InvalidArgument, match="Could not parse example input"):
        half_plus_two.predict("regress_x_to_y", {"inputs": garbage}, ["outputs"])


@pytest.mark.tensorflow
def test_input_that_does_not_fit_the_signature_is_invalid_argument(half_plus_two: TensorFlowServable) -> None:
    with pytest.raises(InvalidArgument, match="serving_default") as info:
        half_plus_two.predict(DEFAULT_SIGNATURE, {"x": np.zeros((2, 2), np.float32)}, ["y"])
    assert "Received args" not in info.value.message


@pytest.mark.tensorflow
def test_unknown_signature_is_not_found(half_plus_two: TensorFlowServable) -> None:
    with pytest.raises(NotFound, match="nope"):
        half_plus_two.predict("nope", {"x": np.zeros(1, np.float32)}, ["y"])


@pytest.mark.tensorflow
def test_memory_close_and_reload(half_plus_two_repo: Path) -> None:
    servable = load(half_plus_two_repo / "123")
    size = sum(p.stat().st_size for p in (half_plus_two_repo / "123").rglob("*") if p.is_file())
    assert servable.memory_bytes() == size
    servable.close()
    servable.close()
    with pytest.raises(FailedPrecondition, match="unloaded"):
        servable.predict(DEFAULT_SIGNATURE, {"x": np.zeros(1, np.float32)}, ["y"])
    # Later settings cannot change TensorFlow's process-wide pools: the load still works (with a warning).
    again = load(half_plus_two_repo / "123", RuntimeSettings(intra_op_threads=3))
    np.testing.assert_array_equal(
        again.predict(DEFAULT_SIGNATURE, {"x": np.ones(1, np.float32)}, ["y"])["y"], [2.5]
    )


# -- a TF2 SavedModel ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tf2_dir(tf: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tf.Module with two signatures: numbers and strings in, a batch and a scalar out."""

    class Model(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = tf.Variable([1.0, 2.0, 3.0])

        @tf.function(
            input_signature=[
                tf.TensorSpec([None, 3], tf.float32, name="features"),
                tf.TensorSpec([None], tf.string, name="names"),
            ]
        )
        def serve(self, features: Any, names: Any) -> dict[str, Any]:
            return {
                "weighted": features * self.scale,
                "greeting": tf.strings.join([b"hello ", names]),
                "ids": tf.strings.length(names, unit="BYTE"),
            }

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="values")])
        def total(self, values: Any) -> dict[str, Any]:
            return {"sum": tf.reduce_sum(values)}

    model = Model()
    path = tmp_path_factory.mktemp("tf2") / "1"
    tf.saved_model.save(model, str(path), signatures={"serving_default": model.serve, "total": model.total})
    return path


@pytest.mark.tensorflow
def test_tf2_signatures_come_from_the_meta_graph(tf2_dir: Path) -> None:
    from tensorflow.core.protobuf import saved_model_pb2

    servable = load(tf2_dir)
    # TF2's initializer signature is not a servable function: hidden, as TF Serving hides it.
    assert list(servable.signatures) == ["serving_default", "total"]
    proto = saved_model_pb2.SavedModel.FromString((tf2_dir / "saved_model.pb").read_bytes())
    (meta_graph,) = proto.meta_graphs
    assert "__saved_model_init_op" in meta_graph.signature_def
    serve = servable.signatures[DEFAULT_SIGNATURE]
    assert serve.method_name == PREDICT_METHOD
    assert list(serve.inputs) == ["features", "names"]  # sorted aliases
    assert list(serve.outputs) == ["greeting", "ids", "weighted"]
    for alias, spec in (*serve.inputs.items(), *serve.outputs.items()):
        kind = meta_graph.signature_def["serving_default"].inputs
        info = kind[alias] if alias in kind else meta_graph.signature_def["serving_default"].outputs[alias]
        assert spec.tensor_name == info.name
    assert serve.inputs["features"].shape == (None, 3)
    assert serve.inputs["features"].tensor_name == "serving_default_features:0"
    assert serve.inputs["names"].dtype == STRING
    assert serve.outputs["greeting"].dtype == STRING
    assert serve.outputs["ids"].dtype == np.int32
    assert serve.batched
    total = servable.signatures["total"]
    assert total.outputs["sum"].shape == ()
    assert total.batched is False


@pytest.mark.tensorflow
def test_tf2_predict_numbers_and_strings(tf2_dir: Path) -> None:
    servable = load(tf2_dir)
    features = np.arange(6, dtype=np.float32).reshape(2, 3)
    names = np.array([b"world", "wörld".encode()], dtype=object)
    got = servable.predict(
        DEFAULT_SIGNATURE, {"features": features, "names": names}, ["weighted", "greeting", "ids"]
    )
    assert list(got) == ["weighted", "greeting", "ids"]
    np.testing.assert_array_equal(got["weighted"], features * [1.0, 2.0, 3.0])
    assert got["greeting"].dtype == object
    assert got["greeting"].tolist() == [b"hello world", "hello wörld".encode()]
    np.testing.assert_array_equal(got["ids"], [5, 6])
    only = servable.predict(DEFAULT_SIGNATURE, {"features": features, "names": names}, ["ids"])
    assert list(only) == ["ids"]
    total = servable.predict("total", {"values": np.array([1, 2, 39], np.int64)}, ["sum"])
    assert total["sum"].shape == ()
    assert int(total["sum"]) == 42


# -- load errors ---------------------------------------------------------------------------------------------


@pytest.mark.tensorflow
def test_tags_must_match_a_meta_graph(tf: Any, half_plus_two_repo: Path) -> None:
    settings = RuntimeSettings(saved_model_tags=("serve", "gpu"), use_gpu=False)
    with pytest.raises(
        FailedPrecondition, match=r"no meta graph with tags \['gpu', 'serve'\].*\[\['serve'\]\]"
    ):
        load(half_plus_two_repo / "123", settings)


@pytest.mark.tensorflow
def test_corrupt_saved_model_is_invalid_argument_naming_the_file(tf: Any, tmp_path: Path) -> None:
    (tmp_path / "saved_model.pb").write_bytes(b"\xff\xfe not a protobuf")
    with pytest.raises(InvalidArgument, match=r"saved_model\.pb") as info:
        load(tmp_path)
    assert str(tmp_path / "saved_model.pb") in info.value.message


@pytest.mark.tensorflow
def test_missing_saved_model_is_failed_precondition(tf: Any, tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match=r"no saved_model\.pb"):
        load(tmp_path)


@pytest.mark.tensorflow
def test_missing_variables_is_invalid_argument(tf: Any, half_plus_two_repo: Path, tmp_path: Path) -> None:
    (tmp_path / "saved_model.pb").write_bytes((half_plus_two_repo / "123" / "saved_model.pb").read_bytes())
    with pytest.raises(InvalidArgument, match="cannot load SavedModel"):
        load(tmp_path)
