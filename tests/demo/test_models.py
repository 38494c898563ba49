"""Demo model generators: layout, determinism, and that each model computes what it says."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from modelserve.demo.models import (
    digits_split,
    train_digits_mlp,
    write_demo_repository,
    write_digits_classifier,
    write_tiny_mlp,
)


def session(model_file: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])


def shapes(values: Any) -> dict[str, tuple[Any, ...]]:
    return {v.name: tuple(d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim) for v in values}


def test_tiny_mlp_layout_and_graph(tmp_path: Path) -> None:
    model_file = write_tiny_mlp(tmp_path / "tiny", version=3)
    assert model_file == tmp_path / "tiny" / "3" / "model.onnx"
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == ["3"]  # no staging leftovers
    assert (tmp_path / "tiny" / "3").stat().st_mode & 0o777 == 0o755  # readable by a server of another user
    model = onnx.load(str(model_file))
    onnx.checker.check_model(model)
    assert model.ir_version == 9
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert shapes(model.graph.input) == {"x": ("batch", 64)}
    assert shapes(model.graph.output) == {"y": ("batch", 10)}
    weights = sorted(tuple(t.dims) for t in model.graph.initializer)
    assert weights == sorted([(64, 256), (256,), (256, 256), (256,), (256, 10), (10,)])


def test_tiny_mlp_is_deterministic_and_outputs_logits(tmp_path: Path) -> None:
    first = write_tiny_mlp(tmp_path / "a").read_bytes()
    assert write_tiny_mlp(tmp_path / "b").read_bytes() == first
    assert write_tiny_mlp(tmp_path / "c", seed=1).read_bytes() != first
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    (y,) = session(tmp_path / "a" / "1" / "model.onnx").run(["y"], {"x": x})
    assert y.shape == (4, 10)
    assert not np.allclose(y.sum(axis=1), 1.0)  # logits, not probabilities


def test_rewriting_a_version_replaces_it(tmp_path: Path) -> None:
    base = tmp_path / "tiny"
    write_tiny_mlp(base, version=1, seed=1)
    write_tiny_mlp(base, version=1, seed=2)
    assert sorted(p.name for p in base.iterdir()) == ["1"]
    assert (base / "1" / "model.onnx").read_bytes() == write_tiny_mlp(tmp_path / "other", seed=2).read_bytes()


def test_digits_training_is_accurate_and_deterministic() -> None:
    first = train_digits_mlp()
    assert first.accuracy > 0.9
    second = train_digits_mlp()
    assert second.accuracy == first.accuracy
    for (w1, b1), (w2, b2) in zip(first.layers, second.layers, strict=True):
        np.testing.assert_array_equal(w1, w2)
        np.testing.assert_array_equal(b1, b2)


def test_digits_onnx_graph_and_held_out_accuracy(digits_repo: Path) -> None:
    model_file = digits_repo / "1" / "model.onnx"
    model = onnx.load(str(model_file))
    assert shapes(model.graph.input) == {"images": ("batch", 64)}
    assert shapes(model.graph.output) == {"probabilities": ("batch", 10), "classes": ("batch",)}
    split = digits_split()
    assert split.x_test.dtype == np.float32
    assert split.x_test.max() == 16.0  # raw pixel values: the graph scales them
    probabilities, classes = session(model_file).run(["probabilities", "classes"], {"images": split.x_test})
    assert classes.dtype == np.int64
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(classes, probabilities.argmax(axis=1))
    accuracy = float(np.mean(classes == split.y_test))
    assert accuracy > 0.9
    # The exported graph computes what scikit-learn's network does (float32 may flip one borderline digit).
    assert accuracy == pytest.approx(train_digits_mlp().accuracy, abs=1.5 / len(split.y_test))


def test_digits_classifier_version_argument(tmp_path: Path) -> None:
    model_file = write_digits_classifier(tmp_path / "digits", version=7)
    assert model_file == tmp_path / "digits" / "7" / "model.onnx"


@pytest.mark.tensorflow
def test_half_plus_two_has_tf_servings_signatures(half_plus_two_repo: Path) -> None:
    pytest.importorskip("tensorflow")
    from tensorflow.core.protobuf import saved_model_pb2

    version_dir = half_plus_two_repo / "123"
    assert (version_dir / "saved_model.pb").is_file()
    assert (version_dir / "variables" / "variables.index").is_file()
    proto = saved_model_pb2.SavedModel.FromString((version_dir / "saved_model.pb").read_bytes())
    (meta_graph,) = proto.meta_graphs
    assert list(meta_graph.meta_info_def.tags) == ["serve"]
    table = {
        name: (
            sig.method_name,
            {alias: info.name for alias, info in sig.inputs.items()},
            {alias: info.name for alias, info in sig.outputs.items()},
        )
        for name, sig in meta_graph.signature_def.items()
    }
    examples = {"inputs": "tf_example:0"}
    assert table == {
        "serving_default": ("tensorflow/serving/predict", {"x": "x:0"}, {"y": "y:0"}),
        "classify_x_to_y": ("tensorflow/serving/classify", examples, {"scores": "y:0"}),
        "regress_x_to_y": ("tensorflow/serving/regress", examples, {"outputs": "y:0"}),
        "regress_x_to_y2": ("tensorflow/serving/regress", examples, {"outputs": "y2:0"}),
        "regress_x2_to_y3": ("tensorflow/serving/regress", examples, {"outputs": "y3:0"}),
        "classify_x2_to_y3": ("tensorflow/serving/classify", examples, {"scores": "y3:0"}),
    }
    assert meta_graph.signature_def["classify_x_to_y"].inputs["inputs"].tensor_shape.unknown_rank


@pytest.mark.tensorflow
def test_half_plus_two_computes_with_tensorflow_alone(half_plus_two_repo: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    loaded = tf.saved_model.load(str(half_plus_two_repo / "123"))
    y = loaded.signatures["serving_default"](x=tf.constant([1.0, 2.0, 5.0]))["y"]
    assert y.numpy().tolist() == [2.5, 3.0, 4.5]
    example = tf.train.Example()
    example.features.feature["x"].float_list.value.append(10.0)
    serialized = tf.constant([example.SerializeToString()])
    assert loaded.signatures["regress_x_to_y2"](inputs=serialized)["outputs"].numpy().tolist() == [8.0]
    # x2 absent: its default 0.0 gives y3 = 3.
    assert loaded.signatures["classify_x2_to_y3"](inputs=serialized)["scores"].numpy().tolist() == [[3.0]]


def test_half_plus_two_without_tensorflow_says_how_to_install(
    tmp_path: Path, run_without_tensorflow: Callable[[str], str]
) -> None:
    output = run_without_tensorflow(
        f"""
        from pathlib import Path
        from modelserve.demo.models import tensorflow_available, write_half_plus_two
        from modelserve.errors import FailedPrecondition
        assert not tensorflow_available()
        try:
            write_half_plus_two(Path({str(tmp_path)!r}))
        except FailedPrecondition as exc:
            print(exc.message)
        """
    )
    assert "pip install 'modelserve[tensorflow]'" in output
    assert list(tmp_path.iterdir()) == []


def test_demo_repository(tmp_path: Path) -> None:
    models = write_demo_repository(tmp_path)
    try:
        import tensorflow  # noqa: F401

        expected = {"digits", "tiny", "half_plus_two"}
    except ImportError:
        expected = {"digits", "tiny"}
    assert set(models) == expected
    assert models["digits"] == tmp_path / "digits"
    assert (models["digits"] / "1" / "model.onnx").is_file()
    assert (models["tiny"] / "1" / "model.onnx").is_file()
    if "half_plus_two" in models:
        assert (models["half_plus_two"] / "123" / "saved_model.pb").is_file()
    # Running it again over the same root works (the demo command may be rerun on one directory).
    assert write_demo_repository(tmp_path) == models
