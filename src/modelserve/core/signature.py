"""Signatures: the named inputs and outputs of a model version, with dtypes and shapes.

A signature is what TF Serving calls a SignatureDef. Every runtime describes its models with these types, so
front-ends can validate and decode requests without knowing the framework.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from modelserve.errors import InvalidArgument

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"

# TF's DT_STRING holds bytes; we carry it as an object array of ``bytes``.
STRING = np.dtype(object)

Dim = int | None
"""One dimension: a size, or None when it varies (TF's -1)."""


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output of a signature.

    ``shape`` is None when even the rank is unknown; a None dimension accepts any size.
    ``tensor_name`` is the framework's own name (TF's ``x:0``), reported in metadata.
    """

    name: str
    dtype: np.dtype
    shape: tuple[Dim, ...] | None
    tensor_name: str = ""

    @property
    def is_string(self) -> bool:
        return self.dtype == STRING

    def accepts_shape(self, shape: tuple[int, ...]) -> bool:
        """True when a tensor of ``shape`` fits this spec (rank and every fixed dimension)."""
        if self.shape is None:
            return True
        if len(shape) != len(self.shape):
            return False
        return all(want is None or want == got for want, got in zip(self.shape, shape, strict=True))

    def shape_text(self) -> str:
        """The shape as TF prints it in error messages, e.g. ``[-1,64]``."""
        if self.shape is None:
            return "<unknown>"
        return "[" + ",".join("-1" if d is None else str(d) for d in self.shape) + "]"


@dataclass(frozen=True, slots=True)
class Signature:
    """A named function of a model version: inputs and outputs keyed by their public (alias) names."""

    name: str
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]
    method_name: str = PREDICT_METHOD
    # Whether dimension 0 of every input and output is the batch dimension (row format, batching).
    batched: bool = field(default=True)


def check_examples_signature(signature: Signature, method: str) -> None:
    """The checks TF Serving's classifier/regressor make before feeding serialized tf.Examples.

    ``method`` is CLASSIFY_METHOD or REGRESS_METHOD; the wording is TF Serving's (classifier.cc,
    regressor.cc).
    """
    if signature.method_name != method:
        kind = "classification" if method == CLASSIFY_METHOD else "regression"
        raise InvalidArgument(
            f"Expected {kind} signature method_name to be {method}. Was: {signature.method_name}"
        )
    if len(signature.inputs) != 1:
        raise InvalidArgument(
            f"Expected one input Tensor in the {signature.name} signature, found {len(signature.inputs)}"
        )
