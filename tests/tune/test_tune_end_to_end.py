"""``modelserve tune`` for real: a tiny model, a tiny handler, a tight time budget; the choice respects the
memory budget and the SLO, and every file is written."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from modelserve.cli import build_parser

HANDLER = """
import numpy as np
from modelserve.gateway import Request

MODEL = "tiny"

def preprocess(request: Request) -> dict[str, np.ndarray]:
    return {"x": np.asarray([request.json()["x"]], np.float32)}

def postprocess(request: Request, outputs: dict[str, np.ndarray]) -> object:
    return {"argmax": int(np.argmax(outputs["y"][0]))}
"""
BUDGET_S = 40
MEMORY_BUDGET_MIB = 1536
SLO_MS = 500.0


def test_tune_chooses_a_configuration_within_the_limits_and_writes_every_file(
    tmp_path: Path, tiny_repo: Path
) -> None:
    handler = tmp_path / "e2e_tiny_handler.py"
    handler.write_text(HANDLER)
    out = tmp_path / "out"
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "modelserve", "tune", f"--handler={handler}", "--model_name=tiny",
         f"--model_base_path={tiny_repo}", f"--memory-budget={MEMORY_BUDGET_MIB}MiB", f"--p99-slo-ms={SLO_MS}",
         f"--time-budget={BUDGET_S}s", "--trial-seconds=1", "--confirm-seconds=1.5", "--warmup-seconds=0.5",
         "--worker-classes=sync,gthread", "--upstreams=rest", "--batching=adaptive,off", "--max-workers=3",
         "--start-workers=2", "--concurrency=4", "--architecture=both", f"--output-dir={out}"],
        capture_output=True, text=True, timeout=BUDGET_S + 60,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert run.returncode == 0, run.stdout + run.stderr
    assert elapsed < BUDGET_S + 25, run.stdout  # the budget, plus the last trial's stop and the report
    for name in ("gunicorn.conf.py", "batching_parameters.txt", "stack_command.sh", "tune_result.json"):
        assert (out / name).is_file(), name
    document = json.loads((out / "tune_result.json").read_text())
    best = document["best"]
    assert best["fits"] and best["pss_mib"] <= MEMORY_BUDGET_MIB and best["p99_ms"] <= SLO_MS
    assert best["rps"] > 0 and best["errors"] == 0
    assert len(document["points"]) >= 3
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
