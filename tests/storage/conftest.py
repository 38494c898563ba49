"""Fixtures for the object-storage tests: one real S3-compatible server per module, a proxy per test."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from s3_support import CuttableProxy, S3Server


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access-log line per request otherwise
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture
def s3_proxy(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[CuttableProxy]:
    """A cuttable proxy to ``s3_server``, and the AWS settings that point model servers started now at it."""
    proxy = CuttableProxy(s3_server.address)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    # botocore reads AWS_DEFAULT_REGION only: modelserve passes AWS_REGION on itself (storage/remote.py)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    yield proxy
    proxy.close()
