"""``modelserve gateway HANDLER``: argument parsing, the master's fail-fast checks, then Gunicorn.

`add_gateway_parser` adds the subcommand to ``modelserve``'s parser; `run_gateway` runs it. The handler
is imported here, in the master, so a typo fails at once with a one-line error instead of in every worker.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from modelserve.gateway.handler import load_handler
from modelserve.gateway.options import (
    INSTALL_HINT,
    LOG_FORMATS,
    LOG_LEVELS,
    WORKER_CLASSES,
    WORKER_REQUIREMENTS,
    GatewayOptions,
)

_DEFAULTS = GatewayOptions(handler="")


def add_gateway_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``gateway`` and its flags to an ``add_subparsers()`` object; returns the new parser."""
    d = _DEFAULTS
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "gateway",
        help="run a handler module under Gunicorn in front of the model server",
        description="Serve a handler module (pre/post-processing) with Gunicorn workers that call the "
        "model server. See docs/gateway.md.",
    )
    parser.add_argument("handler", metavar="HANDLER", help="handler file (path/to/handler.py) or module")
    parser.add_argument(
        "--bind",
        default=d.bind,
        metavar="ADDRESS",
        help=f"HOST:PORT (port 0: the OS picks one) or unix:PATH (default {d.bind})",
    )
    parser.add_argument(
        "--workers", type=int, default=d.workers, metavar="N", help=f"worker processes (default {d.workers})"
    )
    parser.add_argument(
        "--worker-class",
        choices=list(WORKER_CLASSES),
        default=d.worker_class,
        help=f"Gunicorn worker class; asyncio is uvicorn's (default {d.worker_class})",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=d.threads,
        metavar="N",
        help=f"threads per gthread worker (default {d.threads})",
    )
    parser.add_argument(
        "--model-server",
        default=d.model_server,
        metavar="URL",
        help=f"http://HOST:PORT (REST) or grpc://HOST:PORT (gRPC) (default {d.model_server})",
    )
    parser.add_argument(
        "--model-server-rest",
        default=None,
        metavar="URL",
        help="the model server's REST URL, for /stats when --model-server is grpc://",
    )
    parser.add_argument(
        "--protocol",
        choices=["tfserving", "v2"],
        default=d.protocol,
        help=f"the model server's API: TF Serving's or KServe V2 (default {d.protocol})",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=d.timeout,
        metavar="S",
        help=f"seconds per model-server call; past it the caller gets 504 (default {d.timeout:g})",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=d.retries,
        metavar="N",
        help=f"extra attempts when the model server cannot be reached (default {d.retries})",
    )
    parser.add_argument(
        "--ready-file",
        default=None,
        metavar="PATH",
        help='write {"url", "pid"} here (atomically) once every worker has booted',
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=d.max_body_bytes,
        metavar="N",
        help=f"larger request bodies get 413 (default {d.max_body_bytes})",
    )
    parser.add_argument(
        "--graceful-timeout",
        type=float,
        default=d.graceful_timeout,
        metavar="S",
        help=f"seconds a stopping worker may finish its requests (default {d.graceful_timeout:g})",
    )
    parser.add_argument("--log-level", choices=LOG_LEVELS, default=d.log_level)
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=d.log_format,
        help="text, or json: one JSON object per log line (default text)",
    )
    return parser


def options_from_args(args: argparse.Namespace) -> GatewayOptions:
    """The parsed flags as `GatewayOptions` (ValueError names a bad value)."""
    return GatewayOptions(
        handler=args.handler,
        bind=args.bind,
        workers=args.workers,
        worker_class=args.worker_class,
        threads=args.threads,
        model_server=args.model_server,
        model_server_rest=args.model_server_rest,
        protocol=args.protocol,
        timeout=args.timeout,
        retries=args.retries,
        ready_file=args.ready_file,
        max_body_bytes=args.max_body_bytes,
        graceful_timeout=args.graceful_timeout,
        log_level=args.log_level,
        log_format=getattr(args, "log_format", "text"),
    )


def run_gateway(args: argparse.Namespace) -> int:
    """Check everything that can be checked in the master, then run Gunicorn until it stops.

    Returns the exit status: 0 after a clean stop, 2 for a bad option or handler, Gunicorn's status
    otherwise (3: a worker failed to boot). In a worker process, the worker's own status when it exits.
    """
    try:
        options = options_from_args(args)
        _check_installed(options.worker_class)
        before = set(sys.modules)
        handler = load_handler(options.handler)
        _forget_user_modules(set(sys.modules) - before, options.handler)
    except Exception as error:  # the handler's own import errors included: report them in one line
        print(f"modelserve gateway: error: {_describe(error)}", file=sys.stderr)
        return 2
    print(
        f"modelserve gateway: handler {handler.name} -> model '{handler.model}' at {options.model_server}",
        file=sys.stderr,
    )
    from modelserve.gateway.gunicorn_app import GatewayApplication

    try:
        GatewayApplication(options).run()
    except SystemExit as stop:  # Gunicorn ends the master and every worker with sys.exit
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    return 0


def _forget_user_modules(imported: set[str], spec: str) -> None:
    """Drop the handler and its own modules that the master's check imported, so that each worker imports
    them itself after the fork: their module-level threads, clients and locks are then the worker's.

    Only the user's code is dropped (the handler's folder, or its top-level package): libraries it pulled
    in (numpy, tokenizers, ...) stay, as C extensions cannot be imported twice in one process.
    """
    path = Path(spec)
    folder = str(path.resolve().parent) + os.sep if spec.endswith(".py") or path.is_file() else None
    package = spec.split(".")[0]
    for name in imported:
        module = sys.modules.get(name)
        file = getattr(module, "__file__", None) or ""
        mine = file.startswith(folder) if folder else name == package or name.startswith(package + ".")
        if mine or name.startswith("modelserve_handler_"):
            del sys.modules[name]


def _check_installed(worker_class: str) -> None:
    missing = [name for name in ("gunicorn", *WORKER_REQUIREMENTS.get(worker_class, ())) if not _found(name)]
    if missing:
        raise ValueError(f"--worker-class {worker_class} needs {', '.join(missing)}: {INSTALL_HINT}")


def _found(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _describe(error: Exception) -> str:
    return str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {error}"
