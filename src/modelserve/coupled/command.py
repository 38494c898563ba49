"""``python -m modelserve.coupled HANDLER``: the coupled architecture under Gunicorn, N workers of a class.

Flags are the gateway's (``--bind``, ``--workers``, ``--worker-class``, ``--threads``, ``--ready-file``) and
the model server's model flags (``--model_name``, ``--model_base_path`` or ``--model_config_file``).
`coupled_argv` builds the same command line for launchers (``modelserve tune``, benchmarks).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from modelserve.gateway.options import LOG_LEVELS, WORKER_CLASSES, GatewayOptions

DESCRIPTION = (
    "Run a handler module with its model loaded in every Gunicorn worker (the coupled architecture, "
    "the baseline modelserve stack is compared with). See docs/tune.md."
)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Every flag of the coupled launcher."""
    parser.add_argument("handler", metavar="HANDLER", help="handler file (path/to/handler.py) or module")
    parser.add_argument("--model_name", default="default", help="model name with --model_base_path")
    parser.add_argument("--model_base_path", default="", help="directory holding <version>/ of one model")
    parser.add_argument(
        "--model_config_file", default="", help="ModelServerConfig text file (several models)"
    )
    parser.add_argument("--bind", default="127.0.0.1:8000", help="HOST:PORT (port 0: the OS picks one)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes, one model copy each")
    parser.add_argument("--worker-class", choices=list(WORKER_CLASSES), default="sync")
    parser.add_argument("--threads", type=int, default=4, help="threads per gthread worker (default 4)")
    parser.add_argument(
        "--intra-op-threads", type=int, default=1, help="framework threads per worker (default 1)"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="request timeout in seconds")
    parser.add_argument(
        "--graceful-timeout", type=float, default=30.0, help="seconds a stopping worker may finish requests"
    )
    parser.add_argument(
        "--ready-file", default=None, help='write {"url", "pid"} here once every worker booted'
    )
    parser.add_argument("--max-body-bytes", type=int, default=16 * 1024 * 1024)
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="warning")


def coupled_argv(
    handler: str,
    *,
    model_name: str = "default",
    model_base_path: str = "",
    model_config_file: str = "",
    bind: str = "127.0.0.1:8000",
    workers: int = 2,
    worker_class: str = "sync",
    threads: int = 4,
    ready_file: str = "",
    timeout_s: float = 30.0,
    graceful_timeout_s: float = 30.0,
) -> list[str]:
    """The ``python -m modelserve.coupled`` command line (without the interpreter) for these settings."""
    models = (
        [f"--model_config_file={model_config_file}"]
        if model_config_file
        else [f"--model_name={model_name}", f"--model_base_path={model_base_path}"]
    )
    argv = ["-m", "modelserve.coupled", handler, *models, f"--bind={bind}", f"--workers={workers}",
            f"--worker-class={worker_class}", f"--threads={threads}", f"--timeout={timeout_s:g}",
            f"--graceful-timeout={graceful_timeout_s:g}"]  # fmt: skip
    return [*argv, f"--ready-file={ready_file}"] if ready_file else argv


def run_coupled(args: argparse.Namespace) -> int:
    """Load the handler and check the models in the master (fail fast), then run Gunicorn until it stops."""
    from modelserve.coupled.app import CoupledApplication
    from modelserve.coupled.models import latest_version, model_sources
    from modelserve.gateway.handler import load_handler

    try:
        options = GatewayOptions(
            handler=args.handler,
            bind=args.bind,
            workers=args.workers,
            worker_class=args.worker_class,
            threads=args.threads,
            timeout=args.timeout,
            graceful_timeout=args.graceful_timeout,
            ready_file=args.ready_file,
            max_body_bytes=args.max_body_bytes,
            log_level=args.log_level,
        )
        sources = model_sources(args.model_name, args.model_base_path, args.model_config_file)
        for source in sources:
            latest_version(source.base_path)
        load_handler(options.handler)
    except Exception as error:
        print(f"modelserve coupled: error: {error}", file=sys.stderr)
        return 2
    try:
        CoupledApplication(options, sources, args.intra_op_threads).run()
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m modelserve.coupled``."""
    parser = argparse.ArgumentParser(prog="python -m modelserve.coupled", description=DESCRIPTION)
    configure_parser(parser)
    return run_coupled(parser.parse_args(argv))
