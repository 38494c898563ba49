"""``modelserve tune --stack-ready-file``: a real ``modelserve stack`` (tiny model, tiny handler, OS-assigned
ports) tuned live. The choice respects the limits and the gateway ends with it (its Gunicorn master's
children counted); ``--restore``, a SIGTERM mid-search and a failing search leave the original count; the
flags a running stack fixes, and a second tune on the same stack, are refused."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stack"))
from stack_support import TINY_HANDLER, StackRun  # type: ignore[import-not-found]  # tests/stack's harness

from modelserve.cli import build_parser, main
from modelserve.tune.running_stack import GatewayWorkers, attach

MEMORY_BUDGET_MIB = 1536
SLO_MS = 500.0
QUICK = ["--trial-seconds=1", "--confirm-seconds=1.5", "--warmup-seconds=0.5", "--concurrency=4"]
BODY = json.dumps({"x": [0.5] * 64})


@pytest.fixture
def stack(tmp_path: Path, tiny_repo: Path, request: pytest.FixtureRequest) -> Iterator[StackRun]:
    """A running stack of (workers, worker class) gateway workers: 3 sync unless the test is parametrized."""
    workers, worker_class = getattr(request, "param", (3, "sync"))
    handler = tmp_path / "live_tiny_handler.py"
    handler.write_text(TINY_HANDLER)
    run = StackRun(
        [str(handler), "--model_name=tiny", f"--model_base_path={tiny_repo}", "--rest_api_port=0",
         "--grpc_port=0", "--port=0", f"--workers={workers}", f"--worker-class={worker_class}", "--graceful-timeout=5"],
        tmp_path,
    )  # fmt: skip
    run.start()
    try:
        yield run
    finally:
        try:
            assert run.stop(30) == 0, run.output()
        finally:
            run.kill()


def gateway_workers(run: StackRun) -> int:
    """The gateway's workers once stable: the live children of its Gunicorn master."""
    return GatewayWorkers(run.state["pids"]["gateway"], run.state["gateway_url"]).count()


def tune(run: StackRun, out: Path, *flags: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelserve", "tune", f"--stack-ready-file={run.ready_path}",
         f"--memory-budget={MEMORY_BUDGET_MIB}MiB", f"--p99-slo-ms={SLO_MS}", f"--body={BODY}",
         f"--output-dir={out}", *QUICK, *flags],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_the_stack_ends_with_the_chosen_worker_count_and_the_files_reproduce_it(
    stack: StackRun, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    run = tune(stack, out, "--time-budget=20s", "--min-workers=1", "--max-workers=4", "--start-workers=1")
    assert run.returncode == 0, run.stdout + run.stderr
    document = json.loads((out / "tune_result.json").read_text())
    best = document["best"]
    assert best["fits"] and best["pss_mib"] <= MEMORY_BUDGET_MIB and best["p99_ms"] <= SLO_MS
    assert best["rps"] > 0 and best["errors"] == 0 and best["worker_class"] == "sync"
    assert document["best_by_architecture"]["stack"]["label"] == best["label"]
    # The search changed the count (it started at 1 while the stack ran 3) and left the chosen one.
    assert {p["workers"] for p in document["points"]} >= {1, 2}
    assert gateway_workers(stack) == best["workers"]
    running = document["search"]["running_stack"]
    assert running["original_workers"] == 3 and running["final_workers"] == best["workers"]
    assert running["fixed"] == {"worker_class": "sync", "threads": 4, "upstream": "rest", "batching": "off"}
    assert f"now runs {best['workers']} sync workers (the choice)" in run.stdout
    # stack_command.sh is the running stack's own command with the chosen --workers.
    argv = shlex.split((out / "stack_command.sh").read_text().splitlines()[-1].removeprefix("exec "))
    parsed = build_parser().parse_args(argv[1:])
    assert parsed.workers == best["workers"] and parsed.worker_class == "sync" and parsed.model_name == "tiny"
    assert f"workers = {best['workers']}" in (out / "gunicorn.conf.py").read_text()
    assert not (out / "batching_parameters.txt").exists()  # batching was not searched: none is prescribed
    assert "chosen: " in (out / "report.html").read_text()
    reply = httpx.post(f"{stack.state['gateway_url']}/predict", content=BODY, timeout=10)
    assert reply.status_code == 200, reply.text


def test_restore_leaves_the_original_count(stack: StackRun, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = tune(stack, out, "--restore", "--time-budget=12s", "--max-workers=2")
    assert run.returncode == 0, run.stdout + run.stderr
    document = json.loads((out / "tune_result.json").read_text())
    assert {p["workers"] for p in document["points"]} <= {1, 2}  # the stack's 3 is outside the range
    assert document["best"]["workers"] in (1, 2)
    assert gateway_workers(stack) == 3 and document["search"]["running_stack"]["final_workers"] == 3
    assert "now runs 3 sync workers (the original: --restore)" in run.stdout


def test_sigterm_mid_search_restores_the_original_count(stack: StackRun, tmp_path: Path) -> None:
    out = tmp_path / "out"
    master = psutil.Process(stack.state["pids"]["gateway"])
    command = [sys.executable, "-m", "modelserve", "tune", f"--stack-ready-file={stack.ready_path}",
               "--time-budget=120s", "--trial-seconds=30", "--warmup-seconds=0.5", "--concurrency=2",
               "--start-workers=1", "--max-workers=2", f"--output-dir={out}"]  # fmt: skip
    tuner = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while len(master.children()) != 1:  # the first trial set 1 worker: the count is not the original
            assert tuner.poll() is None, tuner.communicate()[0]
            assert time.monotonic() < deadline, "the first trial never changed the worker count"
            time.sleep(0.05)
        second = subprocess.run([*command[:-1], f"--output-dir={tmp_path / 'second'}"],
                                capture_output=True, text=True, timeout=30)  # fmt: skip
        assert second.returncode == 2 and "another modelserve tune" in second.stderr, second.stderr
        tuner.send_signal(signal.SIGTERM)
        output = tuner.communicate(timeout=60)[0].decode()
    finally:
        if tuner.poll() is None:
            tuner.kill()
            tuner.wait()
    assert tuner.returncode == 128 + signal.SIGTERM, output
    assert "now runs 3 sync workers (the original: interrupted)" in output
    assert gateway_workers(stack) == 3
    assert json.loads((out / "tune_result.json").read_text())["interrupted"]


@pytest.mark.parametrize("stack", [(2, "sync")], indirect=True)
def test_nothing_fitting_leaves_the_original_count(stack: StackRun, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = tune(stack, out, "--time-budget=8s", "--max-workers=1", "--p99-slo-ms=0.001")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "now runs 2 sync workers (the original: nothing fitted)" in run.stdout
    assert gateway_workers(stack) == 2
    assert not (out / "stack_command.sh").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--worker-classes=gevent"], "--worker-classes"),
        (["--handler=h.py", "--batching=off"], "--handler, --batching"),
        (["--serve-arg=--enable_batching"], "--serve-arg"),
    ],
)
def test_what_a_running_stack_fixes_is_refused(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tune", f"--stack-ready-file={tmp_path / 'ready.json'}", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "only the gateway's worker count" in err


def test_a_ready_file_that_is_not_a_stacks_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    serve_ready = tmp_path / "serve.ready.json"
    serve_ready.write_text(json.dumps({"rest_port": 8501, "grpc_port": 8500}))
    assert main(["tune", f"--stack-ready-file={serve_ready}"]) == 2
    assert "not a stack's ready file" in capsys.readouterr().err
    assert main(["tune", "--restore", "--handler=h.py", "--model_base_path=/m"]) == 2


@pytest.mark.parametrize(
    "stack", [(2, "sync"), (2, "gthread"), (2, "gevent"), (2, "asyncio")], indirect=True, ids=lambda p: p[1]
)
def test_the_gateway_master_takes_sigttin_and_sigttou_for_every_worker_class(stack: StackRun) -> None:
    master = stack.state["pids"]["gateway"]
    workers = GatewayWorkers(master, stack.state["gateway_url"])
    assert workers.count() == 2 and set(stack.state["pids"]["gateway_workers"]) == workers.pids()
    first = workers.resize(3, timeout_s=30)
    assert len(first) == 3 and all(psutil.Process(pid).ppid() == master for pid in first)
    assert len(workers.resize(1, timeout_s=30)) == 1
    assert len(workers.resize(2, timeout_s=30)) == 2
    assert workers.count() == 2  # Gunicorn keeps the count: no worker was restarted behind our back
    reply = httpx.post(f"{stack.state['gateway_url']}/predict", content=BODY, timeout=10)
    assert reply.status_code == 200, reply.text


def test_the_reproducing_command_replaces_only_the_worker_count(stack: StackRun) -> None:
    running = attach(stack.ready_path)
    assert running.gateway_pid == stack.state["pids"]["gateway"]
    assert running.config.worker_class == "sync" and running.config.batching.name == "off"
    command = running.command(7)
    assert command[:2] == ["modelserve", "stack"] and command.count("--workers=7") == 1
    assert not [arg for arg in command if arg.startswith("--workers") and arg != "--workers=7"]
    assert f"--ready-file={stack.ready_path}" in command
