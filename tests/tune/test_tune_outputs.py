"""The files tune writes: a valid Gunicorn config, a batching file modelserve reads, a command line that
modelserve's own parser accepts, and a result ``modelserve plan --from`` reads."""

from __future__ import annotations

import json
import runpy
import shlex
from pathlib import Path

import pytest
from gunicorn.config import Config  # type: ignore[import-untyped]
from tune_fakes import LIMITS, sample_outcome, sample_trials

from modelserve.cli import build_parser
from modelserve.config.text_files import parse_batching_parameters, read_batching_parameters
from modelserve.plan.command import best_points
from modelserve.tune.outputs import batching_text, gunicorn_conf_text, stack_command, write_outputs
from modelserve.tune.search import SearchOutcome
from modelserve.tune.space import BATCHING_ADAPTIVE, BATCHING_OFF, TrialConfig, static_batching

COMMAND_ARGS = {
    "handler": "/srv/handler.py",
    "model_name": "tiny",
    "model_base_path": "/models/tiny",
    "timeout_s": 30.0,
    "graceful_timeout_s": 5.0,
}


@pytest.mark.parametrize("worker_class", ["sync", "gthread", "gevent", "asyncio"])
@pytest.mark.parametrize("architecture", ["stack", "coupled"])
def test_the_gunicorn_config_is_valid_python_with_valid_gunicorn_settings(
    tmp_path: Path, worker_class: str, architecture: str
) -> None:
    config = TrialConfig(architecture, worker_class, 6)
    path = tmp_path / "gunicorn.conf.py"
    path.write_text(gunicorn_conf_text(config, timeout_s=30.0, graceful_timeout_s=5.0))
    settings = {k: v for k, v in runpy.run_path(str(path)).items() if not k.startswith("__")}
    gunicorn = Config()
    for name, value in settings.items():
        gunicorn.set(name, value)  # raises on an unknown setting or a bad value
    assert gunicorn.workers == 6
    assert gunicorn.worker_class_str == {"asyncio": "uvicorn_worker.UvicornWorker"}.get(
        worker_class, worker_class
    )
    assert gunicorn.threads == (4 if worker_class == "gthread" else 1)
    assert ("wsgi_app" in settings) == (architecture == "coupled")
    assert (gunicorn.timeout, gunicorn.graceful_timeout) == (30, 5)  # what the trials ran with
    if architecture == "coupled" and worker_class != "asyncio":  # the factory is told its worker class
        assert settings["wsgi_app"] == f"modelserve.coupled.app:create_wsgi_app({worker_class!r})"


def test_batching_files_parse_with_modelserves_reader() -> None:
    adaptive = parse_batching_parameters(batching_text(BATCHING_ADAPTIVE))
    assert (
        adaptive.max_batch_size == 64 and not adaptive.timeout_given and adaptive.pad_variable_length_inputs
    )
    static = parse_batching_parameters(batching_text(static_batching(32, 2000)))
    assert (static.max_batch_size, static.batch_timeout_micros, static.timeout_given) == (32, 2000, True)
    parse_batching_parameters(batching_text(BATCHING_OFF))  # comments only: a valid, empty message


def test_the_stack_command_parses_with_modelserves_cli() -> None:
    config = TrialConfig("stack", "gthread", 5, "grpc", static_batching(16, 500))
    argv = stack_command(config, "/srv/handler.py", "tiny", "/models/tiny", "", "/out/batching.txt",
                         timeout_s=30.0, graceful_timeout_s=5.0)  # fmt: skip
    assert argv[0] == "modelserve"
    args = build_parser().parse_args(argv[1:])
    assert (args.command, args.handler, args.workers, args.worker_class) == (
        "stack",
        "/srv/handler.py",
        5,
        "gthread",
    )
    assert args.upstream == "grpc" and args.model_base_path == "/models/tiny"
    assert (args.timeout, args.graceful_timeout) == (30.0, 5.0)
    assert args.serve_args == ["--enable_batching", "--batching_parameters_file=/out/batching.txt"]
    off = stack_command(TrialConfig(batching=BATCHING_OFF), "h.py", "m", "", "/c.config", "/b.txt")
    assert build_parser().parse_args(off[1:]).serve_args == []


def test_the_coupled_command_parses_with_its_launcher() -> None:
    import argparse

    from modelserve.coupled.command import configure_parser

    argv = stack_command(
        TrialConfig("coupled", "gevent", 3), "/srv/handler.py", "tiny", "/models/tiny", "", ""
    )
    assert argv[:3] == ["python", "-m", "modelserve.coupled"]
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    args = parser.parse_args(argv[3:])
    assert (args.workers, args.worker_class, args.model_name) == (3, "gevent", "tiny")
    assert (args.timeout, args.graceful_timeout) == (30.0, 5.0)


def test_write_outputs_writes_every_file_and_plan_reads_the_result(tmp_path: Path) -> None:
    outcome = sample_outcome()
    best = outcome.best
    assert best is not None
    files = write_outputs(tmp_path, outcome, LIMITS, COMMAND_ARGS, {"trials": len(outcome.trials)})
    assert set(files) == {"batching", "gunicorn", "command", "result"}
    assert read_batching_parameters(files["batching"]).max_batch_size == 32
    line = files["command"].read_text().splitlines()[-1]
    argv = shlex.split(line.removeprefix("exec "))
    assert build_parser().parse_args(argv[1:]).upstream == "grpc"
    document = json.loads(files["result"].read_text())
    assert document["best"]["label"] == best.config.label and document["best"]["fits"]
    assert document["best"]["rps"] == 398.0 and document["best"]["concurrency"] == 16
    stack, coupled = best_points(document)
    assert stack is not None and coupled is not None
    # plan prices the configuration tune chose, at the rate tune chose it by (398, not its lucky 402 trial)
    assert (stack["label"], stack["rps"]) == (best.config.label, 398.0)
    assert coupled["workers"] == 2  # the 4-worker coupled point is over the budget
    assert [p["fits"] for p in document["points"]] == [t.fits for t in outcome.trials]
    assert [p["saturated"] for p in document["points"]].count(True) == 1


def test_without_a_fitting_configuration_only_the_result_is_written(tmp_path: Path) -> None:
    trials = sample_trials()
    outcome = SearchOutcome(best=None, trials=trials, elapsed_s=1.0, nearest_misses=[trials[2]])
    files = write_outputs(tmp_path, outcome, LIMITS, COMMAND_ARGS, {})
    assert set(files) == {"result"}
    document = json.loads(files["result"].read_text())
    assert document["best"] is None and document["best_by_architecture"] == {}
    assert [p["label"] for p in document["nearest_misses"]] == [trials[2].config.label]
