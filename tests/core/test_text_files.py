"""TF Serving's text-protobuf files, parsed with the examples from TF Serving's documentation."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelserve.config.model_config import VersionPolicy
from modelserve.config.text_files import (
    parse_batching_parameters,
    parse_model_server_config,
    read_model_server_config,
    read_monitoring_config,
)
from modelserve.errors import InvalidArgument

# g3doc/serving_config.md
DOC_CONFIG = """
model_config_list {
  config {
    name: 'my_first_model'
    base_path: '/tmp/my_first_model/'
    model_platform: 'tensorflow'
  }
  config {
    name: 'my_second_model'
    base_path: '/tmp/my_second_model/'
    model_platform: 'tensorflow'
  }
}
"""

DOC_LABELS = """
model_config_list {
  config {
    name: 'my_model'
    base_path: '/models/my_model'
    model_platform: 'tensorflow'
    model_version_policy {
      specific {
        versions: 42
        versions: 43
      }
    }
    version_labels {
      key: 'stable'
      value: 42
    }
    version_labels {
      key: 'canary'
      value: 43
    }
  }
}
"""


def test_doc_example_two_models() -> None:
    config = parse_model_server_config(DOC_CONFIG)
    assert [m.name for m in config.models] == ["my_first_model", "my_second_model"]
    first = config.models[0]
    assert first.base_path == "/tmp/my_first_model/"
    assert first.platform == "tensorflow"
    assert first.version_policy == VersionPolicy()


def test_doc_example_specific_versions_and_labels() -> None:
    (model,) = parse_model_server_config(DOC_LABELS).models
    assert model.version_policy == VersionPolicy(kind="specific", versions=(42, 43))
    assert dict(model.version_labels) == {"stable": 42, "canary": 43}


@pytest.mark.parametrize(
    ("policy_text", "expected"),
    [
        ("latest { num_versions: 2 }", VersionPolicy(kind="latest", num_versions=2)),
        ("latest { }", VersionPolicy()),
        ("all { }", VersionPolicy(kind="all")),
    ],
)
def test_policies(policy_text: str, expected: VersionPolicy) -> None:
    text = f"model_config_list {{ config {{ name: 'm' base_path: '/m' model_version_policy {{ {policy_text} }} }} }}"
    (model,) = parse_model_server_config(text).models
    assert model.version_policy == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model_config_list { config { name: 'm' base_path: '/m' bogus: 1 } }", "bogus"),
        ("model_config_list { config { name: 'm' } }", "base_path must not be empty"),
        ("model_config_list { config { base_path: '/m' } }", "model name '' is invalid"),
        (
            "model_config_list { config { name: 'm' base_path: '/a' } config { name: 'm' base_path: '/b' } }",
            "appears more than once",
        ),
        ("model_config_list { config { name: 'm' base_path: '/a' ", "invalid model config file"),
    ],
)
def test_bad_config_names_the_problem(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_model_server_config(text)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="cannot read model config file"):
        read_model_server_config(tmp_path / "nope.config")


def test_batching_parameters_doc_example() -> None:
    params = parse_batching_parameters(
        """
        max_batch_size { value: 128 }
        batch_timeout_micros { value: 0 }
        max_enqueued_batches { value: 1000000 }
        num_batch_threads { value: 8 }
        allowed_batch_sizes: 32
        allowed_batch_sizes: 128
        pad_variable_length_inputs: true
        """
    )
    assert params.max_batch_size == 128
    assert params.batch_timeout_micros == 0 and params.timeout_given
    assert params.max_enqueued_batches == 1000000
    assert params.num_batch_threads == 8
    assert params.allowed_batch_sizes == (32, 128)
    assert params.pad_variable_length_inputs


def test_batching_defaults_and_validation() -> None:
    params = parse_batching_parameters("")
    assert (params.max_batch_size, params.max_enqueued_batches, params.timeout_given) == (1000, 10, False)
    with pytest.raises(InvalidArgument, match="increasing"):
        parse_batching_parameters(
            "max_batch_size { value: 8 } allowed_batch_sizes: 8 allowed_batch_sizes: 4 allowed_batch_sizes: 8"
        )


def test_monitoring_config(tmp_path: Path) -> None:
    path = tmp_path / "monitoring.config"
    path.write_text('prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }')
    config = read_monitoring_config(path)
    assert config.prometheus_enabled and config.prometheus_path == "/monitoring/prometheus/metrics"
    path.write_text("prometheus_config { enable: true }")
    assert read_monitoring_config(path).prometheus_path == "/monitoring/prometheus/metrics"
