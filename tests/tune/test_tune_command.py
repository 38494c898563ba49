"""``modelserve tune``'s flags: durations, batching variants, the space, and what it refuses."""

from __future__ import annotations

import pytest

from modelserve.cli import build_parser, main
from modelserve.tune.command import parse_batching, parse_duration, space_from_args


@pytest.mark.parametrize(("text", "seconds"), [("90", 90.0), ("90s", 90.0), ("10m", 600.0), ("1h", 3600.0)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten", "-5", "0m"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_batching_variants() -> None:
    variants = parse_batching("adaptive, off ,static:16:500")
    assert [v.name for v in variants] == ["adaptive", "off", "static-16-0.5ms"]
    assert variants[2].batch_timeout_micros == 500 and not variants[1].enabled
    with pytest.raises(ValueError, match="unknown variant"):
        parse_batching("static:16")


def test_the_space_from_flags() -> None:
    args = build_parser().parse_args(
        ["tune", "--handler=h.py", "--architecture=both", "--worker-classes=gevent,sync", "--upstreams=grpc"]
    )
    space = space_from_args(args)
    assert space.architectures == ("stack", "coupled") and space.worker_classes == ("gevent", "sync")
    assert space.upstreams == ("grpc",)


def test_a_running_stack_is_refused_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tune", "--url=http://127.0.0.1:8000"]) == 2
    assert "not implemented" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--model_base_path=/m"], "--handler"),
        (["--handler=h.py"], "--model_base_path"),
        (["--handler=h.py", "--model_base_path=/m", "--memory-budget=lots"], "invalid memory size"),
        (["--handler=h.py", "--model_base_path=/m", "--worker-classes=fast"], "--worker-classes"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tune", *flags]) == 2
    assert message in capsys.readouterr().err


def test_a_missing_extra_is_named_before_any_trial_runs(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import modelserve.tune.command as command

    monkeypatch.setattr(command, "_NEEDS", (*command._NEEDS, ("modelserve_no_such_module", "tune")))
    assert main(["tune", "--handler", "h.py", "--model_base_path", "/nonexistent"]) == 2
    assert "pip install 'modelserve[tune]'" in capsys.readouterr().err
