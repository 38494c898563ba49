"""Where a version's batching parameters come from: per-model file, model config, server file."""

from __future__ import annotations

from pathlib import Path

from modelserve.batching.plan import PER_MODEL_FILE, BatchingPlan
from modelserve.config.model_config import ModelConfig
from modelserve.config.text_files import BatchingParameters, parse_model_server_config


def test_disabled_means_no_batcher(tmp_path: Path) -> None:
    assert BatchingPlan(enabled=False).options_for(ModelConfig("m", "/m"), tmp_path) is None


def test_precedence_per_model_file_then_model_config_then_server_file(tmp_path: Path) -> None:
    config = parse_model_server_config(
        """
        model_config_list {
          config { name: "a" base_path: "/a" }
          config {
            name: "b" base_path: "/b"
            batching_parameters { max_batch_size { value: 16 } batch_timeout_micros { value: 250 } }
          }
        }
        """
    )
    a, b = config.models
    plan = BatchingPlan(enabled=True, parameters=BatchingParameters(max_batch_size=64), default_threads=3)
    options_a = plan.options_for(a, tmp_path)
    assert options_a is not None and options_a.max_batch_size == 64 and options_a.adaptive
    assert options_a.threads == 3
    options_b = plan.options_for(b, tmp_path)
    assert options_b is not None and options_b.max_batch_size == 16
    assert options_b.timeout_seconds == 0.00025
    (tmp_path / PER_MODEL_FILE).write_text("max_batch_size { value: 8 }")
    assert plan.options_for(b, tmp_path).max_batch_size == 16  # type: ignore[union-attr]  # flag off
    per_model = BatchingPlan(enabled=True, per_model_files=True)
    assert per_model.options_for(b, tmp_path).max_batch_size == 8  # type: ignore[union-attr]
