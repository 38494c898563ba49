"""One trial: start a configuration, warm it up, measure it under load and its memory, stop it.

A trial runs ``modelserve stack`` (model server + gateway, OS-assigned ports, a ready file) or the coupled
architecture (``python -m modelserve.coupled``) as a subprocess in its own process group, waits for its
ready file, checks that the request is answered 2xx, then runs `modelserve.bench.run_load` while a
`MemorySampler` reads the peak PSS of every process the configuration runs (the stack's supervisor
excluded: systemd or Kubernetes can do its job). Everything is stopped afterwards, on errors and on an
interrupt too; a configuration that cannot start or answer is a result with ``failure`` set, never an
exception.

A trial ends within `TrialRun.budget_s`, plus at most `BUDGET_SLACK_S` (a SIGKILL, the load generator's
own stop): the start-up wait, the request timeouts and the stop's grace are cut to what is left, and
``duration_s`` is the real wall time, the stop included.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import psutil

from modelserve.coupled.command import coupled_argv
from modelserve.tune.device import device_used_now, trial_device_bytes
from modelserve.tune.outputs import batching_text
from modelserve.tune.results import Limits, TrialResult, TrialRun, judge
from modelserve.tune.space import TrialConfig

_POLL_S = 0.05
_STOP_GRACE_S = 20.0  # SIGTERM to SIGKILL, when the budget leaves that much
_MIN_STOP_GRACE_S = 2.0  # the least grace a stop gets, even out of budget
_STOP_RESERVE_S = 4.0  # kept from the budget for the stop when the start-up wait and timeouts are cut
BUDGET_SLACK_S = 10.0  # what a trial may overrun its budget by: the minimal stop grace, SIGKILL, reaping
GRACEFUL_TIMEOUT_S = 5.0  # the web workers' graceful timeout in every trial (Gunicorn's graceful_timeout)


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
    concurrency: int = 8  # requests in flight when evaluate is given a bare duration (benchmarks)
    warmup_s: float = 2.0
    load_processes: int = 1
    serve_args: tuple[str, ...] = ()  # extra ``modelserve serve`` flags for every stack trial
    startup_timeout_s: float = 180.0
    request_timeout_s: float = 30.0  # the load's request timeout and Gunicorn's worker timeout

    @classmethod
    def resolved(
        cls, handler: str, model_name: str, model_base_path: str, model_config_file: str, **settings: Any
    ) -> Workload:
        """A workload whose handler file and model paths are absolute: each trial runs in its own folder."""
        return cls(
            handler=str(Path(handler).resolve()) if Path(handler).is_file() else handler,
            model_name=model_name,
            model_base_path=str(Path(model_base_path).resolve()) if model_base_path else "",
            model_config_file=str(Path(model_config_file).resolve()) if model_config_file else "",
            **settings,
        )


class TrialFailed(Exception):
    """The configuration could not start or answer; the message says why."""


class TrialRunner:
    """``evaluate(config, run)`` for `Search`: runs real trials in ``workdir``.

    When the load generator saturates (its own CPU was the limit), the next trials get one more load
    process, up to the cores, so that later figures are the server's and not the generator's.
    """

    stop_reserve_s = _STOP_RESERVE_S  # kept for the stop when the start-up wait and timeouts are cut

    def __init__(
        self, workload: Workload, limits: Limits, workdir: Path, log: Callable[[str], None] | None = None
    ) -> None:
        self.workload = workload
        self.limits = limits
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = log
        self._count = 0
        self._process: subprocess.Popen[bytes] | None = None
        self.load_processes = workload.load_processes

    def evaluate(self, config: TrialConfig, run: TrialRun | float) -> TrialResult:
        """Run ``config`` for ``run.duration_s`` measured seconds within ``run.budget_s``; always stops
        what it started (a bare number: that many seconds at the workload's concurrency, no budget)."""
        if not isinstance(run, TrialRun):
            run = TrialRun(float(run), self.workload.concurrency)
        self._count += 1
        started = time.monotonic()
        deadline = started + run.budget_s
        tail = self.workload.warmup_s + run.duration_s + self.stop_reserve_s  # what must fit once it is up
        try:
            baseline = device_used_now() if self.limits.device_memory_budget_bytes is not None else []
            base_url, pids = self._bring_up(config, deadline, tail)
            url = base_url.rstrip("/") + self.workload.path
            self._warm_up(url, self._left(deadline, tail, self.workload.request_timeout_s))
            timeout = self._left(deadline, tail, self.workload.request_timeout_s)
            result = self._measure(config, run, url, pids, timeout, baseline)
        except TrialFailed as failure:
            result = _failed(config, str(failure), run.duration_s)
            # Failing once the budget left cannot hold the rest of the trial is the budget's doing.
            result = replace(result, cut_by_budget=deadline - time.monotonic() < tail)
        except Exception as error:  # a bug in the load generator or sampler fails this trial, not the search
            result = _failed(config, f"{type(error).__name__}: {error}", run.duration_s)
        finally:  # on an interrupt too (nothing is returned then)
            self._take_down(deadline)
        if result.saturated:
            self._more_load_processes()
        # The real cost, the stop included (a failed trial's measured_s is a window it never ran).
        spent = time.monotonic() - started
        return replace(result, duration_s=spent + (result.measured_s if result.failure else 0.0))

    @contextlib.contextmanager
    def running(self, config: TrialConfig) -> Iterator[tuple[str, list[int]]]:
        """Start ``config``, yield its base URL and the pids to sample, and always stop it: a deployment for
        a caller that runs its own load (``modelserve bench --architecture``). TrialFailed if it cannot start.
        """
        self._count += 1
        try:
            yield self._bring_up(config, time.monotonic() + self.workload.startup_timeout_s, 0.0)
        finally:
            self._take_down(time.monotonic() + _STOP_GRACE_S)

    def _bring_up(self, config: TrialConfig, deadline: float, tail: float) -> tuple[str, list[int]]:
        """Start ``config`` in its own folder; its URL and the pids to sample (the stack's gateway second)."""
        folder = self.workdir / f"trial-{self._count:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        self._process = self._start(config, folder)
        state = _wait_ready(self._process, folder / "ready.json", self._left(deadline, tail), folder)
        return str(state["url"]), _pids(config, state, self._process)

    def _take_down(self, deadline: float) -> None:
        """Stop what `_bring_up` started (idempotent; on errors and interrupts too)."""
        process, self._process = self._process, None
        if process is not None:
            grace = min(_STOP_GRACE_S, deadline - time.monotonic())
            _stop(process, max(_MIN_STOP_GRACE_S, grace))

    def _left(self, deadline: float, tail: float, cap: float | None = None) -> float:
        """Seconds a step may take so that ``tail`` still fits before ``deadline`` (at most ``cap``)."""
        left = deadline - time.monotonic() - tail
        if left <= 0:
            raise TrialFailed(f"the time budget is spent (the rest of the trial needs {tail:.0f} s)")
        return min(left, self.workload.startup_timeout_s if cap is None else cap)

    def _more_load_processes(self) -> None:
        if self.load_processes < (os.cpu_count() or 1):
            self.load_processes += 1
            self._say(f"the load generator saturated: {self.load_processes} load processes from now on")
        else:
            self._say("the load generator saturated with one process per core: req/s are lower bounds")

    def _say(self, line: str) -> None:
        if self._log is not None:
            self._log(line)

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
                timeout_s=work.request_timeout_s,
                graceful_timeout_s=GRACEFUL_TIMEOUT_S,
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
            f"--timeout={work.request_timeout_s:g}", f"--graceful-timeout={GRACEFUL_TIMEOUT_S:g}",
            f"--ready-file={ready}", f"--log-dir={folder / 'logs'}",
            *(f"--serve-arg={flag}" for flag in serve),
        ]  # fmt: skip

    def _warm_up(self, url: str, timeout_s: float) -> None:
        """One request must be answered 2xx: a handler that fails is a failed trial, not a fast one."""
        work = self.workload
        try:
            reply = httpx.post(
                url,
                content=work.body,
                headers={"content-type": work.content_type},
                timeout=timeout_s,
                trust_env=False,
            )
        except httpx.HTTPError as error:
            raise TrialFailed(f"the first request failed: {type(error).__name__}: {error}") from error
        if not 200 <= reply.status_code < 300:
            raise TrialFailed(f"the first request was answered {reply.status_code}: {reply.text[:300]}")

    def _measure(
        self,
        config: TrialConfig,
        run: TrialRun,
        url: str,
        pids: list[int],
        timeout_s: float,
        baseline: list[int],
    ) -> TrialResult:
        from modelserve.bench.load import LoadSpec, RequestTemplate, run_load
        from modelserve.bench.memory import MemorySampler

        work = self.workload
        spec = LoadSpec(
            request=RequestTemplate(
                url=url, method="POST", body=work.body, headers=(("content-type", work.content_type),)
            ),
            concurrency=run.concurrency,
            duration_s=run.duration_s,
            warmup_s=work.warmup_s,
            processes=max(1, min(self.load_processes, run.concurrency)),
            timeout_s=timeout_s,
        )
        workers = _web_workers(config, pids)
        with MemorySampler(pids, interval_s=0.25) as sampler:
            load = run_load(spec)
        memory = sampler.result()
        device = trial_device_bytes(memory.gpus, baseline)
        errors = sum(load.errors.values())
        p99 = _ms(load.latency_ms, "p99")
        fits_memory, fits_slo = judge(self.limits, p99, load.requests, errors, memory.peak_pss_bytes, device)
        notes = tuple(load.notes) + (("the load generator was saturated",) if load.saturated else ())
        return TrialResult(
            config=config,
            rps=load.rps,
            p50_ms=_ms(load.latency_ms, "p50"),
            p99_ms=p99,
            requests=load.requests,
            errors=errors,
            peak_pss_bytes=memory.peak_pss_bytes,
            peak_device_bytes=device,
            fits_memory=fits_memory,
            fits_slo=fits_slo,
            duration_s=0.0,  # evaluate sets it once everything is stopped
            measured_s=load.duration_s,
            notes=notes,
            concurrency=run.concurrency,
            saturated=load.saturated,
            peak_worker_pss_bytes=max(
                (int(p["peak_pss_bytes"]) for p in memory.per_process if p.get("pid") in workers), default=0
            ),
        )


def _ms(latency: dict[str, Any], key: str) -> float:
    """A latency percentile; 0.0 when there is none (no answer in the window: NaN or None)."""
    value = latency.get(key)
    return 0.0 if value is None or math.isnan(float(value)) else float(value)


def _wait_ready(
    process: subprocess.Popen[bytes], ready: Path, timeout_s: float, folder: Path
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while not ready.exists():
        if process.poll() is not None:
            raise TrialFailed(f"exited with code {process.returncode} before ready: {_tail(folder)}")
        if time.monotonic() > deadline:
            raise TrialFailed(
                f"not ready after {timeout_s:.0f} s (start-up timeout or time budget): {_tail(folder)}"
            )
        time.sleep(_POLL_S)
    state: dict[str, Any] = json.loads(ready.read_text())
    return state


def _pids(config: TrialConfig, state: dict[str, Any], process: subprocess.Popen[bytes]) -> list[int]:
    """Every process the configuration runs (each sampled with its children); the web tier's master is
    first for the coupled architecture, second (after the model server) for the stack."""
    if config.architecture == "coupled":
        return [process.pid]  # the Gunicorn master; its workers are its children
    pids = state.get("pids", {})
    return [int(pids[role]) for role in ("model_server", "gateway", "nginx") if pids.get(role)]


def _web_workers(config: TrialConfig, pids: list[int]) -> set[int]:
    """The web workers' pids: the children of the Gunicorn master (coupled, or the stack's gateway)."""
    index = 0 if config.architecture == "coupled" else 1
    if len(pids) <= index:
        return set()
    try:
        return {child.pid for child in psutil.Process(pids[index]).children()}
    except psutil.Error:
        return set()


def _stop(process: subprocess.Popen[bytes], grace_s: float = _STOP_GRACE_S) -> None:
    """SIGTERM (graceful: the stack stops its children in order), then SIGKILL the whole group; the SIGKILL
    also when an interrupt cuts the graceful wait short (the stack's children die with it: they get a
    parent-death signal)."""
    try:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(grace_s)
    finally:
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


def _failed(config: TrialConfig, why: str, duration_s: float) -> TrialResult:
    # measured_s = duration_s: the search does not run it again; evaluate sets duration_s so that
    # duration_s - measured_s is the real cost.
    return TrialResult(
        config=config, rps=0.0, p50_ms=0.0, p99_ms=0.0, requests=0, errors=0, peak_pss_bytes=0,
        peak_device_bytes=None, fits_memory=False, fits_slo=False, duration_s=0.0,
        measured_s=duration_s, failure=why,
    )  # fmt: skip
