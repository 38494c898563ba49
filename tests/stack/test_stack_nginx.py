"""nginx config generation, and a real nginx in front of a real model server (the proxy piece alone)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from stack_support import serve_argv

from modelserve.stack import probes
from modelserve.stack.memory import measure
from modelserve.stack.nginx import (
    NginxBuild,
    NginxFiles,
    NginxSettings,
    check_config,
    connect_host,
    find_nginx,
    nginx_command,
    render_config,
    write_config,
)
from modelserve.stack.processes import ChildProcess, StackError, Supervisor
from modelserve.stack.stack import free_port

NOBODY = 65534
BUILD = NginxBuild(binary="/usr/sbin/nginx", version=(1, 22, 1), temp_modules=("fastcgi",))


def nginx_or_skip() -> NginxBuild:
    try:
        return find_nginx()
    except StackError as exc:
        pytest.skip(exc.message)


def test_config_proxies_to_the_gateway_with_keepalive(tmp_path: Path) -> None:
    settings = NginxSettings(
        listen_host="127.0.0.1", listen_port=8080, gateway_host="0.0.0.0", gateway_port=8000,
        max_body_bytes=1234, timeout_seconds=30.0, shutdown_timeout_seconds=12.5,
    )  # fmt: skip
    text = render_config(settings, NginxFiles(tmp_path / "run", tmp_path / "logs"), BUILD)
    lines = {line.split("#")[0].strip() for line in text.splitlines()}
    for expected in [
        "daemon off;",
        "worker_processes 1;",
        "worker_shutdown_timeout 13s;",
        f"pid {tmp_path / 'run' / 'nginx.pid'};",
        f"error_log {tmp_path / 'logs' / 'nginx.log'} warn;",
        f"client_body_temp_path {tmp_path / 'run' / 'client_body'};",
        f"proxy_temp_path {tmp_path / 'run' / 'proxy'};",
        f"fastcgi_temp_path {tmp_path / 'run' / 'fastcgi'};",
        "server 127.0.0.1:8000;",  # a wildcard bind is reached on loopback
        "keepalive 32;",
        "listen 127.0.0.1:8080;",
        "client_max_body_size 1234;",
        "proxy_pass http://modelserve_gateway;",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "proxy_read_timeout 185s;",  # 6 x the gateway timeout + 5: never before the gateway gives up
    ]:
        assert expected in lines, expected
    # Modules not compiled in get no directive (it would be unknown to nginx).
    assert "uwsgi_temp_path" not in text and "scgi_temp_path" not in text


def test_config_options(tmp_path: Path) -> None:
    settings = NginxSettings(
        listen_host="::1",
        listen_port=9000,
        gateway_host="::",
        gateway_port=8001,
        workers="auto",
        access_log=False,
    )
    text = render_config(settings, NginxFiles(tmp_path, tmp_path), BUILD)
    assert "listen [::1]:9000;" in text
    assert "server [::1]:8001;" in text
    assert "worker_processes auto;" in text
    assert "access_log off;" in text


@pytest.mark.parametrize(
    ("bind", "connect"),
    [("0.0.0.0", "127.0.0.1"), ("::", "::1"), ("127.0.0.1", "127.0.0.1"), ("10.0.0.5", "10.0.0.5")],
)
def test_connect_host(bind: str, connect: str) -> None:
    assert connect_host(bind) == connect


def test_find_nginx_reads_version_and_modules() -> None:
    build = nginx_or_skip()
    assert Path(build.binary).is_file()
    assert build.version >= (1, 0)


def test_find_nginx_names_the_fix_when_missing() -> None:
    with pytest.raises(StackError, match="--nginx-binary"):
        find_nginx("no-such-nginx-binary")


def test_nginx_t_accepts_the_generated_config(tmp_path: Path) -> None:
    build = nginx_or_skip()
    files = NginxFiles(tmp_path / "run", tmp_path / "logs")
    write_config(NginxSettings("127.0.0.1", free_port(), "127.0.0.1", free_port()), files, build)
    check_config(build, files)  # raises with nginx's message if refused


def test_nginx_t_refusal_shows_nginx_message(tmp_path: Path) -> None:
    build = nginx_or_skip()
    files = NginxFiles(tmp_path / "run", tmp_path / "logs")
    write_config(NginxSettings("127.0.0.1", free_port(), "127.0.0.1", free_port()), files, build)
    files.config.write_text(files.config.read_text().replace("keepalive 32;", "keepalive_bogus 32;"))
    with pytest.raises(StackError, match="keepalive_bogus"):
        check_config(build, files)


def test_nginx_in_front_of_a_model_server(tmp_path: Path, tiny_repo: Path) -> None:
    """Concurrent predictions through nginx equal the model server's own answers; SIGQUIT exits 0."""
    build = nginx_or_skip()
    supervisor = Supervisor()
    ready = tmp_path / "ready.json"
    server = ChildProcess(
        "model server",
        serve_argv(ready, "--model_name=tiny", f"--model_base_path={tiny_repo}"),
        tmp_path / "model-server.log",
    )
    try:
        supervisor.start(server)
        rest_port = supervisor.wait_until("model server", lambda: probes.ready_file(ready), 60)["rest_port"]
        direct = f"http://127.0.0.1:{rest_port}"
        assert supervisor.wait_until("tiny", lambda: probes.models_available(direct, ["tiny"]), 30)
        files = NginxFiles(tmp_path / "run", tmp_path / "logs")
        port = free_port()
        write_config(NginxSettings("127.0.0.1", port, "127.0.0.1", rest_port, workers="2"), files, build)
        check_config(build, files)
        nginx = supervisor.start(
            ChildProcess("nginx", nginx_command(build, files), files.error_log, stop_signal=signal.SIGQUIT)
        )
        proxied = f"http://127.0.0.1:{port}"
        supervisor.wait_until("nginx", lambda: probes.http_ok(f"{proxied}/v1/models/tiny"), 10)

        rows = np.random.default_rng(0).standard_normal((32, 64)).round(3).tolist()

        def predict(base: str, row: list[float]) -> list[float]:
            response = httpx.post(f"{base}/v1/models/tiny:predict", json={"instances": [row]}, timeout=10)
            assert response.status_code == 200, response.text
            return list(response.json()["predictions"][0])

        with ThreadPoolExecutor(8) as pool:
            through_nginx = list(pool.map(lambda row: predict(proxied, row), rows))
        expected = [predict(direct, row) for row in rows]
        np.testing.assert_allclose(through_nginx, expected, rtol=1e-6)
        assert (tmp_path / "logs" / "nginx-access.log").exists()
        # The memory table's rows: the model server holds the runtime, nginx's master and worker do not.
        rows = {row.role: row for row in measure({"model server": server.pid, "nginx": nginx.pid})}
        assert set(rows) >= {"model server", "nginx master", "nginx worker"}
        assert rows["model server"].runtimes == ("onnxruntime",)
        assert rows["nginx worker"].runtimes == ()
    finally:
        supervisor.stop_all()
    assert nginx.returncode() == 0, nginx.log_tail()
    assert server.returncode() == 0, server.log_tail()


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_nginx_runs_without_root() -> None:
    """The generated config needs no root: an unprivileged nginx accepts it and serves with it."""
    if os.geteuid() != 0:
        pytest.skip("already unprivileged: the other tests cover that case")
    build = nginx_or_skip()
    folder = Path(tempfile.mkdtemp(prefix="modelserve-nginx-nobody-"))  # pytest's tmp_path is root-only
    try:
        folder.chmod(0o755)
        files = NginxFiles(folder / "run", folder / "logs")
        port = free_port()
        write_config(NginxSettings("127.0.0.1", port, "127.0.0.1", free_port()), files, build)
        for path in (folder, files.runtime_dir, files.log_dir):
            os.chown(path, NOBODY, -1)
        # setpriv execs nginx itself (no process in between), so signals reach nginx directly.
        as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]
        done = subprocess.run(
            [*as_nobody, *nginx_command(build, files, "-t")], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        supervisor = Supervisor()
        nginx = supervisor.start(
            ChildProcess("nginx", [*as_nobody, *nginx_command(build, files)], files.error_log, signal.SIGQUIT)
        )
        try:
            # Nothing listens upstream: nginx itself answers (503 in JSON), which proves it runs and proxies.
            status = supervisor.wait_until("nginx", lambda: _status(f"http://127.0.0.1:{port}/"), 10)
            assert status == 503
        finally:
            supervisor.stop_all()
        assert nginx.returncode() == 0, nginx.log_tail()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return None
