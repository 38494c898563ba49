"""The seed's coupled architecture, kept as the baseline that benchmarks compare modelserve against.

nginx → Gunicorn → Flask, with the model loaded *inside each web worker* and run in the request: the
"model in every web worker" deployment people write by hand, and the one modelserve replaces. It answers
TF Serving's REST predict route for one model, so a benchmark sends both servers the same request::

    POST /v1/models/<MODEL_NAME>:predict   {"instances": [[...64 floats]]}  →  {"predictions": [[...]]}

Run it (the settings live in ``gunicorn.conf.py``; the command works from any directory)::

    MODEL_PATH=/models/tiny/1/model.onnx gunicorn -c benchmarks/coupled_baseline/gunicorn.conf.py \\
        -w 2 -b 127.0.0.1:8080

Environment: ``MODEL_PATH`` (the ``model.onnx`` file, required), ``MODEL_NAME`` (default ``tiny``),
``ORT_THREADS`` (ONNX Runtime intra-op threads per worker, default 1: workers x threads <= cores is this
architecture's best setting, see ANCHORS.md; 0 is ONNX Runtime's own default, one per core, as the seed ran).
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort
import orjson
from flask import Flask, Response, abort, request


def create_app() -> Flask:
    """Build one worker's app and its own copy of the model.

    Gunicorn calls this in each worker after the fork (no ``--preload``), so every worker creates its own
    ONNX Runtime session and thread pool instead of inheriting one started before the fork.
    """
    model_path = os.environ.get("MODEL_PATH")
    if not model_path:
        raise RuntimeError("set MODEL_PATH to the model.onnx file to serve")
    model_name = os.environ.get("MODEL_NAME", "tiny")
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(os.environ.get("ORT_THREADS", "1"))
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    output_name = session.get_outputs()[0].name
    app = Flask(__name__)

    @app.post("/v1/models/<name>:predict")
    def predict(name: str) -> Response:
        if name != model_name:
            abort(404)
        instances = orjson.loads(request.get_data())["instances"]
        (outputs,) = session.run([output_name], {input_name: np.asarray(instances, dtype=np.float32)})
        return Response(orjson.dumps({"predictions": outputs.tolist()}), mimetype="application/json")

    return app
