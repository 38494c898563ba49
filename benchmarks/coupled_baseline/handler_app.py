"""The coupled architecture running a modelserve handler module: the model inside every web worker.

The web-tier benchmark compares two deployments of the *same* user code (a handler module: preprocess,
model call, postprocess). Here each Gunicorn worker imports the handler and loads its own ONNX Runtime
copy of the model after the fork, as the seed's Flask app did; ``modelserve stack`` runs the same handler
in light workers in front of one model server. Run::

    HANDLER=benchmarks/web_tier_handlers/large.py MODEL_PATH=/path/1/model.onnx \\
        gunicorn -w 2 -b 127.0.0.1:8080 'benchmarks.coupled_baseline.handler_app:create_app()'

Environment: ``HANDLER`` (file or module), ``MODEL_PATH`` (model.onnx), ``ORT_THREADS`` (intra-op threads per
worker, default 1: workers x threads <= cores).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import onnxruntime as ort
import orjson

from modelserve.gateway.handler import HttpError, ModelCall, Request, Response, load_handler

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def create_app() -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """One worker's WSGI app with its own copy of the model (called after the fork: no --preload)."""
    handler = load_handler(os.environ["HANDLER"])
    if handler.setup is not None:
        handler.setup()
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(os.environ.get("ORT_THREADS", "1"))
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(os.environ["MODEL_PATH"], options, providers=["CPUExecutionProvider"])
    output_names = [output.name for output in session.get_outputs()]

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        request = Request(
            method=environ["REQUEST_METHOD"],
            path=environ.get("PATH_INFO", "/"),
            query={},
            headers={"content-type": environ.get("CONTENT_TYPE", "")},
            body=environ["wsgi.input"].read(length) if length else b"",
        )
        try:
            prepared = handler.preprocess(request)
            inputs = prepared.inputs if isinstance(prepared, ModelCall) else prepared
            values = session.run(output_names, dict(inputs))
            result = handler.postprocess(request, dict(zip(output_names, values, strict=True)))
        except HttpError as error:
            return _reply(start_response, error.status, {"error": error.message})
        if isinstance(result, Response):
            body = result.body.encode() if isinstance(result.body, str) else result.body
            start_response(f"{result.status} X", [("Content-Type", result.content_type)])
            return [body]
        return _reply(start_response, 200, result)

    return app


def _reply(start_response: StartResponse, status: int, document: object) -> list[bytes]:
    body = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    start_response(f"{status} X", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
