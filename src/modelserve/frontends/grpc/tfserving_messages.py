"""Core values <-> TF Serving's gRPC messages (``tensorflow_serving/apis``), apart from tensors.

The proto twins of the REST codec's helpers: ``ModelSpec`` in and out, ``Input`` examples to the string
tensor a classify/regress signature takes, classify/regress outputs to ``ClassificationResult`` /
``RegressionResult`` (TF Serving's PostProcess*Result checks and messages), signatures to the packed
``SignatureDefMap`` of GetModelMetadata, and version statuses to ``GetModelStatusResponse``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from modelserve.codecs.tensor_values import shape_text
from modelserve.codecs.tf_dtypes import tf_type_name, tf_type_number
from modelserve.codecs.tf_input import serialized_examples as serialized_examples
from modelserve.core.inference import ModelSpec
from modelserve.core.signature import Signature, TensorSpec
from modelserve.core.version_state import VersionStatus
from modelserve.errors import InvalidArgument
from modelserve.proto.tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    regression_pb2,
)

SIGNATURE_DEF_FIELD = "signature_def"


def model_spec(proto: Any) -> ModelSpec:
    """The core's ModelSpec from a ``tensorflow.serving.ModelSpec``; a name is required."""
    if not proto.name:
        raise InvalidArgument("Missing ModelSpec")  # TF Serving's wording
    choice = proto.WhichOneof("version_choice")
    if choice == "version":
        return ModelSpec(proto.name, version=proto.version.value)
    if choice == "version_label":
        return ModelSpec(proto.name, label=proto.version_label)
    return ModelSpec(proto.name)


def served_spec(target: Any, model: str, version: int, signature_name: str) -> None:
    """Fill a response's ``model_spec`` with what was actually served, as TF Serving does."""
    target.name = model
    target.version.value = version
    target.signature_name = signature_name


def new_model_spec(model: str, version: int, signature_name: str) -> Any:
    spec = model_pb2.ModelSpec()
    served_spec(spec, model, version, signature_name)
    return spec


# -- classify / regress --------------------------------------------------------------------------------------


def _check_2d(tensor: np.ndarray | None, what: str, num_examples: int) -> None:
    if tensor is None:
        return
    if tensor.ndim != 2:
        raise InvalidArgument(
            f"Expected Tensor shape: [batch_size num_classes] but got {shape_text(tensor.shape)}"
        )
    if tensor.shape[0] != num_examples:
        raise InvalidArgument(f"Expected {what} output batch size of {num_examples}. Got: {tensor.shape[0]}")


def _label(value: Any) -> str:
    if type(value) is bytes:
        return value.decode("utf-8", "replace")
    return str(value)


def classification_result(outputs: Mapping[str, np.ndarray], num_examples: int, target: Any) -> None:
    """Fill a ``ClassificationResult`` from a classify signature's ``classes`` and/or ``scores``."""
    classes = outputs.get("classes")
    scores = outputs.get("scores")
    if classes is None and scores is None:
        raise InvalidArgument("Expected classification signature outputs to contain classes or scores")
    _check_2d(classes, "classes", num_examples)
    _check_2d(scores, "scores", num_examples)
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise InvalidArgument(
            "Tensors class and score should match in dim_size(1). "
            f"Got {classes.shape[1]} vs. {scores.shape[1]}"
        )
    width = (scores if scores is not None else classes).shape[1]  # type: ignore[union-attr]
    labels = classes.tolist() if classes is not None else None
    values = scores.astype(np.float32, copy=False).tolist() if scores is not None else None
    for i in range(num_examples):
        classifications = target.classifications.add()
        for c in range(width):
            item = classifications.classes.add()
            if labels is not None:
                item.label = _label(labels[i][c])
            if values is not None:
                item.score = values[i][c]


def regression_result(outputs: Mapping[str, np.ndarray], num_examples: int, target: Any) -> None:
    """Fill a ``RegressionResult`` from a regress signature's ``outputs`` tensor."""
    values = outputs.get("outputs")
    if values is None:
        raise InvalidArgument("Expected output Tensor 'outputs' in the regression signature")
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise InvalidArgument(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
            + shape_text(values.shape)
        )
    if values.shape[0] != num_examples:
        raise InvalidArgument(
            f"Input batch size did not match output batch size: {num_examples} vs. {values.shape[0]}"
        )
    if values.dtype.kind not in "fiu":
        raise InvalidArgument(f"Expected output Tensor of DT_FLOAT.  Got: {tf_type_name(values.dtype)}")
    for value in values.astype(np.float32, copy=False).reshape(-1).tolist():
        target.regressions.add().value = value


def new_classification_result() -> Any:
    return classification_pb2.ClassificationResult()


def new_regression_result() -> Any:
    return regression_pb2.RegressionResult()


# -- metadata / status ---------------------------------------------------------------------------------------


def _tensor_info(spec: TensorSpec, target: Any) -> None:
    target.name = spec.tensor_name or spec.name
    target.dtype = tf_type_number(spec.dtype)
    if spec.shape is None:
        target.tensor_shape.unknown_rank = True
        return
    for dim in spec.shape:
        target.tensor_shape.dim.add().size = -1 if dim is None else dim


def signature_def_map(signatures: Mapping[str, Signature]) -> Any:
    """Our signatures as a ``tensorflow.serving.SignatureDefMap``."""
    result = get_model_metadata_pb2.SignatureDefMap()
    for name, signature in signatures.items():
        definition: Any = result.signature_def[name]
        definition.method_name = signature.method_name
        for alias, spec in signature.inputs.items():
            _tensor_info(spec, definition.inputs[alias])
        for alias, spec in signature.outputs.items():
            _tensor_info(spec, definition.outputs[alias])
    return result


def model_metadata_response(
    model: str, version: int, signatures: Mapping[str, Signature], fields: Sequence[str]
) -> Any:
    """GetModelMetadataResponse; only the ``signature_def`` field exists (as in TF Serving)."""
    if not fields:
        raise InvalidArgument("GetModelMetadataRequest must specify at least one metadata_field")
    for field in fields:
        if field != SIGNATURE_DEF_FIELD:
            raise InvalidArgument(f"Metadata field {field} is not supported")
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = model
    response.model_spec.version.value = version
    # Any.Pack writes type.googleapis.com/tensorflow.serving.SignatureDefMap, which the client unpacks.
    response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_def_map(signatures))
    return response


def model_status_response(statuses: Sequence[VersionStatus]) -> Any:
    response = get_model_status_pb2.GetModelStatusResponse()
    states = get_model_status_pb2.ModelVersionStatus.State
    for status in statuses:
        entry = response.model_version_status.add()
        entry.version = status.version
        entry.state = states.Value(status.state.value)
        entry.status.error_code = int(status.error_code)
        entry.status.error_message = status.error_message
    return response
