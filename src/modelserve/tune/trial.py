"""One trial: start a configuration, warm it up, measure it under load and its memory, stop it.

A trial runs ``modelserve stack`` (model server + gateway, OS-assigned ports, a ready file) or the coupled
architecture (``python -m modelserve.coupled``) as a subprocess in its own process group, waits for its
ready file, checks that the request is answered 2xx, then runs `modelserve.bench.run_load` while a
`MemorySampler` reads the peak PSS of every process the configuration runs (the stack's supervisor
excluded: systemd or Kubernetes can do its job). Everything is stopped afterwards, on errors too; a
configuration that cannot start or answer is a result with ``failure`` set, never an exception.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from modelserve.coupled.command import coupled_argv
from modelserve.tune.outputs import batching_text
from modelserve.tune.results import Limits, TrialResult, judge
from modelserve.tune.space import TrialConfig

_POLL_S = 0.05
_STOP_GRACE_S = 20.0


@dataclass(frozen=True, slots=True)
class Workload:
    """What every trial serves and sends: the handler, the models, the request and the load."""

    handler: str
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    body: bytes = b""
    path: str = "/predict"
    content_type: str = "application/json"
    concurrency: int = 8
    warmup_s: float = 2.0
    load_processes: int = 1
    serve_args: tuple[str, ...] = ()  # extra ``modelserve serve`` flags for every stack trial
    startup_timeout_s: float = 180.0
    request_timeout_s: float = 30.0


class TrialFailed(Exception):
    """The configuration could not start or answer; the message says why."""


class TrialRunner:
    """``evaluate(config, duration_s)`` for `Search`: runs real trials in ``workdir``."""

    def __init__(
        self, workload: Workload, limits: Limits, workdir: Path, log: Callable[[str], None] | None = None
    ) -> None:
        self.workload = workload
        self.limits = limits
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = log
        self._count = 0

    def evaluate(self, config: TrialConfig, duration_s: float) -> TrialResult:
        """Run ``config`` for ``duration_s`` measured seconds; always stops what it started."""
        self._count += 1
        folder = self.workdir / f"trial-{self._count:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        process: subprocess.Popen[bytes] | None = None
        try:
            process = self._start(config, folder)
            state = _wait_ready(process, folder / "ready.json", self.workload.startup_timeout_s, folder)
            url = str(state["url"]).rstrip("/") + self.workload.path
            self._warm_up(url)
            return self._measure(config, duration_s, url, _pids(config, state, process), started)
        except TrialFailed as failure:
            return _failed(config, str(failure), time.monotonic() - started, duration_s)
        except Exception as error:  # a bug in the load generator or sampler fails this trial, not the search
            why = f"{type(error).__name__}: {error}"
            return _failed(config, why, time.monotonic() - started, duration_s)
        finally:
            if process is not None:
                _stop(process)

    # -- steps -------------------------------------------------------------------------------------------

    def _start(self, config: TrialConfig, folder: Path) -> subprocess.Popen[bytes]:
        argv = [sys.executable, *self.command(config, folder)]
        log = (folder / "server.log").open("ab")
        with log:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                process_group=0,
            )
        return process

    def command(self, config: TrialConfig, folder: Path) -> list[str]:
        """The command line (after the interpreter) that runs ``config``, writing ``folder/ready.json``."""
        work = self.workload
        ready = str(folder / "ready.json")
        if config.architecture == "coupled":
            return coupled_argv(
                work.handler,
                model_name=work.model_name,
                model_base_path=work.model_base_path,
                model_config_file=work.model_config_file,
                bind="127.0.0.1:0",
                workers=config.workers,
                worker_class=config.worker_class,
                threads=config.threads,
                ready_file=ready,
            )
        models = (
            [f"--model_config_file={work.model_config_file}"]
            if work.model_config_file
            else [f"--model_name={work.model_name}", f"--model_base_path={work.model_base_path}"]
        )
        serve = list(work.serve_args)
        if config.batching.enabled:
            parameters = folder / "batching_parameters.txt"
            parameters.write_text(batching_text(config.batching))
            serve += ["--enable_batching", f"--batching_parameters_file={parameters}"]
        return [
            "-m", "modelserve.stack", work.handler, *models,
            "--rest_api_port=0", "--grpc_port=0", "--port=0",
            f"--workers={config.workers}", f"--worker-class={config.worker_class}",
            f"--threads={config.threads}", f"--upstream={config.upstream}",
            f"--timeout={work.request_timeout_s:g}", "--graceful-timeout=5",
            f"--ready-file={ready}", f"--log-dir={folder / 'logs'}",
            *(f"--serve-arg={flag}" for flag in serve),
        ]  # fmt: skip

    def _warm_up(self, url: str) -> None:
        """One request must be answered 2xx: a handler that fails is a failed trial, not a fast one."""
        work = self.workload
        try:
            reply = httpx.post(
                url,
                content=work.body,
                headers={"content-type": work.content_type},
                timeout=work.request_timeout_s,
                trust_env=False,
            )
        except httpx.HTTPError as error:
            raise TrialFailed(f"the first request failed: {type(error).__name__}: {error}") from error
        if not 200 <= reply.status_code < 300:
            raise TrialFailed(f"the first request was answered {reply.status_code}: {reply.text[:300]}")

    def _measure(
        self, config: TrialConfig, duration_s: float, url: str, pids: list[int], started: float
    ) -> TrialResult:
        from modelserve.bench.load import LoadSpec, RequestTemplate, run_load
        from modelserve.bench.memory import MemorySampler

        work = self.workload
        spec = LoadSpec(
            request=RequestTemplate(
                url=url, method="POST", body=work.body, headers=(("content-type", work.content_type),)
            ),
            concurrency=work.concurrency,
            duration_s=duration_s,
            warmup_s=work.warmup_s,
            processes=work.load_processes,
            timeout_s=work.request_timeout_s,
        )
        with MemorySampler(pids, interval_s=0.25) as sampler:
            load = run_load(spec)
        memory = sampler.result()
        device = _device_bytes(memory.gpus)
        errors = sum(load.errors.values())
        p99 = float(load.latency_ms.get("p99", 0.0))
        fits_memory, fits_slo = judge(self.limits, p99, load.requests, errors, memory.peak_pss_bytes, device)
        notes = tuple(load.notes) + (("the load generator was saturated",) if load.saturated else ())
        return TrialResult(
            config=config,
            rps=load.rps,
            p50_ms=float(load.latency_ms.get("p50", 0.0)),
            p99_ms=p99,
            requests=load.requests,
            errors=errors,
            peak_pss_bytes=memory.peak_pss_bytes,
            peak_device_bytes=device,
            fits_memory=fits_memory,
            fits_slo=fits_slo,
            duration_s=time.monotonic() - started + _STOP_ESTIMATE_S,
            measured_s=load.duration_s,
            notes=notes,
        )


_STOP_ESTIMATE_S = 1.0  # the stop happens after the result is made; counted in the trial's cost


def _wait_ready(
    process: subprocess.Popen[bytes], ready: Path, timeout_s: float, folder: Path
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while not ready.exists():
        if process.poll() is not None:
            raise TrialFailed(f"exited with code {process.returncode} before ready: {_tail(folder)}")
        if time.monotonic() > deadline:
            raise TrialFailed(f"not ready after {timeout_s:g} s: {_tail(folder)}")
        time.sleep(_POLL_S)
    state: dict[str, Any] = json.loads(ready.read_text())
    return state


def _pids(config: TrialConfig, state: dict[str, Any], process: subprocess.Popen[bytes]) -> list[int]:
    """Every process the configuration runs (each sampled with its children)."""
    if config.architecture == "coupled":
        return [process.pid]  # the Gunicorn master; its workers are its children
    pids = state.get("pids", {})
    return [int(pids[role]) for role in ("model_server", "gateway", "nginx") if pids.get(role)]


def _device_bytes(gpus: list[dict[str, Any]]) -> int | None:
    """GPU memory the trial used at its peak, summed over the GPUs (None without NVML)."""
    if not gpus:
        return None
    total = 0
    for gpu in gpus:
        value = next((gpu[key] for key in ("peak_used_by_pids_bytes", "peak_used_bytes") if key in gpu), None)
        if value is None:
            return None
        total += int(value)
    return total


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (graceful: the stack stops its children in order), then SIGKILL the whole group."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(_STOP_GRACE_S)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)


def _tail(folder: Path, lines: int = 6) -> str:
    texts = []
    for log in [folder / "server.log", *sorted((folder / "logs").glob("*.log"))]:
        if log.exists():
            texts.append(f"[{log.name}] " + " | ".join(log.read_text(errors="replace").splitlines()[-lines:]))
    return "\n".join(texts) or "(no log)"


def _failed(config: TrialConfig, why: str, spent_s: float, duration_s: float) -> TrialResult:
    # measured_s = duration_s: the search does not run it again; duration_s - measured_s = real cost.
    return TrialResult(
        config=config, rps=0.0, p50_ms=0.0, p99_ms=0.0, requests=0, errors=0, peak_pss_bytes=0,
        peak_device_bytes=None, fits_memory=False, fits_slo=False, duration_s=spent_s + duration_s,
        measured_s=duration_s, failure=why,
    )  # fmt: skip
