"""``modelserve bench --architecture``: bench starts the same handler and model as a stack and as the coupled
architecture (the model in every worker), loads both alike and reports them side by side."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import psutil
from stack.stack_support import TINY_HANDLER  # tests/stack's handler

BODY = '{"x": [' + ", ".join(["0.5"] * 64) + "]}"


def processes_naming(folder: Path) -> list[int]:
    """Processes whose command line names ``folder`` (the handler's path is on every deployment's command
    line); orphans re-parented to init are found too."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        if any(str(folder) in part for part in process.info["cmdline"] or ()):
            found.append(process.info["pid"])
    return found


def bench(tmp_path: Path, tiny_repo: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    handler = tmp_path / "bench_arch_handler.py"
    handler.write_text(TINY_HANDLER)
    return subprocess.run(
        [sys.executable, "-m", "modelserve", "bench", "/predict", f"--handler={handler}", "--model_name=tiny",
         f"--model_base_path={tiny_repo}", f"--body={BODY}", "--workers=2", "--worker-class=gthread",
         "-c", "4", "-d", "1.5", "--warmup", "0.5", "--no-progress", *flags],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip


def test_both_architectures_are_measured_side_by_side_and_stopped(tmp_path: Path, tiny_repo: Path) -> None:
    out_json, out_csv = tmp_path / "both.json", tmp_path / "both.csv"
    run = bench(tmp_path, tiny_repo, "--architecture=both", f"--json={out_json}", f"--csv={out_csv}")
    assert run.returncode == 0, run.stdout + run.stderr
    document = json.loads(out_json.read_text())["architectures"]
    assert set(document) == {"stack", "coupled"}
    for architecture, entry in document.items():
        assert entry["label"].startswith(f"{architecture}"), entry["label"]
        assert entry["result"]["rps"] > 0, entry["result"]
        assert entry["result"]["errors"] == {}, entry["result"]
        # Every process of the deployment was sampled: the stack's model server and gateway master and
        # workers, or the coupled Gunicorn master and its workers (each with a model copy).
        assert len(entry["memory"]["per_process"]) >= 3, entry["memory"]
        assert entry["memory"]["peak_pss_bytes"] > 0
    rows = list(csv.DictReader(out_csv.open()))
    assert [row["architecture"].split("/")[0].split(" ")[0] for row in rows] == ["stack", "coupled"]
    assert "stack" in run.stdout and "coupled" in run.stdout and "x; p99" in run.stdout, run.stdout
    assert not processes_naming(tmp_path), "bench stops every deployment it started"


def test_architecture_without_a_body_is_a_usage_error(tmp_path: Path, tiny_repo: Path) -> None:
    handler = tmp_path / "bench_arch_handler.py"
    handler.write_text(TINY_HANDLER)
    run = subprocess.run(
        [sys.executable, "-m", "modelserve", "bench", "--architecture=stack", f"--handler={handler}",
         f"--model_base_path={tiny_repo}", "--no-progress"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2, run.stdout + run.stderr
    assert "--body or --template" in run.stderr


def test_a_deployment_that_cannot_start_is_reported_and_cleaned_up(tmp_path: Path, tiny_repo: Path) -> None:
    broken = tmp_path / "bench_broken_handler.py"
    broken.write_text("def preprocess(request):\n    return {}\n")  # no MODEL, no postprocess
    run = subprocess.run(
        [sys.executable, "-m", "modelserve", "bench", "--architecture=stack", f"--handler={broken}",
         "--model_name=tiny", f"--model_base_path={tiny_repo}", f"--body={BODY}", "--no-progress",
         "--startup-timeout=60"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2, run.stdout + run.stderr
    assert "exited with code" in run.stderr, run.stderr
    assert not processes_naming(tmp_path)
