"""The supervisor with real processes: a real model server, and small Python programs for the edge cases."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from stack_support import serve_argv, still_running

from modelserve.stack import probes
from modelserve.stack.processes import (
    ChildExited,
    ChildProcess,
    StackError,
    StartupTimeout,
    StopRequested,
    Supervisor,
)


def python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def test_model_server_starts_reports_ready_and_stops_gracefully(tmp_path: Path, tiny_repo: Path) -> None:
    supervisor = Supervisor()
    ready = tmp_path / "ready.json"
    server = supervisor.start(
        ChildProcess(
            "model server",
            serve_argv(ready, "--model_name=tiny", f"--model_base_path={tiny_repo}"),
            tmp_path / "server.log",
        )
    )
    try:
        state = supervisor.wait_until("the ready file", lambda: probes.ready_file(ready), 60)
        assert state["pid"] == server.pid
        url = f"http://127.0.0.1:{state['rest_port']}"
        assert supervisor.wait_until("tiny", lambda: probes.models_available(url, ["tiny"]), 30) is True
        assert probes.served_models(url) == ["tiny"]
        assert supervisor.first_exited() is None
    finally:
        supervisor.stop_all()
    assert server.returncode() == 0, server.log_tail()
    assert server.describe_exit() == "exited with code 0"
    assert "shutdown complete" in server.log_tail()


def test_a_child_that_exits_during_startup_fails_with_its_log_tail(tmp_path: Path, tiny_repo: Path) -> None:
    supervisor = Supervisor()
    ready = tmp_path / "ready.json"
    supervisor.start(ChildProcess("model server", serve_argv(ready, "--port=99999"), tmp_path / "server.log"))
    with pytest.raises(ChildExited) as caught:
        supervisor.wait_until("the ready file", lambda: probes.ready_file(ready), 60)
    message = caught.value.message
    assert message.startswith("model server exited with code 2 while waiting for the ready file")
    assert "--port must be between 0 and 65535" in message  # the log tail names the cause
    supervisor.stop_all()  # idempotent after an exit


def test_a_model_that_fails_to_load_is_reported_at_once(tmp_path: Path) -> None:
    broken = tmp_path / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "model.onnx").write_bytes(b"not an onnx model")
    supervisor = Supervisor()
    ready = tmp_path / "ready.json"
    supervisor.start(
        ChildProcess(
            "model server",
            serve_argv(
                ready, "--model_name=broken", f"--model_base_path={broken.parent}", "--max_num_load_retries=0"
            ),
            tmp_path / "server.log",
        )
    )
    try:
        url = f"http://127.0.0.1:{supervisor.wait_until('ready', lambda: probes.ready_file(ready), 60)['rest_port']}"
        with pytest.raises(StackError, match="model broken failed to load: version 1: "):
            supervisor.wait_until("broken", lambda: probes.models_available(url, ["broken"]), 30)
    finally:
        supervisor.stop_all()


def test_startup_timeout(tmp_path: Path) -> None:
    supervisor = Supervisor()
    supervisor.start(ChildProcess("sleeper", python("import time; time.sleep(60)"), tmp_path / "sleeper.log"))
    started = time.monotonic()
    with pytest.raises(StartupTimeout, match=r"never: not ready after 0\.3s"):
        supervisor.wait_until("never", lambda: None, 0.3)
    assert time.monotonic() - started < 5
    supervisor.stop_all()
    assert supervisor.children[0].returncode() == -signal.SIGTERM


def test_stop_request_interrupts_waiting_and_watching(tmp_path: Path) -> None:
    supervisor = Supervisor()
    supervisor.start(ChildProcess("sleeper", python("import time; time.sleep(60)"), tmp_path / "sleeper.log"))
    supervisor.request_stop()
    with pytest.raises(StopRequested):
        supervisor.wait_until("never", lambda: None, 60)
    assert supervisor.watch() is None
    supervisor.stop_all()


def test_watch_returns_the_child_that_exited(tmp_path: Path) -> None:
    supervisor = Supervisor()
    supervisor.start(ChildProcess("sleeper", python("import time; time.sleep(60)"), tmp_path / "sleeper.log"))
    quitter = supervisor.start(
        ChildProcess("quitter", python("print('bye'); raise SystemExit(7)"), tmp_path / "q.log")
    )
    assert supervisor.watch(interval=0.05) is quitter
    assert quitter.describe_exit() == "exited with code 7"
    assert quitter.log_tail() == "bye"
    supervisor.stop_all()


def test_stop_escalates_to_sigkill_and_takes_the_whole_process_group(tmp_path: Path) -> None:
    """A child that ignores its stop signal is killed after stop_timeout, with the process it started."""
    pid_file = tmp_path / "grandchild.pid"
    code = f"""
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pid_file)!r}, "w").write(str(grandchild.pid))
        print("ignoring SIGTERM", flush=True)
        time.sleep(60)
    """
    supervisor = Supervisor()
    stubborn = supervisor.start(ChildProcess("stubborn", python(code), tmp_path / "s.log", stop_timeout=0.5))
    grandchild = supervisor.wait_until(
        "pid", lambda: int(pid_file.read_text()) if pid_file.exists() else None, 30
    )
    supervisor.wait_until("signal handler", lambda: "ignoring" in stubborn.log_tail() or None, 30)
    started = time.monotonic()
    supervisor.stop_all()
    assert time.monotonic() - started < 10
    assert stubborn.describe_exit() == "was killed by SIGKILL"
    assert "still running 0.5s after SIGTERM: SIGKILL" in stubborn.log_tail()
    deadline = time.monotonic() + 10
    while still_running([grandchild]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not still_running([grandchild])


def test_stop_all_goes_in_reverse_start_order_with_each_childs_signal(tmp_path: Path) -> None:
    order = tmp_path / "order.txt"
    code = """
        import signal, sys, time
        name = sys.argv[1]
        def stop(signum, frame):
            open({order!r}, "a").write(name + " " + signal.Signals(signum).name + "\\n")
            raise SystemExit(0)
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGQUIT, stop)
        print("ready", flush=True)
        time.sleep(60)
    """.replace("{order!r}", repr(str(order)))
    supervisor = Supervisor()
    children = [
        supervisor.start(ChildProcess(name, [*python(code), name], tmp_path / f"{name}.log", stop_signal=sig))
        for name, sig in (("first", signal.SIGTERM), ("second", signal.SIGTERM), ("third", signal.SIGQUIT))
    ]
    for child in children:
        supervisor.wait_until(child.name, lambda child=child: "ready" in child.log_tail() or None, 30)
    announced: list[str] = []
    supervisor.stop_all(lambda child: announced.append(child.name))
    assert announced == ["third", "second", "first"]
    assert order.read_text().splitlines() == ["third SIGQUIT", "second SIGTERM", "first SIGTERM"]
    assert [child.returncode() for child in children] == [0, 0, 0]


@pytest.mark.skipif(sys.platform != "linux", reason="parent-death signal is Linux only")
def test_children_get_sigterm_when_the_supervisor_dies(tmp_path: Path) -> None:
    """A SIGKILLed supervisor leaves no child behind (prctl PR_SET_PDEATHSIG)."""
    info = tmp_path / "child.json"
    parent_code = f"""
        import json, sys, time
        from pathlib import Path
        from modelserve.stack.processes import ChildProcess, Supervisor
        supervisor = Supervisor()
        child = supervisor.start(ChildProcess("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"],
                                              Path({str(tmp_path / "sleeper.log")!r})))
        Path({str(info)!r}).write_text(json.dumps({{"pid": child.pid}}))
        time.sleep(60)
    """
    parent = subprocess.Popen(python(parent_code))
    try:
        deadline = time.monotonic() + 30
        while not info.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        child_pid = json.loads(info.read_text())["pid"]
        assert still_running([child_pid])
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while still_running([child_pid]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not still_running([child_pid])
