"""ServerOptions: the one frozen object that ``modelserve serve`` is configured by.

Field names are ``tensorflow_model_server``'s flag names, so a TF Serving command line maps one to one.
Fields marked "ours" are modelserve extensions.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from modelserve.errors import InvalidArgument


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """Every setting of the model server, with TF Serving's defaults (Docker image ports)."""

    # -- network
    port: int = 8500  # gRPC; 0 disables
    grpc_socket_path: str = ""
    rest_api_port: int = 8501  # 0 disables REST
    rest_api_num_threads: int = 0
    rest_api_timeout_in_ms: int = 30000
    rest_api_enable_cors_support: bool = False
    rest_api_host: str = "0.0.0.0"  # ours
    grpc_host: str = "0.0.0.0"  # ours
    max_request_body_bytes: int = 64 * 1024 * 1024  # ours: larger bodies get 413
    grpc_channel_arguments: str = ""
    grpc_max_threads: int = 0
    ssl_config_file: str = ""
    use_alts_credentials: bool = False
    # -- models
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: int = 0
    file_system_poll_wait_seconds: int = 1
    allow_version_labels_for_unavailable_models: bool = False
    num_load_threads: int = 0
    num_unload_threads: int = 0
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60_000_000
    flush_filesystem_caches: bool = True
    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 1
    platform_config_file: str = ""
    memory_budget: str = ""  # ours: e.g. 8GiB or 80%; empty: only the host's available memory limits loads
    version_settle_seconds: float = 1.0  # ours: a new version directory loads once quiet this long
    storage_cache_dir: str = ""  # ours: local copies of versions on object storage; empty: ~/.cache
    # -- batching
    enable_batching: bool = False
    batching_parameters_file: str = ""
    enable_per_model_batching_parameters: bool = False
    # -- runtimes
    tensorflow_session_parallelism: int = 0
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    tensorflow_session_config_file: str = ""
    per_process_gpu_memory_fraction: float = 0.0
    saved_model_tags: str = "serve"
    enable_signature_method_name_check: bool = False
    xla_cpu_compilation_enabled: bool = False
    # -- operations
    monitoring_config_file: str = ""
    enable_grpc_healthcheck_service: bool = True
    inline_inference_threshold_us: int = 500  # ours: cheaper model calls run on the event loop
    reply_coalescing_us: int = 1000  # ours: replies wait up to this long to leave with the loop pass's others
    ready_file: str = ""  # ours: JSON with the bound ports, written once the server is ready
    ephemeral_ports: bool = False  # ours: bind OS-assigned ports (tests), reported in --ready_file
    log_level: str = "info"  # ours
    log_format: str = "text"  # ours: text or json (one JSON object per line)
    access_log: bool = False  # ours: one log line per REST request
    drain_timeout_seconds: float = 30.0  # ours: on SIGTERM, how long requests in flight may finish
    extra_flags_ignored: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        for name in ("port", "rest_api_port"):
            value = getattr(self, name)
            if not 0 <= value <= 65535:
                raise InvalidArgument(f"--{name} must be between 0 and 65535, got {value}")
        if self.model_config_file and self.model_base_path:
            raise InvalidArgument(
                "--model_config_file and --model_base_path are mutually exclusive: "
                "list every model in the config file"
            )
        if self.max_request_body_bytes < 1:
            raise InvalidArgument(
                f"--max_request_body_bytes must be positive, got {self.max_request_body_bytes}"
            )
        if self.reply_coalescing_us < 0:
            raise InvalidArgument(f"--reply_coalescing_us must be >= 0, got {self.reply_coalescing_us}")
        if self.version_settle_seconds < 0:
            raise InvalidArgument(f"--version_settle_seconds must be >= 0, got {self.version_settle_seconds}")
        if self.num_request_iterations_for_warmup < 1:
            raise InvalidArgument(
                "--num_request_iterations_for_warmup must be >= 1, "
                f"got {self.num_request_iterations_for_warmup}"
            )
        if self.log_format not in ("text", "json"):
            raise InvalidArgument(f"--log_format must be text or json, got {self.log_format!r}")
        if self.drain_timeout_seconds < 0:
            raise InvalidArgument(f"--drain_timeout_seconds must be >= 0, got {self.drain_timeout_seconds}")
        if self.rest_api_timeout_in_ms < 0:
            raise InvalidArgument(f"--rest_api_timeout_in_ms must be >= 0, got {self.rest_api_timeout_in_ms}")


def option_names() -> list[str]:
    """Every flag name ``serve`` accepts, in declaration order."""
    return [f.name for f in fields(ServerOptions) if f.name != "extra_flags_ignored"]
