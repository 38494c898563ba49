"""The gateway speaking KServe V2 to the model server, over REST and over gRPC."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_harness import Reference, pixels


@pytest.mark.parametrize(("worker_class", "transport"), [("sync", "rest"), ("asyncio", "grpc")])
def test_v2_protocol(
    start_gateway: Any,
    digits_server: Any,
    digits_handler: Path,
    reference: Reference,
    worker_class: str,
    transport: str,
) -> None:
    upstream = digits_server.url if transport == "rest" else f"grpc://{digits_server.grpc_target}"
    gateway = start_gateway(
        str(digits_handler), "--protocol", "v2", "--worker-class", worker_class,
        "--model-server", upstream, "--workers", "1",
    )  # fmt: skip
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        assert http.get("/readyz").status_code == 200
        for seed in range(4):
            inputs = pixels(seed, rows=2)
            body = http.post("/predict", json={"pixels": inputs.tolist()}).json()
            assert body["classes"] == reference(inputs)["classes"].tolist()
        missing = http.post("/predict", json={"pixels": pixels(0).tolist(), "model": "nope"})
        assert missing.status_code == 404 and "nope" in missing.json()["error"]
