"""Read TF Serving's text-protobuf files: ``--model_config_file``, ``--batching_parameters_file``,
``--monitoring_config_file``.

Parsing uses protobuf's ``text_format`` against our copies of TF Serving's messages, so every file a
TF Serving user already has is accepted as is; the result is converted to our frozen dataclasses.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format

from modelserve.config.model_config import ModelConfig, ServingConfig, TrafficSplit, VersionPolicy
from modelserve.errors import InvalidArgument
from modelserve.proto.tensorflow_serving.config import (
    model_server_config_pb2,
    monitoring_config_pb2,
)
from modelserve.proto.tensorflow_serving.servables import batching_parameters_pb2

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


def read_text_file(path: str | Path, what: str) -> str:
    """A config file's text; InvalidArgument naming the file when it cannot be read."""
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise InvalidArgument(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from exc


def _parse(text: str, message: object, what: str, path: str | Path) -> None:
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise InvalidArgument(f"invalid {what} {str(path)!r}: {exc}") from exc


def parse_model_server_config(text: str, source: str | Path = "<string>") -> ServingConfig:
    """Parse a ``ModelServerConfig`` in text format into a ``ServingConfig``."""
    proto = model_server_config_pb2.ModelServerConfig()
    _parse(text, proto, "model config file", source)
    if proto.WhichOneof("config") == "custom_model_config":
        raise InvalidArgument(
            f"model config file {str(source)!r}: custom_model_config is not supported; use model_config_list"
        )
    models = tuple(_model_config(c) for c in proto.model_config_list.config)
    return ServingConfig(models=models)


def read_model_server_config(path: str | Path) -> ServingConfig:
    """Read ``--model_config_file``."""
    return parse_model_server_config(read_text_file(path, "model config file"), path)


def _model_config(proto: model_server_config_pb2.ModelConfig) -> ModelConfig:
    policy_proto = proto.model_version_policy
    choice = policy_proto.WhichOneof("policy_choice")
    if choice == "all":
        policy = VersionPolicy(kind="all")
    elif choice == "specific":
        policy = VersionPolicy(kind="specific", versions=tuple(policy_proto.specific.versions))
    elif choice == "latest":
        # TF Serving treats num_versions 0 (unset) as the default of 1.
        policy = VersionPolicy(kind="latest", num_versions=policy_proto.latest.num_versions or 1)
    else:
        policy = VersionPolicy()
    splits: dict[str, TrafficSplit] = {}
    for split_proto in proto.traffic_split:
        if split_proto.label in splits:
            where = f"label {split_proto.label!r}" if split_proto.label else "the default"
            raise InvalidArgument(f"model {proto.name!r}: more than one traffic_split for {where}")
        splits[split_proto.label] = TrafficSplit(
            label=split_proto.label, weights=tuple((v.version, v.weight) for v in split_proto.versions)
        )
    return ModelConfig(
        name=proto.name,
        base_path=proto.base_path,
        platform=proto.model_platform,
        version_policy=policy,
        version_labels=dict(proto.version_labels),
        traffic_splits=splits,
        batching_parameters=(
            _batching_parameters(proto.batching_parameters) if proto.HasField("batching_parameters") else None
        ),
    )


@dataclass(frozen=True, slots=True)
class MonitoringConfig:
    """``--monitoring_config_file``: whether and where Prometheus metrics are exposed."""

    prometheus_enabled: bool = False
    prometheus_path: str = DEFAULT_PROMETHEUS_PATH


def read_monitoring_config(path: str | Path) -> MonitoringConfig:
    proto = monitoring_config_pb2.MonitoringConfig()
    _parse(read_text_file(path, "monitoring config file"), proto, "monitoring config file", path)
    prom = proto.prometheus_config
    return MonitoringConfig(
        prometheus_enabled=prom.enable, prometheus_path=prom.path or DEFAULT_PROMETHEUS_PATH
    )


@dataclass(frozen=True, slots=True)
class BatchingParameters:
    """``--batching_parameters_file`` with TF Serving's defaults for omitted fields."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = 0  # 0: one per core, like TF Serving's port::MaxParallelism()
    thread_pool_name: str = "batch_threads"
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int = 0  # 0: same as max_batch_size
    # Whether the file set batch_timeout_micros (else the adaptive policy may decide).
    timeout_given: bool = False

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise InvalidArgument(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.batch_timeout_micros < 0:
            raise InvalidArgument(f"batch_timeout_micros must be >= 0, got {self.batch_timeout_micros}")
        if self.max_enqueued_batches < 1:
            raise InvalidArgument(f"max_enqueued_batches must be >= 1, got {self.max_enqueued_batches}")
        # The last allowed size must equal the largest batch run: BatchingOptions checks it, as it knows
        # whether large batches are split.
        sizes = self.allowed_batch_sizes
        if sizes and (any(b <= a for a, b in itertools.pairwise(sizes)) or sizes[0] < 1):
            raise InvalidArgument(f"allowed_batch_sizes must be increasing, got {list(sizes)}")


def parse_batching_parameters(text: str, source: str | Path = "<string>") -> BatchingParameters:
    proto = batching_parameters_pb2.BatchingParameters()
    _parse(text, proto, "batching parameters file", source)
    return _batching_parameters(proto)


def _batching_parameters(proto: batching_parameters_pb2.BatchingParameters) -> BatchingParameters:
    defaults = BatchingParameters()
    return BatchingParameters(
        max_batch_size=(
            proto.max_batch_size.value if proto.HasField("max_batch_size") else defaults.max_batch_size
        ),
        batch_timeout_micros=proto.batch_timeout_micros.value,
        max_enqueued_batches=(
            proto.max_enqueued_batches.value
            if proto.HasField("max_enqueued_batches")
            else defaults.max_enqueued_batches
        ),
        num_batch_threads=proto.num_batch_threads.value,
        thread_pool_name=proto.thread_pool_name.value or defaults.thread_pool_name,
        allowed_batch_sizes=tuple(proto.allowed_batch_sizes),
        pad_variable_length_inputs=proto.pad_variable_length_inputs,
        enable_large_batch_splitting=proto.enable_large_batch_splitting.value,
        max_execution_batch_size=proto.max_execution_batch_size.value,
        timeout_given=proto.HasField("batch_timeout_micros"),
    )


def read_batching_parameters(path: str | Path) -> BatchingParameters:
    return parse_batching_parameters(read_text_file(path, "batching parameters file"), path)
