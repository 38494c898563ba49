"""The upstream's pure parts: which failures are retried, the backoff, readiness and the status table."""

from __future__ import annotations

import httpx
import pytest

from modelserve.client import ModelServerError, ModelStatus
from modelserve.client.errors import ClosedBeforeReply, ConnectFailed
from modelserve.client.metadata import VersionStatus
from modelserve.errors import Code
from modelserve.gateway.http_errors import STATUS_BY_CODE, http_status
from modelserve.gateway.upstream import (
    backoff,
    closed_before_reply,
    is_connection_error,
    memory_document,
    readiness,
)


def failure(
    code: Code, http: int | None = None, cause: BaseException | None = None, message: str = "message"
) -> ModelServerError:
    error = ModelServerError(code, message, http)
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (failure(Code.UNAVAILABLE, cause=ConnectFailed("refused")), True),  # REST: nothing was sent
        (failure(Code.UNAVAILABLE, cause=ClosedBeforeReply("reset")), False),  # sent: retried as stale only
        # gRPC: never connected (grpcio's wording) vs a stream cut after sending, or the server's own answer.
        (
            failure(
                Code.UNAVAILABLE,
                message="failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
                "Failed to connect to remote host: Connection refused",
            ),
            True,
        ),
        (failure(Code.UNAVAILABLE, message="Stream removed (Socket closed)"), False),
        (failure(Code.UNAVAILABLE, message="the batcher of m/1 is shutting down"), False),
        (failure(Code.UNAVAILABLE, cause=ConnectionResetError("reset")), False),  # may have run
        (failure(Code.UNAVAILABLE, http=503), False),  # the server answered
        (failure(Code.DEADLINE_EXCEEDED, cause=httpx.ReadTimeout("slow")), False),
        (failure(Code.INVALID_ARGUMENT, http=400), False),
    ],
)
def test_only_undelivered_calls_are_retried(error: ModelServerError, retried: bool) -> None:
    assert is_connection_error(error) is retried


@pytest.mark.parametrize(
    ("cause", "stale"),
    [
        (ClosedBeforeReply("RemoteDisconnected: Remote end closed connection without response"), True),
        (ConnectionResetError("reset inside the body"), False),  # after the head: final
        (ConnectFailed("refused"), False),  # never sent: a connection error, not a stale one
    ],
)
def test_which_failures_are_a_connection_closed_before_the_reply(cause: BaseException, stale: bool) -> None:
    assert closed_before_reply(failure(Code.UNAVAILABLE, cause=cause)) is stale


def test_backoff_doubles_up_to_a_second() -> None:
    assert [backoff(attempt) for attempt in range(7)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_readiness_reports_every_version_state() -> None:
    assert readiness("m", ModelStatus("m", (VersionStatus(1, "AVAILABLE"),))).ready
    loading = readiness("m", ModelStatus("m", (VersionStatus(2, "LOADING"), VersionStatus(1, "END"))))
    assert not loading.ready
    assert loading.reason == "model 'm' has no AVAILABLE version: version 2 LOADING; version 1 END"
    failed = readiness("m", ModelStatus("m", (VersionStatus(1, "END", Code.INTERNAL, "bad file"),)))
    assert failed.reason.endswith("version 1 END (bad file)")
    assert "no version" in readiness("m", ModelStatus("m", ())).reason


def test_memory_document() -> None:
    body = b'{"process": {"pid": 9, "rss_bytes": 1, "pss_bytes": 1}, "models": []}'
    assert memory_document("u", 200, body) == {
        "url": "u",
        "process": {"pid": 9, "rss_bytes": 1, "pss_bytes": 1},
    }
    assert "error" in memory_document("u", 404, b"{}")
    assert "error" in memory_document("u", 200, b"{}")
    assert "error" in memory_document("u", 200, b"<html>")


@pytest.mark.parametrize(
    ("code", "http", "expected"),
    [
        (Code.INVALID_ARGUMENT, None, 400),
        (Code.FAILED_PRECONDITION, None, 400),
        (Code.OUT_OF_RANGE, None, 400),
        (Code.NOT_FOUND, 404, 404),
        (Code.RESOURCE_EXHAUSTED, None, 429),
        (Code.RESOURCE_EXHAUSTED, 413, 413),
        (Code.UNAVAILABLE, 503, 503),
        (Code.DEADLINE_EXCEEDED, None, 504),
        (Code.INTERNAL, 500, 502),
        (Code.UNKNOWN, None, 502),
        (Code.UNKNOWN, 422, 422),  # a 4xx without a gRPC code (e.g. FastAPI's validation error) stays
        (Code.UNIMPLEMENTED, 501, 502),
        (Code.UNAUTHENTICATED, 401, 502),  # the gateway's credentials, not the caller's
        (Code.PERMISSION_DENIED, 403, 502),
    ],
)
def test_status_table(code: Code, http: int | None, expected: int) -> None:
    assert http_status(failure(code, http)) == expected


def test_every_mapped_status_is_a_client_or_gateway_error() -> None:
    assert all(400 <= status <= 504 for status in STATUS_BY_CODE.values())
