"""The versions ``hot_reload.py`` swaps, and the three ways it publishes them.

Every version is the same MLP, x float32 [-1, 64] -> y [-1, 10] (default 4 hidden layers of 1024: 13 MB of
float32 weights, so loading it takes tens of milliseconds, as a real model's load does), except for the
last layer's bias, which is the version number. Each answer therefore says which version computed it,
independently of the ``x-model-version`` header: a reply labelled with one version but computed by
another is caught.

Versions are serialized before the load starts, into a staging directory on the base path's file system,
so that publishing during the measurement costs the benchmark process little. Three ways to publish:

- ``publish_by_rename``: the files written under a hidden non-integer name inside the base path, then that
  directory renamed to ``<base>/<N>`` (atomic): what a training job should do, and what the docs advise;
- ``publish_aged``: a directory whose files were written long before renamed into place (a version moved
  in from elsewhere on the same file system): its files are older than the server's settle time;
- ``copy_in_place``: ``<base>/<N>/`` created and the model file written into it in chunks over
  ``seconds`` (a slow copy), so the server's polls can see it half-written and only its settle rule
  (``--version_settle_seconds``) keeps it from loading a truncated file.
"""

from __future__ import annotations

import itertools
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

INPUTS = 64
OUTPUTS = 10
MODEL_FILE = "model.onnx"
COPY_CHUNKS = 16
_BIAS = "last_bias"


def build(width: int, layers: int) -> Any:
    """The MLP as an ``onnx.ModelProto`` (fixed random weights); ``stage`` sets its last bias per version."""
    import onnx
    from onnx import TensorProto, numpy_helper
    from onnx.helper import make_graph, make_model, make_node, make_opsetid, make_tensor_value_info

    rng = np.random.default_rng(0)
    sizes = [INPUTS, *([width] * layers), OUTPUTS]
    nodes: list[Any] = []
    initializers: list[Any] = []
    previous = "x"
    for index, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        last = index == len(sizes) - 2
        weight = (rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)).astype(np.float32)
        bias_name = _BIAS if last else f"b{index}"
        initializers += [
            numpy_helper.from_array(weight, f"w{index}"),
            numpy_helper.from_array(np.zeros(n_out, dtype=np.float32), bias_name),
        ]
        out = "y" if last else f"dense{index}"
        nodes.append(make_node("Gemm", [previous, f"w{index}", bias_name], [out]))
        previous = out
        if not last:
            nodes.append(make_node("Relu", [out], [f"relu{index}"]))
            previous = f"relu{index}"
    graph = make_graph(
        nodes,
        "hot_reload_mlp",
        [make_tensor_value_info("x", TensorProto.FLOAT, ["batch", INPUTS])],
        [make_tensor_value_info("y", TensorProto.FLOAT, ["batch", OUTPUTS])],
        initializers,
    )
    model = make_model(graph, opset_imports=[make_opsetid("", 17)], producer_name="modelserve.bench")
    model.ir_version = 9  # loads in every ONNX Runtime the package supports
    onnx.checker.check_model(model)
    return model


def stage(model: Any, staging: Path, versions: range) -> None:
    """Write ``staging/<N>/model.onnx`` for each version, its last bias set to N."""
    (bias,) = (tensor for tensor in model.graph.initializer if tensor.name == _BIAS)
    for version in versions:
        bias.raw_data = np.full(OUTPUTS, version, dtype=np.float32).tobytes()
        directory = staging / str(version)
        directory.mkdir(parents=True)
        (directory / MODEL_FILE).write_bytes(model.SerializeToString())


def request_row() -> np.ndarray:
    """The one row every request sends: 3-decimal values, so JSON carries exactly this float32."""
    return np.round(np.random.default_rng(1).standard_normal((1, INPUTS)), 3).astype(np.float32)


def offline_output(model_file: Path, row: np.ndarray) -> np.ndarray:
    """What in-process ONNX Runtime answers for ``row`` (the server must answer the same)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    (output,) = session.run(["y"], {"x": row})
    return np.asarray(output, dtype=np.float32)


def publish_by_rename(staged: Path, base: Path, version: int) -> float:
    """Write the version under a hidden non-integer name in ``base`` (fresh files, as a trainer writes
    them), then rename it to ``base/<version>`` (atomic); returns when (``time.perf_counter``) it was
    renamed."""
    hidden = base / f".staging-{version}"
    hidden.mkdir()
    for source in staged.iterdir():  # written, not copied with copystat: the mtimes are fresh
        (hidden / source.name).write_bytes(source.read_bytes())
    hidden.rename(base / str(version))
    renamed = time.perf_counter()
    shutil.rmtree(staged)
    return renamed


def publish_aged(staged: Path, base: Path, version: int) -> float:
    """Rename a directory written long before (its files' mtimes are old) to ``base/<version>``; returns
    when it was renamed."""
    staged.rename(base / str(version))
    return time.perf_counter()


def copy_in_place(staged: Path, base: Path, version: int, seconds: float) -> float:
    """Write the version straight into ``base/<version>/`` in COPY_CHUNKS pieces spread over ``seconds``;
    returns when (``time.perf_counter``) its last byte was written: when it was complete on disk."""
    target = base / str(version)
    target.mkdir()
    for source in sorted(staged.iterdir()):
        data = source.read_bytes()
        step = max(1, -(-len(data) // COPY_CHUNKS))
        with open(target / source.name, "wb") as out:
            for index, offset in enumerate(range(0, len(data), step)):
                if index:
                    time.sleep(seconds / COPY_CHUNKS)
                out.write(data[offset : offset + step])
                out.flush()
    complete = time.perf_counter()
    shutil.rmtree(staged)
    return complete


def delete_versions_below(base: Path, version: int) -> None:
    """Remove every version directory older than ``version``: the base path keeps only the newest."""
    for child in base.iterdir():
        if child.name.isdigit() and int(child.name) < version:
            shutil.rmtree(child, ignore_errors=True)
