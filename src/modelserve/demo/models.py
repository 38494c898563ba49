"""Generate demo and benchmark models in TF Serving's layout (``<base_path>/<version>/``), in code.

- ``tiny``: ONNX MLP 64 → 256 → 256 → 10 with fixed random weights: measures pure serving overhead.
- ``digits``: an MLP trained on scikit-learn's bundled handwritten digits, exported to ONNX.
- ``half_plus_two``: TF Serving's classic test SavedModel (y = 0.5·x + 2) with predict, classify and
  regress signatures; needs TensorFlow.

Nothing is downloaded. ONNX graphs are written with ``onnx.helper`` from numpy weights, so no converter
package is needed. Every writer is deterministic and publishes a version atomically: it is built in a hidden
directory beside it and renamed into place, so a server polling ``base_path`` never loads half a version.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelserve.errors import FailedPrecondition

log = logging.getLogger(__name__)

# IR 9 / opset 17 load in every ONNX Runtime this package supports (>= 1.17), including the installed one.
_IR_VERSION = 9
_OPSET = 17


def _publish(base_path: Path, version: int, write: Callable[[Path], None]) -> Path:
    """Run ``write`` into a hidden staging directory, then rename it to ``base_path/<version>``.

    A non-numeric name is ignored by version sources (TF Serving's rule), and the rename is atomic on one
    file system. An existing version is replaced: swapped aside first, then deleted.
    """
    base_path.mkdir(parents=True, exist_ok=True)
    target = base_path / str(version)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{version}-", dir=base_path))
    # mkdtemp makes it private (0700); a server running as another user must be able to read the version.
    staging.chmod(0o755)
    try:
        write(staging)
        old = None
        if target.exists():
            # Renaming onto an empty directory is allowed: a fresh one cannot collide with leftovers.
            old = Path(tempfile.mkdtemp(prefix=f".old-{version}-", dir=base_path))
            os.replace(target, old)
        os.replace(staging, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


# -- ONNX ----------------------------------------------------------------------------------------------------


def _dense_layers(
    prefix: str, layers: list[tuple[np.ndarray, np.ndarray]], input_name: str
) -> tuple[list[Any], list[Any], str]:
    """Gemm layers with ReLU between them (none after the last); returns (nodes, initializers, output)."""
    from onnx import numpy_helper
    from onnx.helper import make_node

    nodes: list[Any] = []
    initializers: list[Any] = []
    previous = input_name
    for index, (weight, bias) in enumerate(layers):
        w_name, b_name, out = f"{prefix}_w{index}", f"{prefix}_b{index}", f"{prefix}_dense{index}"
        initializers += [
            numpy_helper.from_array(np.asarray(weight, dtype=np.float32), w_name),
            numpy_helper.from_array(np.asarray(bias, dtype=np.float32), b_name),
        ]
        nodes.append(make_node("Gemm", [previous, w_name, b_name], [out]))
        previous = out
        if index < len(layers) - 1:
            nodes.append(make_node("Relu", [out], [f"{out}_relu"]))
            previous = f"{out}_relu"
    return nodes, initializers, previous


def _write_onnx(graph: Any, base_path: Path, version: int) -> Path:
    import onnx
    from onnx.helper import make_model, make_opsetid

    model = make_model(graph, opset_imports=[make_opsetid("", _OPSET)], producer_name="modelserve.demo")
    model.ir_version = _IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    target = _publish(base_path, version, lambda staging: onnx.save(model, staging / "model.onnx"))
    return target / "model.onnx"


def write_tiny_mlp(base_path: Path, version: int = 1, seed: int = 0) -> Path:
    """ONNX MLP 64 → 256 → 256 → 10, ReLU, logits out (no softmax); returns the ``model.onnx`` path.

    ``x`` float32 [batch, 64] → ``y`` float32 [batch, 10]. He-initialised random weights from ``seed``:
    the output means nothing, the cost (~10 µs a call) is what benchmarks need.
    """
    from onnx import TensorProto
    from onnx.helper import make_graph, make_node, make_tensor_value_info

    rng = np.random.default_rng(seed)
    sizes = [64, 256, 256, 10]
    layers = [
        (rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in), rng.standard_normal(n_out) * 0.01)
        for n_in, n_out in itertools.pairwise(sizes)
    ]
    nodes, initializers, last = _dense_layers("tiny", layers, "x")
    nodes.append(make_node("Identity", [last], ["y"]))
    graph = make_graph(
        nodes,
        "tiny_mlp",
        [make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
        initializers,
    )
    return _write_onnx(graph, base_path, version)


@dataclass(frozen=True, slots=True)
class DigitsSplit:
    """scikit-learn's 8x8 digits (pixels 0..16), split into training and held-out rows."""

    x_train: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray


def digits_split(seed: int = 0) -> DigitsSplit:
    """The bundled digits data set (no download), 75 % / 25 % stratified split."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise FailedPrecondition(
            "the digits demo model needs scikit-learn: pip install 'modelserve[demo]'"
        ) from exc
    digits = load_digits()
    images = digits.data.astype(np.float32)
    parts = train_test_split(images, digits.target, test_size=0.25, random_state=seed, stratify=digits.target)
    return DigitsSplit(*parts)


@dataclass(frozen=True, slots=True)
class DigitsMLP:
    """A trained digits MLP: Dense layers as (weight [in, out], bias [out]) and its held-out accuracy."""

    layers: list[tuple[np.ndarray, np.ndarray]]
    accuracy: float


def train_digits_mlp(seed: int = 0) -> DigitsMLP:
    """Train a 64 → 64 → 10 ReLU MLP on the digits (about a second), scored on the held-out split."""
    split = digits_split(seed)  # first: it raises the install hint when scikit-learn is missing
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    classifier = MLPClassifier(hidden_layer_sizes=(64,), max_iter=300, random_state=seed)
    with warnings.catch_warnings():
        # Not fully converged at 300 iterations is fine: held-out accuracy is already ~97 %.
        warnings.simplefilter("ignore", ConvergenceWarning)
        # The network sees pixels scaled to 0..1 (it trains better); the ONNX graph does the scaling.
        classifier.fit(split.x_train / 16.0, split.y_train)
    # Label i must be output column i, so that ArgMax yields the digit itself.
    assert list(classifier.classes_) == list(range(10)), classifier.classes_
    accuracy = float(classifier.score(split.x_test / 16.0, split.y_test))
    layers = list(zip(classifier.coefs_, classifier.intercepts_, strict=True))
    return DigitsMLP(layers=layers, accuracy=accuracy)


def write_digits_classifier(base_path: Path, version: int = 1, seed: int = 0) -> Path:
    """Train and export the digits classifier to ONNX; returns the ``model.onnx`` path.

    ``images`` float32 [batch, 64] (pixel values 0..16, as ``load_digits`` gives them) →
    ``probabilities`` float32 [batch, 10] (softmax) and ``classes`` int64 [batch] (the digit).
    The held-out accuracy (~0.97) is logged; ``train_digits_mlp`` returns it.
    """
    from onnx import TensorProto, numpy_helper
    from onnx.helper import make_graph, make_node, make_tensor_value_info

    trained = train_digits_mlp(seed)
    log.info("digits classifier: held-out accuracy %.3f", trained.accuracy)
    scale = numpy_helper.from_array(np.array(1.0 / 16.0, dtype=np.float32), "pixel_scale")
    nodes = [make_node("Mul", ["images", "pixel_scale"], ["scaled"])]
    dense_nodes, initializers, logits = _dense_layers("digits", trained.layers, "scaled")
    nodes += dense_nodes
    nodes += [
        make_node("Softmax", [logits], ["probabilities"], axis=-1),
        make_node("ArgMax", [logits], ["classes"], axis=-1, keepdims=0),
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
    return _write_onnx(graph, base_path, version)


# -- TensorFlow ----------------------------------------------------------------------------------------------


def write_half_plus_two(base_path: Path, version: int = 123) -> Path:
    """TF Serving's ``saved_model_half_plus_two`` as a TF1-style SavedModel; returns the version directory.

    Re-implemented after ``tensorflow_serving/servables/tensorflow/testdata/saved_model_half_plus_two.py``;
    ``classify_x2_to_y3`` is in TensorFlow's checked-in copy (``cc/saved_model/testdata/half_plus_two``).
    Variables a = 0.5, b = 2, c = 3, and a2 = 0.5, c2 = 3 for the x2 path (the original keeps them apart).
    ``tf_example:0`` (string, unknown rank) takes serialized ``tf.Example`` protos with float features
    ``x`` (required) and ``x2`` (optional, default 0)::

        signature          method    input -> output            shape    computes
        serving_default    predict   x:0 -> y:0                 [-1]     y  = 0.5·x + 2
        classify_x_to_y    classify  tf_example:0 -> scores     [-1]     y:0
        regress_x_to_y     regress   tf_example:0 -> outputs    [-1]     y:0
        regress_x_to_y2    regress   tf_example:0 -> outputs    [-1]     y2 = 0.5·x + 3
        regress_x2_to_y3   regress   tf_example:0 -> outputs    [-1, 1]  y3 = 0.5·x2 + 3
        classify_x2_to_y3  classify  tf_example:0 -> scores     [-1, 1]  y3:0

    Two deliberate differences from the original, both so that a server that checks shapes answers the
    requests TF Serving's documentation shows:

    - ``x:0`` is a float [-1] placeholder whose default is ``x`` parsed from the examples; the original's
      ``x:0`` is the parsed [-1, 1] tensor, which TF1 sessions let callers feed at any shape. So ``y:0``
      and ``y2:0`` are [-1] (not [-1, 1]) and ``{"instances": [1.0, 2.0, 5.0]}`` gives ``[2.5, 3.0, 4.5]``.
    - the x2 signatures take ``tf_example:0`` (the original's take ``x2:0``, a float tensor), so that the
      classify and regress APIs, which always send serialized examples, can run them.

    No asset file is written (the original's exercises asset loading, which no server feature needs).
    """
    if not tensorflow_available():
        raise FailedPrecondition("half_plus_two needs TensorFlow: pip install 'modelserve[tensorflow]'")
    import tensorflow as tf

    def write(staging: Path) -> None:
        # SavedModelBuilder insists on creating the export directory itself.
        export_dir = staging / "saved_model"
        tf_log = logging.getLogger("tensorflow")
        level = tf_log.level
        # The v1 API's deprecation notices and "SavedModel written to" lines are noise for demo users.
        tf_log.setLevel(logging.ERROR)
        try:
            _build_half_plus_two(tf, export_dir)
        finally:
            tf_log.setLevel(level)
        for child in export_dir.iterdir():
            os.replace(child, staging / child.name)
        export_dir.rmdir()

    return _publish(base_path, version, write)


def _build_half_plus_two(tf: Any, export_dir: Path) -> None:
    v1 = tf.compat.v1
    predict, classify, regress = (
        v1.saved_model.signature_constants.PREDICT_METHOD_NAME,
        v1.saved_model.signature_constants.CLASSIFY_METHOD_NAME,
        v1.saved_model.signature_constants.REGRESS_METHOD_NAME,
    )
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as session:
        a = v1.Variable(0.5, name="a")
        b = v1.Variable(2.0, name="b")
        c = v1.Variable(3.0, name="c")
        a2 = v1.Variable(0.5, name="a2")
        c2 = v1.Variable(3.0, name="c2")
        # No shape: TF Serving's metadata shows tf_example:0 with unknown rank.
        serialized = v1.placeholder(tf.string, name="tf_example")
        features = v1.io.parse_example(
            serialized,
            {
                "x": v1.io.FixedLenFeature([1], tf.float32),
                "x2": v1.io.FixedLenFeature([1], tf.float32, default_value=[0.0]),
            },
        )
        # Feeding x:0 (predict) bypasses the examples; otherwise x comes from them (classify/regress).
        x = v1.placeholder_with_default(tf.reshape(features["x"], [-1]), shape=[None], name="x")
        y = tf.identity(a * x + b, name="y")
        y2 = tf.identity(a * x + c, name="y2")
        # ParseExampleV2 cannot tell the batch rank from an unknown-rank input; the original's x2 is [-1, 1].
        x2 = tf.reshape(features["x2"], [-1, 1], name="x2")
        y3 = tf.identity(a2 * x2 + c2, name="y3")
        session.run(v1.global_variables_initializer())

        def signature(inputs: dict[str, Any], outputs: dict[str, Any], method: str) -> Any:
            info = v1.saved_model.utils.build_tensor_info
            return v1.saved_model.signature_def_utils.build_signature_def(
                {k: info(t) for k, t in inputs.items()}, {k: info(t) for k, t in outputs.items()}, method
            )

        examples = {"inputs": serialized}
        builder = v1.saved_model.Builder(str(export_dir))
        builder.add_meta_graph_and_variables(
            session,
            [v1.saved_model.tag_constants.SERVING],
            # The builder's default (sharded) saver initialises TensorFlow's eager runtime, after which the
            # thread pools can no longer be sized: ``modelserve demo`` serves from this same process.
            saver=v1.train.Saver(sharded=False, allow_empty=True),
            signature_def_map={
                "serving_default": signature({"x": x}, {"y": y}, predict),
                "classify_x_to_y": signature(examples, {"scores": y}, classify),
                "regress_x_to_y": signature(examples, {"outputs": y}, regress),
                "regress_x_to_y2": signature(examples, {"outputs": y2}, regress),
                "regress_x2_to_y3": signature(examples, {"outputs": y3}, regress),
                "classify_x2_to_y3": signature(examples, {"scores": y3}, classify),
            },
            strip_default_attrs=True,
        )
        builder.save()


def tensorflow_available() -> bool:
    """Whether TensorFlow imports (half_plus_two and the SavedModel runtime need it)."""
    # As the runtime does: TensorFlow's C++ INFO lines would drown the demo's output.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        return False
    return True


def write_demo_repository(root: Path) -> dict[str, Path]:
    """Write every demo model under ``root``; returns model name -> base path.

    ``digits`` and ``tiny`` (ONNX, version 1) always; ``half_plus_two`` (version 123, TF Serving's number)
    when TensorFlow is installed.
    """
    models = {"digits": root / "digits", "tiny": root / "tiny"}
    write_digits_classifier(models["digits"], version=1)
    write_tiny_mlp(models["tiny"], version=1)
    if tensorflow_available():
        models["half_plus_two"] = root / "half_plus_two"
        write_half_plus_two(models["half_plus_two"], version=123)
    return models
