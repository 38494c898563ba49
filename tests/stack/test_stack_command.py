"""``python -m modelserve.stack`` end to end: real model server, real Gunicorn gateway, real nginx.

Every stack binds ports on 127.0.0.1 that are free (0 where the part reports its port, a just-freed port for
nginx); the tests wait on the stack's ready file and on the answers, never on log lines.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
from stack_support import TINY_HANDLER, StackRun, still_running

from modelserve.stack.nginx import find_nginx
from modelserve.stack.processes import StackError


@pytest.fixture
def handler(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_handler.py"
    path.write_text(TINY_HANDLER)
    return path


@pytest.fixture
def nginx_installed() -> None:
    try:
        find_nginx()
    except StackError as exc:
        pytest.skip(exc.message)


@pytest.fixture
def runs() -> Any:
    """Every StackRun started by a test is killed at the end if the test left it running."""
    started: list[StackRun] = []
    yield started
    for run in started:
        run.kill()


def start_stack(
    runs: list[StackRun], tmp_path: Path, handler: Path, tiny_repo: Path | None, *flags: str
) -> StackRun:
    """A stack on free ports serving ``tiny_repo`` as "tiny" (None: ``flags`` name the models)."""
    models = [f"--model_base_path={tiny_repo}", "--model_name=tiny"] if tiny_repo is not None else []
    argv = [
        str(handler), *models,
        "--rest_api_port=0", "--grpc_port=0", "--port=0", "--nginx-port=0", "--graceful-timeout=10", *flags,
    ]  # fmt: skip
    run = StackRun(argv, tmp_path / f"stack{len(runs)}")
    run.workdir.mkdir()
    runs.append(run)
    return run.start()


def predict_direct(model_server_url: str, rows: list[list[float]]) -> np.ndarray:
    response = httpx.post(f"{model_server_url}/v1/models/tiny:predict", json={"instances": rows}, timeout=10)
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["predictions"], np.float32)


def wait_until_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while still_running(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return still_running(pids)


@pytest.mark.parametrize(
    "flags",
    [
        pytest.param(("--workers=2", "--worker-class=sync"), id="sync-rest"),
        pytest.param(("--workers=1", "--worker-class=gthread", "--upstream=grpc"), id="gthread-grpc"),
        pytest.param(("--workers=2", "--worker-class=gevent", "--upstream=grpc"), id="gevent-grpc"),
        pytest.param(("--workers=1", "--worker-class=asyncio", "--protocol=v2"), id="asyncio-v2"),
    ],
)
def test_stack_serves_the_handler_and_stops_cleanly(
    runs: list[StackRun], tmp_path: Path, handler: Path, tiny_repo: Path, flags: tuple[str, ...]
) -> None:
    run = start_stack(runs, tmp_path, handler, tiny_repo, *flags)
    state = run.state
    assert state["nginx_url"] is None and state["url"] == state["gateway_url"]
    workers = int(flags[0].split("=")[1])
    assert len(state["pids"]["gateway_workers"]) == workers
    pids = run.all_pids()
    assert still_running(pids) == pids

    row = np.linspace(-1, 1, 64).round(4).tolist()
    response = httpx.post(f"{run.url}/predict", json={"x": row}, timeout=10)
    assert response.status_code == 200, response.text
    expected = predict_direct(state["model_server_url"], [row])[0]
    np.testing.assert_allclose(response.json()["y"], expected, rtol=1e-6)
    assert response.json()["pid"] in state["pids"]["gateway_workers"]
    assert httpx.get(f"{run.url}/readyz", timeout=10).status_code == 200
    stats = httpx.get(f"{run.url}/stats", timeout=10).json()
    assert stats["model_server"]["process"]["pid"] == state["pids"]["model_server"]

    output = run.output()  # the summary: URLs and the memory table
    assert state["gateway_url"] in output and state["model_server_url"] in output
    assert "gateway worker" in output and "total (" in output
    # The memory table shows the point of the stack: only the model server has the ML runtime loaded.
    table = [line for line in output.splitlines() if "MiB" in line]  # rows of the memory table
    assert any("model server" in line and "onnxruntime" in line for line in table), table
    gateway_rows = [line for line in table if "gateway worker" in line or "gateway master" in line]
    assert len(gateway_rows) == workers + 1
    assert all("onnxruntime" not in line and " none " in line for line in gateway_rows), gateway_rows

    assert run.stop() == 0, run.output()
    assert wait_until_gone(pids) == []
    assert not run.ready_path.exists()
    logs = run.workdir / "logs"
    assert "shutdown complete" in (logs / "model-server.log").read_text()
    assert (logs / "gateway.log").stat().st_size > 0


@pytest.mark.usefixtures("nginx_installed")
def test_nginx_front_door_concurrent_requests_and_graceful_stop_with_a_request_in_flight(
    runs: list[StackRun], tmp_path: Path, handler: Path, tiny_repo: Path
) -> None:
    run = start_stack(runs, tmp_path, handler, tiny_repo, "--nginx", "--workers=2", "--worker-class=gthread")
    state = run.state
    assert state["url"] == state["nginx_url"] != state["gateway_url"]
    assert state["pids"]["nginx_workers"]
    assert "nginx worker" in run.output()

    rows = np.random.default_rng(1).standard_normal((48, 64)).round(3).tolist()
    expected = predict_direct(state["model_server_url"], rows)
    with httpx.Client(timeout=10) as client, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda row: client.post(f"{run.url}/predict", json={"x": row}), rows))
    assert [a.status_code for a in answers] == [200] * len(rows)
    np.testing.assert_allclose([a.json()["y"] for a in answers], expected, rtol=1e-6)
    assert {a.json()["argmax"] for a in answers} == {int(i) for i in expected.argmax(axis=1)}
    # A body over nginx's 1 MiB in-memory buffer goes through its temp folder, which its workers (another
    # user when the stack runs as root) must be able to reach.
    large = httpx.post(f"{run.url}/predict", json={"x": rows[0], "padding": "a" * (2 << 20)}, timeout=30)
    assert large.status_code == 200, large.text
    np.testing.assert_allclose(large.json()["y"], expected[0], rtol=1e-6)

    # A request is in the worker (its marker exists) when the stack gets SIGTERM: it still completes.
    marker = tmp_path / "in-flight"
    in_flight: dict[str, Any] = {}

    def slow_request() -> None:
        in_flight["response"] = httpx.post(
            f"{run.url}/predict",
            params={"marker": str(marker), "sleep": "1.5"},
            json={"x": rows[0]},
            timeout=30,
        )

    thread = threading.Thread(target=slow_request)
    thread.start()
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert marker.exists()
    pids = run.all_pids()
    assert run.stop() == 0, run.output()
    thread.join(10)
    response = in_flight["response"]
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["y"], expected[0], rtol=1e-6)
    assert wait_until_gone(pids) == []
    output = run.output()
    assert output.index("stopping nginx (SIGQUIT)") < output.index("stopping gateway (SIGTERM)")
    assert output.index("stopping gateway (SIGTERM)") < output.index("stopping model server (SIGTERM)")


@pytest.mark.parametrize(
    ("victim", "flags"),
    [
        pytest.param("model_server", (), id="model-server"),
        pytest.param("nginx", ("--nginx",), id="nginx"),
    ],
)
def test_a_child_killed_unexpectedly_stops_the_stack(
    runs: list[StackRun], tmp_path: Path, handler: Path, tiny_repo: Path, victim: str, flags: tuple[str, ...]
) -> None:
    if victim == "nginx":
        try:
            find_nginx()
        except StackError as exc:
            pytest.skip(exc.message)
    run = start_stack(runs, tmp_path, handler, tiny_repo, "--workers=1", *flags)
    pids = run.all_pids()
    os.kill(run.state["pids"][victim], signal.SIGKILL)
    assert run.process is not None
    assert run.process.wait(30) == 1
    assert wait_until_gone(pids) == []
    name = victim.replace("_", " ")
    assert f"{name} was killed by SIGKILL unexpectedly" in run.output()


def test_a_handler_that_fails_to_load_fails_the_stack_with_the_gateway_log(
    runs: list[StackRun], tmp_path: Path, tiny_repo: Path
) -> None:
    broken = tmp_path / "broken_handler.py"
    broken.write_text("def preprocess(request):\n    return {}\n")  # no MODEL, no postprocess
    run = StackRun([str(broken), f"--model_base_path={tiny_repo}", "--model_name=tiny", "--rest_api_port=0",
                    "--grpc_port=0", "--port=0"], tmp_path / "broken")  # fmt: skip
    run.workdir.mkdir()
    runs.append(run)
    with pytest.raises(RuntimeError, match="stack exited with 1") as caught:
        run.start()
    message = str(caught.value)
    assert "gateway exited with code 2 while waiting for the gateway's ready file" in message
    assert "set MODEL = '<model name>'" in message  # the gateway's own error, from its log
    assert "stopping model server (SIGTERM)" in message


def test_model_config_file_ready_file_serve_args_and_sigint(
    runs: list[StackRun], tmp_path: Path, handler: Path, tiny_repo: Path, digits_repo: Path
) -> None:
    config = tmp_path / "models.config"
    config.write_text(
        f"model_config_list {{\n  config {{ name: 'tiny' base_path: '{tiny_repo}' }}\n"
        f"  config {{ name: 'digits' base_path: '{digits_repo}' }}\n}}\n"
    )
    run = start_stack(
        runs,
        tmp_path,
        handler,
        None,
        f"--model_config_file={config}",
        "--workers=1",
        "--serve-arg=--enable_batching",
    )
    assert (
        "model server ready: http://127.0.0.1:" in run.output() and "(models: digits, tiny)" in run.output()
    )
    state = json.loads(run.ready_path.read_text())
    assert set(state) == {
        "url", "pid", "model_server_url", "model_server_grpc", "gateway_url", "nginx_url", "log_dir", "pids",
    }  # fmt: skip
    assert run.process is not None and state["pid"] == run.process.pid
    assert state["model_server_grpc"].startswith("127.0.0.1:")
    assert Path(state["log_dir"]) == (run.workdir / "logs").resolve()
    assert "batching model=tiny" in (run.workdir / "logs" / "model-server.log").read_text()
    pids = run.all_pids()
    run.process.send_signal(signal.SIGINT)  # Ctrl-C: the same ordered stop as SIGTERM
    assert run.process.wait(30) == 0, run.output()
    assert wait_until_gone(pids) == []


def test_sigterm_during_startup_stops_what_was_started(
    runs: list[StackRun], tmp_path: Path, handler: Path
) -> None:
    """The stack is waiting for a model that never comes (an empty base path) when SIGTERM arrives."""
    empty = tmp_path / "empty_model"
    empty.mkdir()
    run = StackRun(
        [
            str(handler),
            f"--model_base_path={empty}",
            "--model_name=tiny",
            "--rest_api_port=0",
            "--grpc_port=0",
        ],
        tmp_path / "starting",
    )
    run.workdir.mkdir()
    runs.append(run)
    command = [sys.executable, "-m", "modelserve.stack", *run.argv, f"--log-dir={run.workdir / 'logs'}"]
    with run.output_path.open("ab") as out:
        run.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    stack = psutil.Process(run.process.pid)
    deadline = time.monotonic() + 30
    while not (children := [child.pid for child in stack.children()]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert children, run.output()
    assert run.stop() == 0, run.output()
    assert wait_until_gone(children) == []
    assert "stopping model server (SIGTERM)" in run.output()


BIG_HANDLER = """
import numpy as np

from modelserve.gateway import Request

MODEL = "big"


def preprocess(request: Request) -> dict[str, np.ndarray]:
    return {"x": np.asarray([request.json()["x"]], np.float32)}


def postprocess(request: Request, outputs: dict[str, np.ndarray]) -> object:
    return {"sum": float(outputs["y"].sum())}
"""


def write_big_model(base: Path, width: int = 4096, layers: int = 3) -> int:
    """An MLP with ``layers`` width x width fp32 weights (192 MiB by default); returns its file size."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, weights, previous = [], [], "x"
    for index in range(layers):
        weight = (rng.standard_normal((width, width)) / width).astype(np.float32)
        weights.append(numpy_helper.from_array(weight, f"w{index}"))
        output = "y" if index == layers - 1 else f"h{index}"
        nodes.append(helper.make_node("MatMul", [previous, f"w{index}"], [output]))
        previous = output
    graph = helper.make_graph(
        nodes,
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, width])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    (base / "1").mkdir(parents=True)
    path = base / "1" / "model.onnx"
    onnx.save(model, str(path))
    return path.stat().st_size


def test_gateway_workers_carry_no_model(runs: list[StackRun], tmp_path: Path) -> None:
    """The memory the issue is about: the model's bytes live in the model server only."""
    model_bytes = write_big_model(tmp_path / "big")
    handler = tmp_path / "big_handler.py"
    handler.write_text(BIG_HANDLER)
    run = start_stack(
        runs,
        tmp_path,
        handler,
        None,
        f"--model_base_path={tmp_path / 'big'}",
        "--model_name=big",
        "--workers=3",
    )
    answer = httpx.post(f"{run.url}/predict", json={"x": [0.5] * 4096}, timeout=30)
    assert answer.status_code == 200, answer.text
    stats = httpx.get(f"{run.url}/stats", timeout=30).json()
    workers = stats["gateway"]["workers"]
    assert len(workers) == 3
    for worker in workers:
        assert worker["pss_bytes"] < model_bytes / 4, (worker, model_bytes)
    assert stats["model_server"]["process"]["pss_bytes"] > model_bytes
    assert run.stop() == 0, run.output()
