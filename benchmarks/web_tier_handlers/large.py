"""Handler of the web-tier benchmark's large model: 4096 floats in, the five best outputs back.

The same module runs in both architectures the benchmark compares: in the coupled app, next to a copy of
the model inside each web worker, and in ``modelserve gateway``, calling the one model server.
"""

from __future__ import annotations

import numpy as np

from modelserve.gateway import HttpError, Request

MODEL = "large"
WIDTH = 4096


def preprocess(request: Request) -> dict[str, np.ndarray]:
    body = request.json()
    values = body.get("x") if isinstance(body, dict) else None
    if not isinstance(values, list) or len(values) != WIDTH:
        raise HttpError(400, f'send {{"x": [{WIDTH} numbers]}}')
    return {"x": np.asarray(values, dtype=np.float32).reshape(1, WIDTH)}


def postprocess(request: Request, outputs: dict[str, np.ndarray]) -> object:
    scores = outputs["y"][0]
    best = np.argsort(scores)[::-1][:5]
    return {"top5": best.tolist(), "scores": scores[best].round(4).tolist()}
