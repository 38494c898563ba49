"""Generate demo and benchmark models in TF Serving's layout (``<base_path>/<version>/``).

- ``tiny``: ONNX MLP 64 → 256 → 256 → 10 with fixed random weights: pure serving overhead.
- ``digits``: an MLP trained on scikit-learn's bundled handwritten digits, exported to ONNX.
- ``half_plus_two``: TF Serving's classic test SavedModel (y = 0.5·x + 2) with predict, classify and
  regress signatures; needs TensorFlow.

ONNX graphs are written with ``onnx.helper`` from numpy weights, so no converter package is needed.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from modelserve.errors import FailedPrecondition

# ONNX Runtime 1.17+ reads IR version 9 / opset 17 everywhere.
_IR_VERSION = 9
_OPSET = 17


def _mlp_graph(
    name: str, weights: list[tuple[np.ndarray, np.ndarray]], input_name: str
) -> tuple[list[Any], list[Any], str]:
    """Gemm + ReLU layers; returns (graph nodes, initializers, last tensor name)."""
    from onnx import numpy_helper
    from onnx.helper import make_node

    nodes, initializers = [], []
    previous = input_name
    for index, (weight, bias) in enumerate(weights):
        w_name, b_name, out = f"{name}_w{index}", f"{name}_b{index}", f"{name}_z{index}"
        initializers += [
            numpy_helper.from_array(weight.astype(np.float32), w_name),
            numpy_helper.from_array(bias.astype(np.float32), b_name),
        ]
        nodes.append(make_node("Gemm", [previous, w_name, b_name], [out]))
        previous = out
        if index < len(weights) - 1:
            nodes.append(make_node("Relu", [out], [f"{out}_relu"]))
            previous = f"{out}_relu"
    return nodes, initializers, previous


def _save(graph: Any, base_path: Path, version: int) -> Path:
    import onnx
    from onnx.helper import make_model, make_opsetid

    model = make_model(graph, opset_imports=[make_opsetid("", _OPSET)], producer_name="modelserve")
    model.ir_version = _IR_VERSION
    onnx.checker.check_model(model)
    target = base_path / str(version)
    target.mkdir(parents=True, exist_ok=True)
    onnx.save(model, target / "model.onnx")
    return target / "model.onnx"


def write_tiny_mlp(base_path: Path, version: int = 1, seed: int = 0) -> Path:
    """ONNX MLP 64 → 256 → 256 → 10 (ReLU, logits): ``x`` float32 [batch, 64] → ``y`` [batch, 10]."""
    from onnx import TensorProto
    from onnx.helper import make_graph, make_node, make_tensor_value_info

    rng = np.random.default_rng(seed)
    sizes = [64, 256, 256, 10]
    weights = [
        (rng.standard_normal((a, b)) * np.sqrt(2.0 / a), rng.standard_normal(b) * 0.01)
        for a, b in itertools.pairwise(sizes)
    ]
    nodes, initializers, last = _mlp_graph("tiny", weights, "x")
    nodes.append(make_node("Identity", [last], ["y"]))
    graph = make_graph(
        nodes,
        "tiny_mlp",
        [make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
        initializers,
    )
    return _save(graph, base_path, version)


def train_digits_mlp(seed: int = 0) -> tuple[Any, float]:
    """Train an MLP on scikit-learn's bundled digits; returns (classifier, held-out accuracy)."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
        from sklearn.neural_network import MLPClassifier
    except ImportError as exc:
        raise FailedPrecondition(
            "the digits demo model needs scikit-learn: pip install 'modelserve[demo]'"
        ) from exc
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data / 16.0, digits.target, test_size=0.25, random_state=seed
    )
    classifier = MLPClassifier(hidden_layer_sizes=(64,), max_iter=400, random_state=seed)
    classifier.fit(x_train, y_train)
    return classifier, float(classifier.score(x_test, y_test))


def write_digits_classifier(base_path: Path, version: int = 1, seed: int = 0) -> Path:
    """ONNX digits classifier: ``images`` float32 [batch, 64] (pixels 0..16, as in the dataset) →
    ``probabilities`` float32 [batch, 10] and ``classes`` int64 [batch]."""
    from onnx import TensorProto, numpy_helper
    from onnx.helper import make_graph, make_node, make_tensor_value_info

    classifier, _accuracy = train_digits_mlp(seed)
    layers = list(zip(classifier.coefs_, classifier.intercepts_, strict=True))
    # Pixels arrive as 0..16; the network was trained on 0..1.
    scale = numpy_helper.from_array(np.array(1.0 / 16.0, dtype=np.float32), "pixel_scale")
    nodes = [make_node("Mul", ["images", "pixel_scale"], ["scaled"])]
    mlp_nodes, initializers, logits = _mlp_graph("digits", layers, "scaled")
    nodes += mlp_nodes
    nodes += [
        make_node("Softmax", [logits], ["probabilities"], axis=-1),
        make_node("ArgMax", ["probabilities"], ["classes"], axis=-1, keepdims=0),
    ]
    graph = make_graph(
        nodes,
        "digits_mlp",
        [make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 64])],
        [
            make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10]),
            make_tensor_value_info("classes", TensorProto.INT64, ["batch"]),
        ],
        [scale, *initializers],
    )
    return _save(graph, base_path, version)


def write_half_plus_two(base_path: Path, version: int = 123) -> Path:
    """TF Serving's ``saved_model_half_plus_two``: y = 0.5·x + 2 as a TF1-style SavedModel.

    Signatures as in TF Serving's test data: ``serving_default`` (predict x → y), ``classify_x_to_y``,
    ``regress_x_to_y``, ``regress_x_to_y2`` (y2 = 0.5·x + 3), ``regress_x2_to_y3`` and
    ``classify_x2_to_y3`` (y3 = 0.5·x2 + 4) over serialized tf.Examples.
    """
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise FailedPrecondition(
            "half_plus_two needs TensorFlow: pip install 'modelserve[tensorflow]'"
        ) from exc
    v1 = tf.compat.v1
    target = base_path / str(version)
    if target.exists():
        return target
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as session:
        a = v1.Variable(0.5, name="a")
        b = v1.Variable(2.0, name="b")
        c = v1.Variable(3.0, name="c")
        serialized = v1.placeholder(tf.string, name="tf_example")
        features = v1.parse_example(
            serialized,
            {
                "x": v1.FixedLenFeature([1], tf.float32),
                "x2": v1.FixedLenFeature([1], tf.float32, default_value=[0.0]),
            },
        )
        x = tf.identity(features["x"], name="x_feature")
        x2 = tf.identity(features["x2"], name="x2_feature")
        y = tf.add(tf.multiply(a, x), b, name="y")
        y2 = tf.add(tf.multiply(a, x), c, name="y2")
        y3 = tf.add(tf.multiply(a, x2), tf.add(c, 1.0), name="y3")
        x_input = v1.placeholder(tf.float32, shape=[None], name="x")
        # Predict works on a plain float vector fed directly, like the original's "x" alias.
        y_predict = tf.add(tf.multiply(a, x_input), b, name="y_predict")
        session.run(v1.global_variables_initializer())

        info = v1.saved_model.utils.build_tensor_info
        sig = v1.saved_model.signature_def_utils
        predict = sig.predict_signature_def({"x": x_input}, {"y": y_predict})
        regress = sig.regression_signature_def(serialized, y)
        regress2 = sig.regression_signature_def(serialized, y2)
        regress3 = sig.regression_signature_def(serialized, y3)
        classify = sig.build_signature_def(
            inputs={"inputs": info(serialized)},
            outputs={"scores": info(y)},
            method_name="tensorflow/serving/classify",
        )
        classify3 = sig.build_signature_def(
            inputs={"inputs": info(serialized)},
            outputs={"scores": info(y3)},
            method_name="tensorflow/serving/classify",
        )
        builder = v1.saved_model.Builder(str(target))
        builder.add_meta_graph_and_variables(
            session,
            [v1.saved_model.tag_constants.SERVING],
            signature_def_map={
                "serving_default": predict,
                "classify_x_to_y": classify,
                "regress_x_to_y": regress,
                "regress_x_to_y2": regress2,
                "regress_x2_to_y3": regress3,
                "classify_x2_to_y3": classify3,
            },
            strip_default_attrs=True,
        )
        builder.save()
    return target


def write_demo_repository(root: Path) -> dict[str, Path]:
    """Write every demo model under ``root``; half_plus_two only when TensorFlow is importable."""
    models = {"digits": root / "digits", "tiny": root / "tiny"}
    write_digits_classifier(models["digits"], version=1)
    write_tiny_mlp(models["tiny"], version=1)
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        return models
    models["half_plus_two"] = root / "half_plus_two"
    write_half_plus_two(models["half_plus_two"], version=123)
    return models
