"""``modelserve tune`` for real: a tiny model, a tiny handler, a tight time budget; the choice respects the
memory budget and the SLO, the search ends within its budget (plus the documented slack), every file is
written, and a SIGTERM mid-trial leaves no process of the trial behind."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
from stack.stack_support import TINY_HANDLER  # tests/stack's handler

from modelserve.cli import build_parser
from modelserve.tune.trial import BUDGET_SLACK_S

BUDGET_S = 60  # two screening trials, a climb and a confirmation, even on a busy 2-core machine
MEMORY_BUDGET_MIB = 1536
SLO_MS = 500.0


def test_tune_chooses_a_configuration_within_the_limits_and_writes_every_file(
    tmp_path: Path, tiny_repo: Path
) -> None:
    handler = tmp_path / "e2e_tiny_handler.py"
    handler.write_text(TINY_HANDLER)
    out = tmp_path / "out"
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "modelserve", "tune", f"--handler={handler}", "--model_name=tiny",
         f"--model_base_path={tiny_repo}", f"--memory-budget={MEMORY_BUDGET_MIB}MiB", f"--p99-slo-ms={SLO_MS}",
         f"--time-budget={BUDGET_S}s", "--trial-seconds=1", "--confirm-seconds=1.5", "--warmup-seconds=0.5",
         "--worker-classes=gthread", "--upstreams=rest", "--batching=adaptive,off", "--max-workers=3",
         "--start-workers=2", "--concurrency=4", "--architecture=both", f"--output-dir={out}"],
        capture_output=True, text=True, timeout=BUDGET_S + 60,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert run.returncode == 0, run.stdout + run.stderr
    document = json.loads((out / "tune_result.json").read_text())
    # The search ends within its budget plus the documented slack, however slow this machine is; the rest
    # is the interpreter's start and the report.
    assert document["search"]["elapsed_s"] <= BUDGET_S + BUDGET_SLACK_S, run.stdout
    assert elapsed < BUDGET_S + BUDGET_SLACK_S + 20, run.stdout
    for name in ("gunicorn.conf.py", "batching_parameters.txt", "stack_command.sh", "tune_result.json"):
        assert (out / name).is_file(), name
    best = document["best"]
    assert best["fits"] and best["pss_mib"] <= MEMORY_BUDGET_MIB and best["p99_ms"] <= SLO_MS
    assert best["rps"] > 0 and best["errors"] == 0
    assert len(document["points"]) >= 2
    assert document["best_by_architecture"][best["architecture"].split("/")[0]]["label"] == best["label"]
    assert {p["architecture"] for p in document["points"]} >= {"stack/rest", "coupled"}
    assert all(p["pss_mib"] > 10 for p in document["points"] if not p["failure"])  # memory was sampled
    argv = shlex.split((out / "stack_command.sh").read_text().splitlines()[-1].removeprefix("exec "))
    if argv[0] == "modelserve":
        assert build_parser().parse_args(argv[1:]).workers == best["workers"]
    report = (out / "report.html").read_text()
    assert report.count("<svg") >= 2 and "chosen: " in report
    plan = subprocess.run(
        [sys.executable, "-m", "modelserve", "plan", f"--from={out / 'tune_result.json'}",
         "--target-rps=1000", "--price-per-hour=1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert plan.returncode == 0 and "instances" in plan.stdout, plan.stderr


def test_sigterm_mid_trial_stops_the_trial_writes_the_result_and_exits(
    tmp_path: Path, tiny_repo: Path
) -> None:
    handler = tmp_path / "sigterm_tiny_handler.py"
    handler.write_text(TINY_HANDLER)
    out = tmp_path / "out"
    tune = subprocess.Popen(
        [sys.executable, "-m", "modelserve", "tune", f"--handler={handler}", "--model_name=tiny",
         f"--model_base_path={tiny_repo}", "--time-budget=120s", "--trial-seconds=30", "--warmup-seconds=0.5",
         "--worker-classes=sync", "--upstreams=rest", "--batching=adaptive", "--start-workers=2",
         "--max-workers=2", "--concurrency=2", f"--output-dir={out}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        ready: list[Path] = []
        while not ready:  # the first trial's stack is up and under load (a 30 s window)
            assert tune.poll() is None, tune.communicate()[0]
            assert time.monotonic() < deadline, "the first trial never became ready"
            ready = list(out.glob("trials-*/trial-001/ready.json"))
            time.sleep(0.05)
        state = json.loads(ready[0].read_text())
        trial = [
            state["pid"],
            *(p for v in state["pids"].values() for p in (v if isinstance(v, list) else [v])),
        ]
        trial = [pid for pid in trial if isinstance(pid, int)]
        assert len(trial) >= 4  # supervisor, model server, gateway master and its workers
        tune.send_signal(signal.SIGTERM)
        output = tune.communicate(timeout=60)[0].decode()
    finally:
        if tune.poll() is None:
            tune.kill()
            tune.wait()
    assert tune.returncode == 128 + signal.SIGTERM, output
    assert "stopped by SIGTERM" in output
    alive = [
        pid
        for pid in trial
        if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]
    assert not alive, f"left running: {alive}\n{output}"
    document = json.loads((out / "tune_result.json").read_text())
    assert document["interrupted"] and (out / "report.html").is_file()
