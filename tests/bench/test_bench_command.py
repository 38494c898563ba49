"""``modelserve bench`` end to end: the real CLI in a subprocess, its table, JSON and CSV."""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest
from bench_servers import http_server

from modelserve.bench.load import LoadResult, LoadSpec, RequestTemplate
from modelserve.bench.report import csv_row, document, result_table, write_json

T = TypeVar("T")


def _bench(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelserve", "bench", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def tiny_server(start_module_server: Any, tiny_repo: Path) -> Any:
    return start_module_server("--model_name=tiny", f"--model_base_path={tiny_repo}")


def test_bench_against_a_model_writes_table_json_and_csv(tiny_server: Any, tmp_path: Path) -> None:
    out_json, out_csv = tmp_path / "run.json", tmp_path / "run.csv"
    done = _bench(
        tiny_server.url, "--model", "tiny", "-c", "2", "-d", "1", "--warmup", "0.2", "--pid",
        str(tiny_server.process.pid), "--json", str(out_json), "--csv", str(out_csv),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "throughput" in done.stdout and "latency p99" in done.stdout and "Peak memory" in done.stdout

    document = json.loads(out_json.read_text())
    assert set(document) == {"spec", "result", "memory", "machine"}
    assert document["spec"]["request"]["url"] == f"{tiny_server.url}/v1/models/tiny:predict"
    assert document["spec"]["mode"] == "closed" and document["spec"]["concurrency"] == 2
    result = document["result"]
    assert result["requests"] > 0 and result["errors"] == {} and result["rps"] > 0
    assert set(result["latency_ms"]) == {"p50", "p90", "p99", "p99.9", "mean", "max"}
    memory = document["memory"]
    assert memory["per_process"][0]["pid"] == tiny_server.process.pid
    assert memory["peak_pss_bytes"] > 10 * 2**20  # a Python process with ONNX Runtime loaded
    assert document["machine"]["logical_cpus"] >= 1 and document["machine"]["python"]

    (row,) = list(csv.DictReader(out_csv.open()))
    assert int(row["requests"]) == result["requests"]
    assert float(row["rps"]) == pytest.approx(result["rps"], rel=1e-3)
    assert float(row["p99_ms"]) == pytest.approx(result["latency_ms"]["p99"], abs=1e-3)
    assert int(row["peak_rss_bytes"]) == memory["peak_rss_bytes"]
    assert row["mode"] == "closed" and row["errors"] == "0"


def test_open_loop_poisson_with_a_template_writes_its_spec_and_errors(tmp_path: Path) -> None:
    out_json = tmp_path / "open.json"
    with http_server(tmp_path, "--fail-every", "5") as url:
        done = _bench(
            f"{url}/predict", "--template", '{"id": {{seq}}}', "--rate", "50", "--arrival", "poisson",
            "--seed", "1", "-d", "1", "--warmup", "0", "--json", str(out_json),
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    document = json.loads(out_json.read_text())
    assert document["spec"]["mode"] == "open" and document["spec"]["arrival"] == "poisson"
    assert document["spec"]["request"]["bodies"] == 16
    assert set(document["result"]["errors"]) == {"500"}
    assert document["memory"] is None


def test_ceiling_prints_bench_own_requests_per_second() -> None:
    done = _bench("--ceiling", "-d", "1", "--warmup", "0.2", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "bench's ceiling on this machine" in done.stdout
    line = next(line for line in done.stdout.splitlines() if "ceiling on this machine" in line)
    assert float(line.split(": ", 1)[1].split(" requests/s")[0].replace(",", "")) > 1_000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["grpc://127.0.0.1:1"], "needs --model"),
        ([], "give a URL"),
        (["http://127.0.0.1:1/", "--template", "{{nope}}"], "unknown template placeholder"),
        (["http://127.0.0.1:1/", "-c", "0"], "concurrency"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(args: list[str], message: str) -> None:
    done = _bench(*args)
    assert done.returncode == 2
    assert message in done.stderr


def test_a_run_without_any_success_exits_1(tmp_path: Path) -> None:
    with http_server(tmp_path) as url:
        pass  # stopped: every request fails to connect
    done = _bench(url, "-c", "1", "-d", "0.3", "--warmup", "0", "--no-progress")
    assert done.returncode == 1
    assert "connection" in done.stdout


def _wait_for(condition: Callable[[], T | None], timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while (value := condition()) is None or value is False:
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)
    return value


def _answered(url: str) -> int:
    with urllib.request.urlopen(f"{url}/count", timeout=5) as reply:
        return int(reply.read())


def _children(pid: int, count: int) -> list[psutil.Process] | None:
    found = psutil.Process(pid).children()
    return found if len(found) == count else None


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE  # exited; its new parent has not reaped it yet
    except psutil.NoSuchProcess:
        return True


def test_killing_bench_stops_its_workers(tmp_path: Path) -> None:
    """kill -9 of ``modelserve bench`` mid-run: its workers see their pipe close and stop loading at once."""
    with http_server(tmp_path, "--delay", "0.005") as url:
        bench = subprocess.Popen(
            [sys.executable, "-m", "modelserve", "bench", f"{url}/load", "-c", "2", "-p", "2", "-d", "60",
             "--warmup", "0", "--no-progress"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        workers: list[psutil.Process] = []
        try:
            workers = _wait_for(lambda: _children(bench.pid, count=2))
            _wait_for(lambda: _answered(url) > 0)  # answers come only after "go": the run is on
            bench.kill()
            bench.wait()
            killed_at = time.monotonic()
            _wait_for(lambda: all(_gone(worker) for worker in workers), timeout=5.0)
            assert time.monotonic() - killed_at < 5.0
        finally:
            bench.kill()
            for worker in workers:
                if not _gone(worker):
                    worker.kill()


def _result(saturated: bool, latency_ms: dict[str, float] | None = None) -> LoadResult:
    return LoadResult(
        requests=10, errors={}, duration_s=1.0, rps=10.0,
        latency_ms=latency_ms or {"p50": 1.0, "p90": 2.0, "p99": 3.0, "p99.9": 4.0, "mean": 1.5, "max": 5.0},
        saturated=saturated, notes=("load generator saturated: ...",) if saturated else (),
    )  # fmt: skip


@pytest.mark.parametrize("saturated", [True, False])
def test_the_saturation_verdict_is_in_the_table_json_and_csv(saturated: bool) -> None:
    from rich.console import Console

    spec = LoadSpec(RequestTemplate("http://127.0.0.1:1/"))
    result = _result(saturated)
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(result_table(spec, result))
    table = console.export_text()
    assert ("SATURATED" in table) is saturated and ("kept up" in table) is not saturated
    assert document(spec, result, None)["result"]["saturated"] is saturated
    assert csv_row(spec, result, None)["saturated"] is saturated


def test_a_run_without_success_writes_null_latencies_in_strict_json(tmp_path: Path) -> None:
    empty = {key: math.nan for key in ("p50", "p90", "p99", "p99.9", "mean", "max")}
    spec = LoadSpec(RequestTemplate("http://127.0.0.1:1/"))
    out = tmp_path / "run.json"
    write_json(out, spec, _result(False, empty), None)
    text = out.read_text()
    assert "NaN" not in text
    assert json.loads(text)["result"]["latency_ms"] == dict.fromkeys(empty)
    assert all(csv_row(spec, _result(False, empty), None)[f"{key}_ms"] == "" for key in empty)
