"""``tensorflow.serving.Input`` (the examples of Classify, Regress and MultiInference) -> a string tensor.

A classify or regress signature takes one string tensor of serialized ``tf.Example`` protos. This is the
conversion both the gRPC front-end and warm-up replay need, kept free of front-end imports.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelserve.errors import InvalidArgument


def serialized_examples(input_proto: Any) -> np.ndarray:
    """The examples of a ``tensorflow.serving.Input`` as a 1-D object array of serialized tf.Examples.

    With a context, each example is the context's bytes followed by the example's: parsing concatenated
    messages merges them, so the example's features win over the context's (TF Serving does the same).
    """
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        serialized = [e.SerializeToString() for e in input_proto.example_list.examples]
    elif kind == "example_list_with_context":
        with_context = input_proto.example_list_with_context
        context = with_context.context.SerializeToString()
        serialized = [context + e.SerializeToString() for e in with_context.examples]
    else:
        serialized = []
    if not serialized:
        raise InvalidArgument("Input is empty")
    tensor = np.empty(len(serialized), dtype=object)
    tensor[:] = serialized
    return tensor
