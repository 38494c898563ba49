"""``modelserve stack``: argument parsing, and the signal handling around one ``Stack`` run.

``modelserve.cli`` adds the subcommand with ``add_stack_parser(subparsers)`` and runs it with
``run_stack(args)``; ``python -m modelserve.stack`` runs the same parser on its own.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any

from modelserve.stack.options import (
    DEFAULT_MAX_BODY_BYTES,
    LOG_FORMATS,
    PROTOCOLS,
    UPSTREAMS,
    WORKER_CLASSES,
    OptionsError,
    StackOptions,
)
from modelserve.stack.processes import StackError

DESCRIPTION = (
    "Start the whole stack: the model server (modelserve serve), the gateway (Gunicorn workers running "
    "HANDLER) in front of it, and optionally nginx in front of the gateway; print the URLs and the memory "
    "of every process; stop everything in order on Ctrl-C or SIGTERM."
)


def add_stack_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``stack`` subcommand to an ``argparse`` subparsers object; returns its parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "stack", help="start model server + gateway (+ nginx) together", description=DESCRIPTION
    )
    configure_parser(parser)
    return parser


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Every ``modelserve stack`` flag (see docs/stack.md)."""
    parser.add_argument(
        "handler", metavar="HANDLER", help="handler module: a .py file or a dotted module name"
    )
    model = parser.add_argument_group("model server (modelserve serve)")
    model.add_argument("--model_name", default="default", help="model name with --model_base_path")
    model.add_argument("--model_base_path", default="", help="directory holding <version>/ of one model")
    model.add_argument("--model_config_file", default="", help="ModelServerConfig text file (several models)")
    model.add_argument(
        "--rest_api_port", type=int, default=8501, help="model server REST port (0: free port)"
    )
    model.add_argument("--grpc_port", type=int, default=8500, help="model server gRPC port (0: free port)")
    model.add_argument(
        "--serve-arg",
        dest="serve_args",
        action="append",
        default=[],
        metavar="FLAG",
        help="pass a flag to modelserve serve, e.g. --serve-arg=--enable_batching (repeatable)",
    )
    gateway = parser.add_argument_group("gateway (modelserve gateway)")
    gateway.add_argument("--host", default="127.0.0.1", help="address the gateway and nginx listen on")
    gateway.add_argument("--port", type=int, default=8000, help="gateway port (default 8000)")
    gateway.add_argument("--workers", type=int, default=2, help="Gunicorn workers (default 2)")
    gateway.add_argument("--worker-class", choices=WORKER_CLASSES, default="sync")
    gateway.add_argument("--threads", type=int, default=4, help="threads per gthread worker (default 4)")
    gateway.add_argument(
        "--upstream", choices=UPSTREAMS, default="rest", help="how the gateway calls the model server"
    )
    gateway.add_argument("--protocol", choices=PROTOCOLS, default="tfserving", help="model server API used")
    gateway.add_argument(
        "--timeout", type=float, default=30.0, help="request timeout in seconds (default 30)"
    )
    gateway.add_argument(
        "--gateway-arg",
        dest="gateway_args",
        action="append",
        default=[],
        metavar="FLAG",
        help="pass a flag to modelserve gateway, e.g. --gateway-arg=--retries=0 (repeatable)",
    )
    nginx = parser.add_argument_group("nginx (optional)")
    nginx.add_argument("--nginx", action="store_true", help="put nginx in front of the gateway")
    nginx.add_argument("--nginx-port", type=int, default=8080, help="nginx port (default 8080; 0: free port)")
    nginx.add_argument("--nginx-binary", default="nginx", help="nginx executable (default: nginx on PATH)")
    nginx.add_argument("--nginx-workers", default="1", help="nginx worker_processes: N or auto (default 1)")
    stack = parser.add_argument_group("the stack")
    stack.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help="largest request body the gateway and nginx accept (default 16 MiB)",
    )
    stack.add_argument(
        "--graceful-timeout",
        type=float,
        default=30.0,
        help="seconds each process gets to finish its requests on stop, before SIGKILL (default 30)",
    )
    stack.add_argument(
        "--startup-timeout", type=float, default=300.0, help="seconds each process gets to become ready"
    )
    stack.add_argument("--ready-file", default="", help="write URLs and pids as JSON here once ready")
    stack.add_argument("--log-dir", default="", help="children's log files (default: a new temp folder)")
    stack.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="log format of the model server and the gateway: text, or json (one object per line)",
    )


def options_from_args(args: argparse.Namespace) -> StackOptions:
    """The parsed flags as StackOptions (raises OptionsError on a bad combination)."""
    return StackOptions(
        handler=args.handler,
        model_name=args.model_name,
        model_base_path=args.model_base_path,
        model_config_file=args.model_config_file,
        rest_api_port=args.rest_api_port,
        grpc_port=args.grpc_port,
        serve_args=tuple(args.serve_args),
        host=args.host,
        port=args.port,
        workers=args.workers,
        worker_class=args.worker_class,
        threads=args.threads,
        upstream=args.upstream,
        protocol=args.protocol,
        timeout=args.timeout,
        gateway_args=tuple(args.gateway_args),
        nginx=args.nginx,
        nginx_port=args.nginx_port,
        nginx_binary=args.nginx_binary,
        nginx_workers=args.nginx_workers,
        max_body_bytes=args.max_body_bytes,
        graceful_timeout=args.graceful_timeout,
        startup_timeout=args.startup_timeout,
        ready_file=args.ready_file,
        log_dir=args.log_dir,
        log_format=args.log_format,
    )


def run_stack(args: argparse.Namespace) -> int:
    """Run the stack until SIGINT/SIGTERM; 0 after a clean stop, 1 if a part failed, 2 on bad flags."""
    try:
        options = options_from_args(args)
    except OptionsError as exc:
        print(f"modelserve stack: error: {exc}", file=sys.stderr)
        return 2
    from modelserve.stack.report import Reporter
    from modelserve.stack.stack import Stack

    try:
        stack = Stack(options, Reporter())
    except StackError as exc:
        print(f"modelserve stack: error: {exc.message}", file=sys.stderr)
        return 1

    def stop(signum: int, frame: FrameType | None) -> None:
        stack.request_stop()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return stack.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m modelserve.stack HANDLER ...``."""
    parser = argparse.ArgumentParser(prog="modelserve stack", description=DESCRIPTION)
    configure_parser(parser)
    return run_stack(parser.parse_args(argv))
