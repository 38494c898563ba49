"""``modelserve serve`` accepts tensorflow_model_server's flags, spelled TF Serving's way."""

from __future__ import annotations

import subprocess
import sys

import pytest

from modelserve.cli import parse_serve_options
from modelserve.config.options import ServerOptions
from modelserve.errors import InvalidArgument

# Every flag of tensorflow_model_server (model_servers/main.cc), with a value of the right type.
TF_SERVING_FLAGS = [
    "--port=8500", "--grpc_socket_path=/tmp/s", "--rest_api_port=8501", "--rest_api_num_threads=4",
    "--rest_api_timeout_in_ms=5000", "--rest_api_enable_cors_support=true", "--model_name=m",
    "--model_base_path=/models/m", "--model_config_file_poll_wait_seconds=0",
    "--file_system_poll_wait_seconds=2", "--enable_batching", "--batching_parameters_file=/tmp/b",
    "--enable_per_model_batching_parameters=false", "--allow_version_labels_for_unavailable_models",
    "--num_load_threads=2", "--num_unload_threads=1", "--max_num_load_retries=3",
    "--load_retry_interval_micros=1000", "--flush_filesystem_caches=false", "--enable_model_warmup=true",
    "--num_request_iterations_for_warmup=2", "--monitoring_config_file=/tmp/m", "--ssl_config_file=",
    "--use_alts_credentials=false", "--tensorflow_session_parallelism=0",
    "--tensorflow_intra_op_parallelism=2", "--tensorflow_inter_op_parallelism=1",
    "--tensorflow_session_config_file=", "--per_process_gpu_memory_fraction=0.5", "--saved_model_tags=serve",
    "--platform_config_file=", "--grpc_channel_arguments=a=1", "--grpc_max_threads=8",
    "--enable_signature_method_name_check=false", "--xla_cpu_compilation_enabled=false",
    "--enable_grpc_healthcheck_service=true",
]  # fmt: skip


def test_every_tf_serving_flag_parses() -> None:
    options = parse_serve_options(TF_SERVING_FLAGS)
    assert options.enable_batching is True
    assert options.rest_api_enable_cors_support is True
    assert options.file_system_poll_wait_seconds == 2
    assert options.per_process_gpu_memory_fraction == 0.5
    assert options.extra_flags_ignored == ()


def test_defaults_are_the_docker_images() -> None:
    options = parse_serve_options(["--model_base_path=/m"])
    assert (options.port, options.rest_api_port, options.model_name) == (8500, 8501, "default")
    assert options == ServerOptions(model_base_path="/m")


def test_space_separated_values_and_unknown_flags() -> None:
    options = parse_serve_options(["--port", "9000", "--some_future_flag=1", "--model_base_path", "/m"])
    assert options.port == 9000
    assert options.extra_flags_ignored == ("--some_future_flag=1",)


def test_conflicting_flags_are_a_clear_error() -> None:
    with pytest.raises(InvalidArgument, match="mutually exclusive"):
        parse_serve_options(["--model_base_path=/m", "--model_config_file=/c"])


def test_serve_without_a_model_exits_with_a_message() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "modelserve", "serve", "--rest_api_port=0", "--port=0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "no model to serve" in result.stderr
