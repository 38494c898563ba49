"""examples/embeddings: the torch-free MiniLM graph, its handler, and both behind a real model server.

The ground truth is ``examples/embeddings/reference.py``, BERT in float64 numpy from the same weights
(sentence-transformers is not a test dependency; ``compare.py`` checks against it, see the README).
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from examples_support import EXAMPLES, InProcessModel, gateway, load_example, post, through

from modelserve.client import Client
from modelserve.gateway import Handler, HttpError

MIN_COSINE = 0.9999
MAX_ABS_DIFF = 1e-4
LONG = " ".join(["The gateway tokenizes, the model server computes, and the client waits."] * 30)
SENTENCES = [
    "A model server batches requests from many clients into one call of the model.",
    "Hello!",
    "",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "東京は日本の首都です。",
    "Emoji 🙂 and symbols ∑ ∫ √ are rare in the vocabulary.",
    "How do I reset my password?",
    LONG,  # over 256 tokens: truncated
]


def embed(handler: Handler, model: Any, texts: list[str]) -> np.ndarray:
    answer = through(handler, model, post({"texts": texts}))
    assert isinstance(answer, dict)
    assert answer["dimensions"] == 384
    return np.asarray(answer["embeddings"], dtype=np.float64)


def agreement(actual: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """(max abs difference, min cosine similarity) of two sets of embeddings."""
    cosine = (actual * expected).sum(axis=1) / (
        np.linalg.norm(actual, axis=1) * np.linalg.norm(expected, axis=1)
    )
    return float(np.abs(actual - expected).max()), float(cosine.min())


def test_prepare_writes_a_checked_graph_with_the_documented_signature(
    minilm_base: Path, examples_out: Path
) -> None:
    model = onnx.load(str(minilm_base / "1" / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= 17
    assert any(node.op_type == "LayerNormalization" for node in model.graph.node)

    def signature(values: Any) -> list[tuple[str, int, list[Any]]]:
        return [
            (
                v.name,
                v.type.tensor_type.elem_type,
                [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
            )
            for v in values
        ]

    assert signature(model.graph.input) == [
        ("input_ids", onnx.TensorProto.INT64, ["batch", "sequence"]),
        ("attention_mask", onnx.TensorProto.INT64, ["batch", "sequence"]),
    ]
    assert signature(model.graph.output) == [("embeddings", onnx.TensorProto.FLOAT, ["batch", 384])]

    # A second run reuses the file instead of rebuilding it.
    before = (minilm_base / "1" / "model.onnx").stat().st_mtime_ns
    assert load_example("embeddings", "prepare").prepare(examples_out) == minilm_base
    assert (minilm_base / "1" / "model.onnx").stat().st_mtime_ns == before


def test_embeddings_match_the_numpy_reference(embeddings_handler: Handler, minilm: InProcessModel) -> None:
    prepare = load_example("embeddings", "prepare")
    reference = load_example("embeddings", "reference")
    weights = prepare.load_weights()
    inputs = embeddings_handler.preprocess(post({"texts": SENTENCES}))
    assert isinstance(inputs, dict)
    # The reference sees each text alone, without padding; the graph sees them padded into one batch.
    lengths = inputs["attention_mask"].sum(axis=1)
    expected = np.concatenate(
        [
            reference.embed(
                weights, inputs["input_ids"][i : i + 1, :n], inputs["attention_mask"][i : i + 1, :n]
            )
            for i, n in enumerate(lengths)
        ]
    )

    actual = embed(embeddings_handler, minilm, SENTENCES)

    diff, cosine = agreement(actual, expected)
    assert diff <= MAX_ABS_DIFF and cosine >= MIN_COSINE, (diff, cosine)
    np.testing.assert_allclose(np.linalg.norm(actual, axis=1), 1.0, atol=1e-6)


def test_tokens_are_bert_uncased_and_long_texts_are_truncated_to_256(embeddings_handler: Handler) -> None:
    inputs = embeddings_handler.preprocess(post({"texts": ["Hello World!", LONG]}))
    assert isinstance(inputs, dict)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    assert ids.dtype == mask.dtype == np.int64
    assert ids.shape == mask.shape == (2, 256)  # padded to the longest, which is cut at 256
    assert ids[0, :5].tolist() == [101, 7592, 2088, 999, 102]  # [CLS] hello world ! [SEP]
    assert ids[0, 5:].tolist() == [0] * 251 and mask[0].tolist() == [1] * 5 + [0] * 251
    assert ids[1, -1] == 102 and mask[1].all()


def test_padding_changes_no_embedding(embeddings_handler: Handler, minilm: InProcessModel) -> None:
    """What lets the server zero-pad requests of different lengths into one batch."""
    alone = embed(embeddings_handler, minilm, ["A cat sits on the mat."])
    beside_a_long_text = embed(embeddings_handler, minilm, ["A cat sits on the mat.", LONG])
    inputs = embeddings_handler.preprocess(post({"texts": ["A cat sits on the mat."]}))
    assert isinstance(inputs, dict)
    # More zero padding, as the server's batcher adds to merge it with longer requests.
    padded = {name: np.pad(value, ((0, 0), (0, 20))) for name, value in inputs.items()}
    np.testing.assert_allclose(beside_a_long_text[0], alone[0], atol=1e-6)
    np.testing.assert_allclose(minilm(padded)["embeddings"][0], alone[0], atol=1e-6)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "request body is not valid JSON"),
        (["a", "b"], 'send a JSON object {"texts": ["a sentence", ...]}'),
        ({"text": ["a"]}, 'send a JSON object {"texts": ["a sentence", ...]}'),
        ({"texts": "a sentence"}, '"texts" must be a list of strings, got str'),
        ({"texts": None}, '"texts" must be a list of strings, got NoneType'),
        ({"texts": []}, '"texts" is empty: send at least one text'),
        ({"texts": ["x"] * 65}, '"texts" has 65 items; at most 64 per request'),
        ({"texts": ["ok", 3]}, '"texts"[1] is int, expected a string'),
        ({"texts": ["ok", ["nested"]]}, '"texts"[1] is list, expected a string'),
    ],
)
def test_bad_requests_get_400_then_a_good_one_works(
    embeddings_handler: Handler, minilm: InProcessModel, body: Any, message: str
) -> None:
    with pytest.raises(HttpError) as error:
        embeddings_handler.preprocess(post(body))
    assert error.value.status == 400
    assert error.value.message.startswith(message), error.value.message
    assert embed(embeddings_handler, minilm, ["x"] * 64).shape == (64, 384)


def test_through_a_model_server_with_padding_batching(
    start_server: Any, tmp_path: Path, minilm_base: Path, embeddings_handler: Handler, minilm: InProcessModel
) -> None:
    """Concurrent requests of different lengths, merged by the server's batcher, answer what ONNX Runtime does."""
    batching = tmp_path / "batching.config"
    batching.write_text(
        "max_batch_size { value: 64 }\nbatch_timeout_micros { value: 5000 }\npad_variable_length_inputs: true\n"
    )
    server = start_server(
        "--model_name=minilm",
        f"--model_base_path={minilm_base}",
        "--enable_batching",
        f"--batching_parameters_file={batching}",
    )
    requests = [[text] for text in SENTENCES] + [SENTENCES[:3], SENTENCES[3:]]

    def call(texts: list[str]) -> np.ndarray:
        with Client(server.url) as client:
            return embed(embeddings_handler, lambda inputs: client.predict("minilm", inputs), texts)

    with ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(call, requests))
    for texts, answer in zip(requests, answers, strict=True):
        np.testing.assert_allclose(answer, embed(embeddings_handler, minilm, texts), atol=1e-5)
    with Client(f"grpc://{server.grpc_target}") as client:
        answer = embed(embeddings_handler, lambda inputs: client.predict("minilm", inputs), SENTENCES)
    np.testing.assert_allclose(answer, embed(embeddings_handler, minilm, SENTENCES), atol=1e-5)


def test_through_the_gateway_and_a_model_server(
    start_server: Any, tmp_path: Path, minilm_base: Path, embeddings_handler: Handler, minilm: InProcessModel
) -> None:
    """The README's curl command, then a bad request and its 400, over gRPC from the gateway."""
    server = start_server("--model_name=minilm", f"--model_base_path={minilm_base}")
    with gateway("embeddings", f"grpc://{server.grpc_target}", tmp_path) as url:
        reply = httpx.post(url, json={"texts": SENTENCES}, timeout=30)
        assert reply.status_code == 200, reply.text
        assert sorted(reply.json()) == ["dimensions", "embeddings"]
        np.testing.assert_allclose(
            reply.json()["embeddings"], embed(embeddings_handler, minilm, SENTENCES), atol=1e-6
        )
        bad = httpx.post(url, json={"texts": ["ok", 3]}, timeout=30)
        assert bad.status_code == 400
        assert bad.json() == {"error": '"texts"[1] is int, expected a string'}


def test_run_py_builds_then_starts_the_stack(examples_out: Path, minilm_base: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "embeddings" / "run.py"), "--out", str(examples_out), "--dry-run",
         "--worker-class", "gevent", "--upstream", "grpc"],
        capture_output=True, text=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert f"minilm: reusing {minilm_base}/1/model.onnx" in done.stdout
    handler = EXAMPLES / "embeddings" / "handler.py"
    assert done.stdout.splitlines()[-1] == (
        f"$ {sys.executable} -m modelserve stack {handler} --model_base_path={minilm_base} --model_name=minilm "
        "--worker-class gevent --upstream grpc"
    )
