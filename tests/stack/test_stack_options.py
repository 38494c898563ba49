"""``modelserve stack`` flags: parsing and validation (no processes)."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from modelserve.stack.command import add_stack_parser, configure_parser, options_from_args
from modelserve.stack.options import OptionsError, StackOptions


def parse(*argv: str) -> StackOptions:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    return options_from_args(parser.parse_args(list(argv)))


def test_defaults() -> None:
    options = parse("handler.py", "--model_base_path=/models/tiny", "--model_name=tiny")
    assert (options.rest_api_port, options.grpc_port, options.port, options.nginx_port) == (
        8501,
        8500,
        8000,
        8080,
    )
    assert (options.workers, options.worker_class, options.upstream, options.nginx) == (
        2,
        "sync",
        "rest",
        False,
    )
    assert options.max_body_bytes == 16 * 1024 * 1024
    assert not options.ephemeral_model_ports


def test_passthrough_flags_keep_their_order() -> None:
    options = parse(
        "h.py", "--model_config_file=models.config", "--serve-arg=--enable_batching",
        "--serve-arg=--batching_parameters_file=b.txt", "--gateway-arg=--retries=0", "--nginx", "--nginx-port=0",
    )  # fmt: skip
    assert options.serve_args == ("--enable_batching", "--batching_parameters_file=b.txt")
    assert options.gateway_args == ("--retries=0",)
    assert options.nginx and options.nginx_port == 0


def test_subparser_for_the_cli() -> None:
    parser = argparse.ArgumentParser(prog="modelserve")
    add_stack_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["stack", "h.py", "--model_base_path=/m", "--workers", "4", "--worker-class", "gevent"]
    )
    assert args.command == "stack"
    options = options_from_args(args)
    assert (options.handler, options.workers, options.worker_class) == ("h.py", 4, "gevent")


BASE: dict[str, Any] = {"handler": "h.py", "model_base_path": "/m"}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model_base_path": ""}, "give either --model_base_path"),
        ({"model_config_file": "c.txt"}, "give either --model_base_path"),
        ({"port": 70000}, "--port must be between 0 and 65535, got 70000"),
        ({"rest_api_port": -1}, "--rest_api_port must be between"),
        ({"port": 8501}, "the stack's ports must differ"),
        ({"nginx": True, "nginx_port": 8000}, "the stack's ports must differ"),
        ({"worker_class": "eventlet"}, "--worker-class must be one of sync, gthread, gevent, asyncio"),
        ({"upstream": "http"}, "--upstream must be one of rest, grpc"),
        ({"workers": 0}, "--workers must be at least 1"),
        ({"timeout": 0}, "--timeout must be positive"),
        ({"graceful_timeout": -1}, "--graceful-timeout must be positive"),
        ({"nginx_workers": "many"}, "--nginx-workers must be 'auto' or a positive number"),
    ],
)
def test_invalid_options_name_the_flag(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(OptionsError, match=message.replace("(", r"\(")):
        StackOptions(**{**BASE, **changes})


def test_port_zero_is_allowed_where_documented() -> None:
    options = StackOptions(**BASE, rest_api_port=0, grpc_port=0, port=0, nginx=True, nginx_port=0)
    assert options.ephemeral_model_ports
    assert StackOptions(**BASE, nginx_port=8000).nginx_port == 8000  # no clash while nginx is off


def test_public_api() -> None:
    """What ``modelserve.cli`` wires: the subcommand's parser and its runner."""
    import modelserve.stack

    assert modelserve.stack.__all__ == ["add_stack_parser", "run_stack"]


def test_bad_flag_combination_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    from modelserve.stack.command import main

    assert main(["h.py", "--model_base_path=/m", "--port=8501"]) == 2
    assert "the stack's ports must differ" in capsys.readouterr().err
