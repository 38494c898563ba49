"""The command line, the options it builds, and the Gunicorn settings they become."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from modelserve.gateway.command import add_gateway_parser, options_from_args
from modelserve.gateway.gunicorn_app import gunicorn_settings, listener_url
from modelserve.gateway.options import GatewayOptions


def parse(*argv: str) -> GatewayOptions:
    parser = argparse.ArgumentParser(prog="modelserve")
    add_gateway_parser(parser.add_subparsers(dest="command"))
    return options_from_args(parser.parse_args(["gateway", *argv]))


def test_defaults_and_flags() -> None:
    options = parse("handler.py")
    assert options == GatewayOptions(handler="handler.py")
    assert (options.bind, options.workers, options.worker_class, options.timeout) == (
        "127.0.0.1:8000", 2, "sync", 30.0,
    )  # fmt: skip
    assert options.transport == "rest" and options.status_url == "http://127.0.0.1:8501"
    options = parse(
        "pkg.handler", "--bind", "0.0.0.0:9000", "--workers", "4", "--worker-class", "asyncio",
        "--model-server", "grpc://10.0.0.2:8500", "--model-server-rest", "http://10.0.0.2:8501/",
        "--protocol", "v2", "--timeout", "2.5", "--retries", "0", "--ready-file", "/tmp/r.json",
        "--max-body-bytes", "1000", "--graceful-timeout", "5", "--log-level", "debug",
    )  # fmt: skip
    assert options.transport == "grpc" and options.status_url == "http://10.0.0.2:8501"
    assert (options.protocol, options.retries, options.max_body_bytes) == ("v2", 0, 1000)
    assert parse("h.py", "--model-server", "grpc://h:8500").status_url is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"worker_class": "eventlet"}, "worker_class='eventlet'"),
        ({"workers": 0}, "workers=0"),
        ({"timeout": 0}, "timeout=0"),
        ({"retries": -1}, "retries=-1"),
        ({"model_server": "tcp://x:1"}, "model_server='tcp://x:1'"),
        ({"model_server_rest": "grpc://x:1"}, "model_server_rest="),
        ({"protocol": "kserve"}, "protocol='kserve'"),
        ({"bind": "8000"}, "bind='8000'"),
    ],
)
def test_bad_options_name_the_option(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        GatewayOptions(handler="h.py", **changes)  # type: ignore[arg-type]


def test_gunicorn_settings() -> None:
    sync = gunicorn_settings(GatewayOptions(handler="h.py", threads=8))
    assert sync["threads"] == 1  # more would turn Gunicorn's sync worker into gthread
    assert sync["worker_class"] == "sync" and sync["control_socket_disable"] is True
    assert sync["timeout"] >= 30 * 3  # every attempt of a call fits in the worker timeout
    gthread = gunicorn_settings(GatewayOptions(handler="h.py", worker_class="gthread", threads=8))
    assert gthread["threads"] == 8
    asyncio = gunicorn_settings(GatewayOptions(handler="h.py", worker_class="asyncio"))
    assert asyncio["worker_class"] == "uvicorn_worker.UvicornWorker"


def test_listener_url() -> None:
    assert listener_url(("127.0.0.1", 8000)) == "http://127.0.0.1:8000"
    assert listener_url(("::1", 8000, 0, 0)) == "http://[::1]:8000"
    assert listener_url("/run/gw.sock") == "unix:/run/gw.sock"


def test_the_package_runs_as_the_subcommand() -> None:
    """``python -m modelserve.gateway`` is ``modelserve gateway`` (same parser, same flags)."""
    done = subprocess.run(
        [sys.executable, "-m", "modelserve.gateway", "--help"], capture_output=True, text=True, check=True
    )
    assert done.stdout.startswith("usage: modelserve gateway") and "--worker-class" in done.stdout
