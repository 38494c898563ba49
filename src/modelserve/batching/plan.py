"""Which versions are batched, and how: ``--enable_batching`` and the three places parameters come from.

In order of precedence, for one model version:

1. ``<version dir>/batching_params.pbtxt`` when ``--enable_per_model_batching_parameters`` is set
   (TF Serving's per-model file, shipped inside the model export);
2. the model's ``batching_parameters`` in ``--model_config_file`` (a modelserve extension);
3. ``--batching_parameters_file``, or TF Serving's defaults without one.

Parameters without ``batch_timeout_micros`` select the adaptive policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from modelserve.batching.options import BatchingOptions
from modelserve.config.model_config import ModelConfig
from modelserve.config.text_files import BatchingParameters, read_batching_parameters

PER_MODEL_FILE = "batching_params.pbtxt"


@dataclass(frozen=True, slots=True)
class BatchingPlan:
    """The server-wide batching settings; ``options_for`` resolves them for one version at load time."""

    enabled: bool = False
    parameters: BatchingParameters = field(default_factory=BatchingParameters)
    per_model_files: bool = False
    default_threads: int = 1

    def options_for(self, model: ModelConfig, version_path: Path) -> BatchingOptions | None:
        """The version's batching options, or None when it is served without batching."""
        if not self.enabled:
            return None
        parameters = model.batching_parameters or self.parameters
        per_model = version_path / PER_MODEL_FILE
        if self.per_model_files and per_model.is_file():
            parameters = read_batching_parameters(per_model)
        return BatchingOptions.from_parameters(parameters, self.default_threads)
