"""What every example's ``run.py`` does: build the model (reused once built), then start the whole stack.

``python examples/<name>/run.py [--workers N] [--worker-class sync|gthread|gevent|asyncio] [--nginx]`` runs
the example's ``prepare.py`` and then becomes ``modelserve stack handler.py --model_base_path=...
--model_name=...``: the model server, the Gunicorn gateway running ``handler.py`` (and nginx with
``--nginx``). The stack prints its URLs and stops on Ctrl-C. Flags this script does not know are passed on
to ``modelserve stack``; ``--dry-run`` prints the command instead of running it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType


def stack_command(
    example: Path, prepare: ModuleType, base_path: Path, args: argparse.Namespace, extra: Sequence[str]
) -> list[str]:
    """The ``modelserve stack`` command line serving ``base_path`` behind the example's handler."""
    command = [sys.executable, "-m", "modelserve", "stack", str(example / "handler.py")]
    command += [f"--model_base_path={base_path}", f"--model_name={prepare.MODEL}"]
    if args.workers is not None:
        command += ["--workers", str(args.workers)]
    if args.worker_class is not None:
        command += ["--worker-class", args.worker_class]
    if args.nginx:
        command.append("--nginx")
    return [*command, *extra]


def main(example: Path, argv: Sequence[str] | None = None) -> int:
    """Run the example in folder ``example`` (it holds ``prepare.py`` and ``handler.py``)."""
    sys.path.insert(0, str(example))
    prepare = importlib.import_module("prepare")
    parser = argparse.ArgumentParser(
        description=f"run the {example.name} example: build, then start the stack"
    )
    parser.add_argument("--workers", type=int, help="gateway worker processes (default: the stack's)")
    parser.add_argument("--worker-class", choices=["sync", "gthread", "gevent", "asyncio"])
    parser.add_argument("--nginx", action="store_true", help="put nginx in front of the gateway")
    parser.add_argument("--out", type=Path, default=prepare.DEFAULT_OUT, help="where the model is built")
    parser.add_argument("--dry-run", action="store_true", help="print the stack command, do not run it")
    args, extra = parser.parse_known_args(argv)
    base_path = prepare.prepare(args.out)
    command = stack_command(example, prepare, base_path, args, extra)
    print("$", shlex.join(command), flush=True)
    if args.dry_run:
        return 0
    os.execv(command[0], command)  # the stack owns the terminal from here: Ctrl-C stops it
