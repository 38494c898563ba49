"""TF Serving's status and metadata JSON, printed the way TF Serving prints them.

TF Serving renders these protos with protobuf's JSON printer (``add_whitespace``: one-space indentation,
default values included, a trailing newline). For metadata it prints ``model_spec`` and the
``SignatureDefMap`` separately and glues them by hand (``http_rest_api_util.cc``), which gives the odd
``}\\n,\\n"metadata": {"signature_def": {`` seam; we reproduce it so scripts that parse or diff it keep
working. Field order follows protobuf's printer: regular fields by number, then the set oneof field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from modelserve.codecs.tf_dtypes import tf_type_name
from modelserve.core.signature import Signature, TensorSpec
from modelserve.core.version_state import VersionStatus


def _print(message: Any) -> str:
    return json.dumps(message, indent=1, ensure_ascii=False) + "\n"


def encode_model_status(statuses: Sequence[VersionStatus]) -> bytes:
    """GetModelStatusResponse JSON."""
    body = {
        "model_version_status": [
            {
                "version": str(status.version),
                "state": status.state.value,
                "status": {"error_code": status.error_code.name, "error_message": status.error_message},
            }
            for status in statuses
        ]
    }
    return _print(body).encode()


def _tensor_info(spec: TensorSpec) -> dict[str, Any]:
    if spec.shape is None:
        shape: dict[str, Any] = {"dim": [], "unknown_rank": True}
    else:
        shape = {
            "dim": [{"size": str(-1 if d is None else d), "name": ""} for d in spec.shape],
            "unknown_rank": False,
        }
    return {"dtype": tf_type_name(spec.dtype), "tensor_shape": shape, "name": spec.tensor_name or spec.name}


def signature_def_map(signatures: Mapping[str, Signature]) -> dict[str, Any]:
    """Our signatures as TF's SignatureDefMap JSON object."""
    return {
        "signature_def": {
            name: {
                "inputs": {alias: _tensor_info(spec) for alias, spec in signature.inputs.items()},
                "outputs": {alias: _tensor_info(spec) for alias, spec in signature.outputs.items()},
                "method_name": signature.method_name,
                # SignatureDef.defaults (TF >= 2.14): printed empty, as TF Serving prints default values.
                "defaults": {},
            }
            for name, signature in signatures.items()
        }
    }


def encode_model_metadata(model: str, version: int, signatures: Mapping[str, Signature]) -> bytes:
    """GetModelMetadataResponse JSON with the signature_def metadata field."""
    model_spec = _print({"name": model, "signature_name": "", "version": str(version)})
    signature_defs = _print(signature_def_map(signatures))
    text = '{\n"model_spec":' + model_spec + ',\n"metadata": {"signature_def": ' + signature_defs + "}\n}\n"
    return text.encode()
