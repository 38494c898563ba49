"""The same forward pass as ``prepare.build_model``, in plain numpy (float64): the tests' ground truth.

Written from the BERT definition rather than from the ONNX graph, so that a mistake in the graph (a
transposed weight, a wrong mask, pooling over padding) shows up as a difference. float64 makes it
independent of the order float32 sums are taken in; what is left is the ONNX model's float32 rounding.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf  # type: ignore[import-untyped]  # comes with scikit-learn

HEADS = 12
LAYERS = 6
EPS = 1e-12
# Weights cast to float64 whole; the embedding tables are indexed first, then cast (30522 rows is 94 MB).
_CAST = ("embeddings.LayerNorm", "encoder.")


def _layer_norm(x: np.ndarray, weights: dict[str, np.ndarray], prefix: str) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + EPS) * weights[f"{prefix}.weight"] + weights[f"{prefix}.bias"]


def _linear(x: np.ndarray, weights: dict[str, np.ndarray], prefix: str) -> np.ndarray:
    return x @ weights[f"{prefix}.weight"].T + weights[f"{prefix}.bias"]


def embed(weights: dict[str, np.ndarray], input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Sentence embeddings [batch, 384]: BERT, mean pooling over the masked tokens, L2 normalisation."""
    batch, sequence = input_ids.shape
    token_type_ids = np.zeros_like(input_ids)
    x = (
        weights["embeddings.word_embeddings.weight"][input_ids].astype(np.float64)
        + weights["embeddings.token_type_embeddings.weight"][token_type_ids]
        + weights["embeddings.position_embeddings.weight"][np.arange(sequence)]
    )
    w = {name: value.astype(np.float64) for name, value in weights.items() if name.startswith(_CAST)}
    x = _layer_norm(x, w, "embeddings.LayerNorm")
    mask = attention_mask.astype(np.float64)
    hidden = x.shape[-1]
    head = hidden // HEADS

    def heads(t: np.ndarray) -> np.ndarray:  # [batch, sequence, hidden] -> [batch, heads, sequence, head]
        # Contiguous, so that the stacked matmuls below run in BLAS rather than numpy's generic loop.
        return np.ascontiguousarray(t.reshape(batch, sequence, HEADS, head).transpose(0, 2, 1, 3))

    for index in range(LAYERS):
        prefix = f"encoder.layer.{index}"
        q, k, v = (
            heads(_linear(x, w, f"{prefix}.attention.self.{name}")) for name in ("query", "key", "value")
        )
        scores = q @ np.ascontiguousarray(k.transpose(0, 1, 3, 2)) / np.sqrt(head)
        scores = np.where(mask[:, None, None, :] > 0, scores, -np.inf)  # padding gets no attention
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        probabilities = scores / scores.sum(axis=-1, keepdims=True)
        context = (probabilities @ v).transpose(0, 2, 1, 3).reshape(batch, sequence, hidden)
        x = _layer_norm(
            _linear(context, w, f"{prefix}.attention.output.dense") + x,
            w,
            f"{prefix}.attention.output.LayerNorm",
        )
        inner = _linear(x, w, f"{prefix}.intermediate.dense")
        inner = 0.5 * inner * (1.0 + erf(inner / np.sqrt(2.0)))
        x = _layer_norm(_linear(inner, w, f"{prefix}.output.dense") + x, w, f"{prefix}.output.LayerNorm")

    pooled = (x * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
