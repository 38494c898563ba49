"""The chosen configuration as ready-to-use files, and every trial as JSON.

- ``gunicorn.conf.py``: the web workers' Gunicorn settings. For the stack it records what ``modelserve
  stack`` applies (the gateway configures Gunicorn itself); for the coupled architecture it is a complete
  configuration: ``gunicorn -c gunicorn.conf.py`` runs the handler with the model in every worker.
- ``batching_parameters.txt``: the model server's batching, TF Serving's text format.
- ``stack_command.sh``: the one command that runs the chosen configuration (a running stack that was tuned:
  its own ``modelserve stack`` flags with the chosen ``--workers``).
- ``tune_result.json``: limits, the chosen configuration (``best``), each architecture's best
  (``best_by_architecture``: what ``modelserve plan --from`` prices), the nearest misses when nothing fitted,
  and every trial as ``points``. All of them by `Search.best`'s one definition.
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import asdict
from pathlib import Path
from typing import Any

from modelserve.gateway.options import WORKER_CLASSES as GUNICORN_CLASSES
from modelserve.tune.results import Limits, TrialResult
from modelserve.tune.search import SearchOutcome
from modelserve.tune.space import Batching, TrialConfig

GUNICORN_CONF = "gunicorn.conf.py"
BATCHING_FILE = "batching_parameters.txt"
COMMAND_FILE = "stack_command.sh"
RESULT_FILE = "tune_result.json"


def batching_text(batching: Batching) -> str:
    """``batching`` in TF Serving's BatchingParameters text format (comments only when batching is off)."""
    if not batching.enabled:
        return "# modelserve tune: batching off (run the model server without --enable_batching)\n"
    lines = [
        f"# modelserve tune: {batching.name} batching"
        + ("" if batching.batch_timeout_micros is not None else " (no timeout: the adaptive policy)"),
        f"max_batch_size {{ value: {batching.max_batch_size} }}",
    ]
    if batching.batch_timeout_micros is not None:
        lines.append(f"batch_timeout_micros {{ value: {batching.batch_timeout_micros} }}")
    if batching.num_batch_threads:
        lines.append(f"num_batch_threads {{ value: {batching.num_batch_threads} }}")
    if batching.pad_variable_length_inputs:
        lines.append("pad_variable_length_inputs: true")
    return "\n".join(lines) + "\n"


def gunicorn_conf_text(
    config: TrialConfig, bind: str = "0.0.0.0:8000", timeout_s: float = 30.0, graceful_timeout_s: float = 5.0
) -> str:
    """A Gunicorn configuration file of the chosen web tier (valid Python; Gunicorn's setting names), with
    the timeouts its trials ran with."""
    lines = [f'"""Gunicorn settings chosen by modelserve tune: {config.label}.']
    if config.architecture == "coupled":
        factory = (
            "create_asgi_app()"
            if config.worker_class == "asyncio"
            else f"create_wsgi_app({config.worker_class!r})"
        )
        lines += [
            "",
            "The coupled architecture: every worker loads the handler and its own copy of the model. Run:",
            "    MODELSERVE_HANDLER=handler.py MODELSERVE_MODEL_NAME=m \\",
            "    MODELSERVE_MODEL_BASE_PATH=/models/m gunicorn -c gunicorn.conf.py",
            '"""',
            "",
            f'wsgi_app = "modelserve.coupled.app:{factory}"',
        ]
    else:
        lines += [
            "",
            "modelserve stack applies these through modelserve gateway (see stack_command.sh); this file",
            "records them, or configures a Gunicorn you run yourself.",
            '"""',
            "",
        ]
    lines += [
        f"bind = {bind!r}",
        f"workers = {config.workers}",
        f"worker_class = {GUNICORN_CLASSES[config.worker_class]!r}",
        f"threads = {config.threads if config.worker_class == 'gthread' else 1}",
        "preload_app = False  # each worker makes its own state (and, coupled, its own model) after the fork",
        f"timeout = {math.ceil(timeout_s)}  # as measured: the trials ran with these two",
        f"graceful_timeout = {math.ceil(graceful_timeout_s)}",
    ]
    return "\n".join(lines) + "\n"


def stack_command(
    config: TrialConfig,
    handler: str,
    model_name: str,
    model_base_path: str,
    model_config_file: str,
    batching_file: str,
    serve_args: tuple[str, ...] = (),
    timeout_s: float = 30.0,
    graceful_timeout_s: float = 5.0,
) -> list[str]:
    """The command line that runs ``config``: ``modelserve stack ...`` (or the coupled launcher), with the
    timeouts its trials ran with."""
    models = (
        [f"--model_config_file={model_config_file}"]
        if model_config_file
        else [f"--model_name={model_name}", f"--model_base_path={model_base_path}"]
    )
    if config.architecture == "coupled":
        return [
            "python", "-m", "modelserve.coupled", handler, *models, f"--workers={config.workers}",
            f"--worker-class={config.worker_class}", f"--threads={config.threads}", "--bind=0.0.0.0:8000",
            f"--timeout={timeout_s:g}", f"--graceful-timeout={graceful_timeout_s:g}",
        ]  # fmt: skip
    serve = list(serve_args)
    if config.batching.enabled:
        serve += ["--enable_batching", f"--batching_parameters_file={batching_file}"]
    return [
        "modelserve", "stack", handler, *models, f"--workers={config.workers}",
        f"--worker-class={config.worker_class}", f"--threads={config.threads}",
        f"--upstream={config.upstream}", f"--timeout={timeout_s:g}",
        f"--graceful-timeout={graceful_timeout_s:g}",
        *(f"--serve-arg={flag}" for flag in serve),
    ]  # fmt: skip


def point(result: TrialResult) -> dict[str, Any]:
    """One trial as a JSON point (the names ``modelserve plan --from`` and the report read)."""
    config = result.config
    return {
        "architecture": config.plan_architecture,
        "worker_class": config.worker_class,
        "workers": config.workers,
        "upstream": config.upstream if config.architecture == "stack" else None,
        "batching": config.batching.name if config.architecture == "stack" else None,
        "label": config.label,
        "rps": round(result.rps, 2),
        "p50_ms": round(result.p50_ms, 2),
        "p99_ms": round(result.p99_ms, 2),
        "requests": result.requests,
        "errors": result.errors,
        "pss_mib": round(result.peak_pss_bytes / 2**20, 1),
        "device_mib": None
        if result.peak_device_bytes is None
        else round(result.peak_device_bytes / 2**20, 1),
        "fits": result.fits,
        "fits_memory": result.fits_memory,
        "fits_slo": result.fits_slo,
        "concurrency": result.concurrency,
        "saturated": result.saturated,
        "measured_s": round(result.measured_s, 2),
        "trial_s": round(result.duration_s, 2),
        "phase": result.phase,
        "failure": result.failure,
        "notes": list(result.notes),
    }


def write_outputs(
    directory: Path,
    outcome: SearchOutcome,
    limits: Limits,
    command_args: dict[str, Any],
    search: dict[str, Any],
    command_argv: list[str] | None = None,
) -> dict[str, Path]:
    """Write every file into ``directory``; returns them by name. Config files only when a configuration
    was chosen.

    ``command_args``: ``handler``, ``model_name``, ``model_base_path``, ``model_config_file``, ``serve_args``,
    ``timeout_s`` and ``graceful_timeout_s`` (what the trials ran with). ``command_argv``: the command that
    runs the choice when tune did not start it (a running stack's own flags); then no batching file is
    written: the model server's batching was not searched and its own file stays in use.
    """
    directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    best = outcome.best
    command_line = None
    timeout_s = float(command_args.get("timeout_s", 30.0))
    graceful_timeout_s = float(command_args.get("graceful_timeout_s", 5.0))
    if best is not None:
        conf = directory / GUNICORN_CONF
        conf.write_text(
            gunicorn_conf_text(best.config, timeout_s=timeout_s, graceful_timeout_s=graceful_timeout_s)
        )
        written["gunicorn"] = conf
        batching = directory / BATCHING_FILE
        if command_argv is None:
            batching.write_text(batching_text(best.config.batching))
            written["batching"] = batching
        argv = command_argv or stack_command(
            best.config,
            command_args["handler"],
            command_args.get("model_name", "default"),
            command_args.get("model_base_path", ""),
            command_args.get("model_config_file", ""),
            str(batching.resolve()),
            tuple(command_args.get("serve_args", ())),
            timeout_s=timeout_s,
            graceful_timeout_s=graceful_timeout_s,
        )
        command_line = shlex.join(argv)
        command = directory / COMMAND_FILE
        command.write_text(
            f"#!/bin/sh\n# modelserve tune's choice: {best.config.label}\nexec {command_line}\n"
        )
        command.chmod(0o755)
        written["command"] = command
    document = {
        "limits": {
            "memory_budget_bytes": limits.memory_budget_bytes,
            "device_memory_budget_bytes": limits.device_memory_budget_bytes,
            "p99_slo_ms": limits.p99_slo_ms,
            "max_error_ratio": limits.max_error_ratio,
        },
        "best": None if best is None else {**point(best), "config": asdict(best.config)},
        "best_by_architecture": {
            name: {**point(trial), "config": asdict(trial.config)}
            for name, trial in outcome.best_by_architecture.items()
        },
        "nearest_misses": [point(t) for t in outcome.nearest_misses],
        "interrupted": outcome.interrupted,
        "command": command_line,
        "search": search,
        "points": [point(t) for t in outcome.trials],
    }
    result = directory / RESULT_FILE
    result.write_text(json.dumps(document, indent=1))
    written["result"] = result
    return written
