"""``modelserve demo``: generate a demo model repository, serve it, print requests that work as pasted.

Everything is generated locally (an ONNX digits classifier trained on scikit-learn's bundled digits, a tiny
ONNX MLP, and TF Serving's classic half_plus_two when TensorFlow is installed); nothing is downloaded.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import signal
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from modelserve.config.options import ServerOptions
from modelserve.server import ModelServer, configure_logging


@dataclass(frozen=True, slots=True)
class DemoRequest:
    """One request the demo prints as curl and, with --exit_after_check, sends."""

    title: str
    path: str
    body: dict[str, object] | None = None

    def curl(self, port: int) -> str:
        url = f"http://localhost:{port}{self.path}"
        if self.body is None:
            return f"curl {url}"
        return f"curl -X POST {url} -d {shlex.quote(json.dumps(self.body))}"

    def send(self, port: int) -> tuple[int, str]:
        data = None if self.body is None else json.dumps(self.body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{self.path}", data=data, method="GET" if data is None else "POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


def write_config(models: dict[str, Path], target: Path) -> None:
    """A TF Serving model_config_file listing every demo model."""
    entries = "".join(
        f"  config {{\n    name: '{name}'\n    base_path: '{path}'\n  }}\n" for name, path in models.items()
    )
    target.write_text(f"model_config_list {{\n{entries}}}\n")


def demo_requests(models: dict[str, Path]) -> list[DemoRequest]:
    """Requests for every generated model: status, metadata and inference."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    image = [float(v) for v in digits.data[0]]
    requests = [
        DemoRequest("model status", "/v1/models/digits"),
        DemoRequest("model metadata (signatures)", "/v1/models/digits/metadata"),
        DemoRequest(
            f"classify a handwritten {int(digits.target[0])} (row format)",
            "/v1/models/digits:predict",
            {"instances": [image]},
        ),
        DemoRequest(
            "the same in columnar format, addressed by version",
            "/v1/models/digits/versions/1:predict",
            {"inputs": {"images": [image]}},
        ),
        DemoRequest("tiny MLP", "/v1/models/tiny:predict", {"instances": [[0.5] * 64]}),
    ]
    if "half_plus_two" in models:
        requests += [
            DemoRequest(
                "half_plus_two: y = x / 2 + 2",
                "/v1/models/half_plus_two:predict",
                {"instances": [1.0, 2.0, 5.0]},
            ),
            DemoRequest(
                "half_plus_two regress on tf.Examples",
                "/v1/models/half_plus_two:regress",
                {"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}, {"x": 2.0}]},
            ),
        ]
    return requests


def run_demo(directory: str, rest_api_port: int, grpc_port: int, exit_after_check: bool) -> int:
    """Generate, serve, print; with ``exit_after_check`` send every request and exit 0 only if all pass."""
    from modelserve.demo.models import write_demo_repository

    configure_logging("warning")
    root = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="modelserve-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"generating demo models in {root} ...", flush=True)
    models = write_demo_repository(root)
    if "half_plus_two" not in models:
        print("(TensorFlow not installed: skipping half_plus_two; pip install 'modelserve[tensorflow]')")
    config_file = root / "models.config"
    write_config(models, config_file)
    options = ServerOptions(
        rest_api_port=rest_api_port,
        port=grpc_port,
        model_config_file=str(config_file),
        rest_api_host="127.0.0.1" if exit_after_check else "0.0.0.0",
        ephemeral_ports=exit_after_check,
        log_level="warning",
    )
    return asyncio.run(_serve_demo(options, models, config_file, exit_after_check))


async def _serve_demo(
    options: ServerOptions, models: dict[str, Path], config_file: Path, exit_after_check: bool
) -> int:
    server = ModelServer(options)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.request_stop)
    ports = await server.startup()
    port = ports.rest_port or 0
    requests = demo_requests(models)
    print(f"\nmodelserve is serving {', '.join(models)} on http://localhost:{port}")
    print(f"(the same server from the command line: modelserve serve --model_config_file={config_file})\n")
    for request in requests:
        print(f"# {request.title}\n{request.curl(port)}\n")
    failures = 0
    if exit_after_check:
        for request in requests:
            status, body = await asyncio.to_thread(request.send, port)
            compact = " ".join(body.split())
            print(f"{status} {request.path} -> {compact[:200]}")
            failures += status != 200
        await server.shutdown()
        print(f"\n{len(requests) - failures}/{len(requests)} demo requests answered 200")
        return 1 if failures else 0
    print("Press Ctrl-C to stop.", flush=True)
    await server.serve_until_stopped()
    return 0


if __name__ == "__main__":
    sys.exit(run_demo("", 8501, 8500, exit_after_check="--check" in sys.argv))
