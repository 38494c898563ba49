"""The seed's coupled architecture, kept as the baseline every benchmark compares against.

nginx → Gunicorn → Flask, with the model loaded *inside each web worker* and run in the request: the
typical deployment that modelserve replaces. It speaks TF Serving's REST predict route for the benchmark's
request, so both sides do the same work::

    MODEL_PATH=/models/tiny/1/model.onnx gunicorn -w 2 -k sync -b 127.0.0.1:8080 \\
        'benchmarks.coupled_baseline.app:create_app()'

Each worker creates its ONNX Runtime session after the fork (``create_app`` runs in the worker without
``--preload``) with one intra-op thread, so workers x threads <= cores (the baseline's best setting).
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort
import orjson
from flask import Flask, Response, request


def create_app() -> Flask:
    """One Flask app per worker, holding that worker's own copy of the model."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(os.environ.get("ORT_THREADS", "1"))
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(os.environ["MODEL_PATH"], options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    output_name = session.get_outputs()[0].name
    app = Flask(__name__)

    @app.post("/v1/models/<name>:predict")
    def predict(name: str) -> Response:
        body = orjson.loads(request.get_data())
        x = np.asarray(body["instances"], dtype=np.float32)
        (y,) = session.run([output_name], {input_name: x})
        return Response(orjson.dumps({"predictions": y.tolist()}), mimetype="application/json")

    return app
