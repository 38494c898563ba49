"""Command line: ``modelserve serve`` takes ``tensorflow_model_server``'s flags, spelled the same way.

Flags accept TF Serving's forms: ``--port=8500``, ``--port 8500``, ``--enable_batching``,
``--enable_batching=true``. Argument parsing only: the server is built in ``modelserve.server``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from typing import Any

from modelserve import __version__
from modelserve.config.options import ServerOptions
from modelserve.errors import ServingError

_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off"}


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


_HELP: dict[str, str] = {
    "port": "gRPC port (TF Serving API); 0 disables gRPC",
    "rest_api_port": "HTTP/REST port; 0 disables REST",
    "rest_api_host": "address the REST server binds (ours)",
    "grpc_host": "address the gRPC server binds (ours)",
    "rest_api_timeout_in_ms": "deadline of one REST request",
    "model_name": "name of the single model served with --model_base_path",
    "model_base_path": "directory or URL (s3://..., any fsspec URL) holding <version>/ folders of one model",
    "model_config_file": "ModelServerConfig in text protobuf format (several models)",
    "model_config_file_poll_wait_seconds": "re-read --model_config_file this often; 0 reads it once",
    "file_system_poll_wait_seconds": "look for new model versions this often; 0 looks once",
    "storage_cache_dir": "where versions of s3:// (fsspec URL) base paths are downloaded (ours)",
    "enable_batching": "batch requests on the server",
    "batching_parameters_file": "BatchingParameters in text protobuf format",
    "monitoring_config_file": "MonitoringConfig in text protobuf format (Prometheus)",
    "max_request_body_bytes": "larger request bodies get HTTP 413 (ours)",
    "inline_inference_threshold_us": "model calls measured below this run on the event loop (ours)",
    "reply_coalescing_us": (
        "replies wait at most this long to be written together with the others one pass of the event loop "
        "produces; 0 writes each at once (ours)"
    ),
    "ready_file": "write {'rest_port','grpc_port','pid'} as JSON here once ready (ours)",
    "log_level": "debug, info, warning or error (ours)",
    "log_format": "text or json: one JSON object per log line (ours)",
    "access_log": "log one line per REST request: method, path, status, duration, bytes (ours)",
    "drain_timeout_seconds": "on SIGTERM, seconds the requests in flight may take to finish (ours)",
    "ephemeral_ports": "bind OS-assigned ports instead of the given ones; see --ready_file (ours)",
}


def _add_serve_flags(parser: argparse.ArgumentParser) -> None:
    for field in dataclasses.fields(ServerOptions):
        if field.name == "extra_flags_ignored":
            continue
        flag = f"--{field.name}"
        default = field.default
        help_text = _HELP.get(field.name, "TF Serving flag")
        if isinstance(default, bool):
            parser.add_argument(
                flag,
                type=_bool,
                nargs="?",
                const=True,
                default=default,
                metavar="BOOL",
                help=f"{help_text} (default {str(default).lower()})",
            )
        else:
            parser.add_argument(
                flag, type=type(default), default=default, help=f"{help_text} (default {default!r})"
            )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelserve",
        description="Model server with TensorFlow Serving's interfaces, batching and a web tier.",
    )
    parser.add_argument("--version", action="version", version=f"modelserve {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve", help="run the model server (accepts tensorflow_model_server's flags)"
    )
    _add_serve_flags(serve)
    demo = commands.add_parser(
        "demo", help="generate demo models, serve them and print ready-to-paste requests"
    )
    demo.add_argument("--dir", default="", help="where to write the demo repository (default: temp)")
    demo.add_argument("--rest_api_port", type=int, default=8501)
    demo.add_argument("--port", type=int, default=8500)
    demo.add_argument(
        "--exit_after_check",
        action="store_true",
        help="send every printed request once, print the answers, and exit (for CI and smoke tests)",
    )
    from modelserve.bench.command import add_bench_parser
    from modelserve.gateway.command import add_gateway_parser
    from modelserve.plan.command import add_plan_parser
    from modelserve.stack.command import add_stack_parser
    from modelserve.tune.command import add_tune_parser

    add_gateway_parser(commands)
    add_stack_parser(commands)
    add_plan_parser(commands)
    add_tune_parser(commands)
    add_bench_parser(commands)
    return parser


def parse_serve_options(argv: Sequence[str]) -> ServerOptions:
    """Parse ``serve`` flags; unknown ``--flags`` are kept and reported, never fatal (TF Serving parity)."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(["serve", *argv])
    values: dict[str, Any] = {k: v for k, v in vars(args).items() if k != "command"}
    return ServerOptions(**values, extra_flags_ignored=tuple(unknown))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv:
        parser.print_help()
        return 2
    command, rest = argv[0], argv[1:]
    try:
        if command == "serve":
            from modelserve.server import run_server

            return run_server(parse_serve_options(rest))
        if command == "demo":
            from modelserve.demo.command import run_demo

            args = parser.parse_args(argv)
            return run_demo(
                directory=args.dir,
                rest_api_port=args.rest_api_port,
                grpc_port=args.port,
                exit_after_check=args.exit_after_check,
            )
        if command == "gateway":
            from modelserve.gateway.command import run_gateway

            return run_gateway(parser.parse_args(argv))
        if command == "stack":
            from modelserve.stack.command import run_stack

            return run_stack(parser.parse_args(argv))
        if command == "plan":
            from modelserve.plan.command import run_plan

            return run_plan(parser.parse_args(argv))
        if command == "tune":
            from modelserve.tune.command import run_tune

            return run_tune(parser.parse_args(argv))
        if command == "bench":
            from modelserve.bench.command import run_bench

            return run_bench(parser.parse_args(argv))
    except ServingError as exc:
        print(f"modelserve: error: {exc.message}", file=sys.stderr)
        return 2
    parser.parse_args(argv)  # prints usage for unknown commands and --help/--version
    return 0


if __name__ == "__main__":
    sys.exit(main())
