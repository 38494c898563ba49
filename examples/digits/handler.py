"""Gateway handler: an image of a digit in, ``{"class": 3, "probabilities": [10 floats]}`` out.

Send the image as the request body (``content-type: image/png``; any format Pillow reads works) or as JSON
``{"image_b64": "<base64>"}``. The web worker turns it into the 8x8, 0..16 pixels scikit-learn's digits
are made of; the model server runs the ``digits`` model built by ``prepare.py``.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

import numpy as np

from modelserve.gateway import HttpError, Request

MODEL = "digits"
MAX_PIXELS = 4096 * 4096  # larger images are refused before they are decoded
_USAGE = 'send an image as the body (content-type: image/png) or JSON {"image_b64": "<base64 image>"}'


def image_bytes(request: Request) -> bytes:
    """The encoded image: the raw body, or ``image_b64`` of a JSON body."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json" or (not content_type and request.body.lstrip()[:1] == b"{"):
        body = request.json()
        encoded = body.get("image_b64") if isinstance(body, dict) else None
        if not isinstance(encoded, str):
            raise HttpError(400, _USAGE)
        try:
            return base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise HttpError(400, f'"image_b64" is not valid base64: {exc}') from None
    if not request.body:
        raise HttpError(400, f"the body is empty: {_USAGE}")
    return request.body


def to_pixels(data: bytes) -> np.ndarray:
    """Decode an image into the model's input: float32 [64], 0 (paper) .. 16 (ink), like ``load_digits``.

    Grayscale (transparency over white), then 8x8 by area averaging: load_digits' pixels are counts of ink
    in 4x4 blocks of 32x32 bitmaps, which is what BOX resampling computes. The paper's colour is the median of
    the border, so both dark-on-light scans and light-on-dark drawings work; the darkest block becomes 16.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_PIXELS:
                raise HttpError(
                    400, f"the image is {image.width}x{image.height} pixels; at most {MAX_PIXELS}"
                )
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                rgba = image.convert("RGBA")
                gray = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("L")
            else:
                gray = image.convert("L")
    except HttpError:
        raise
    except UnidentifiedImageError:  # its message names the BytesIO object, which means nothing to a client
        raise HttpError(400, "cannot decode the image: not an image format Pillow reads") from None
    except Exception as exc:  # Pillow's decoders raise OSError, SyntaxError, ValueError, zlib.error, ...
        raise HttpError(400, f"cannot decode the image: {exc}") from None
    full = np.asarray(gray, dtype=np.float32)
    paper = float(np.median(np.concatenate([full[0], full[-1], full[:, 0], full[:, -1]])))
    small = np.asarray(gray.resize((8, 8), Image.Resampling.BOX), dtype=np.float32)
    ink = np.clip(paper - small if paper >= 128 else small - paper, 0.0, None)
    peak = float(ink.max())
    return (ink * (16.0 / peak) if peak > 0 else ink).reshape(64)


def preprocess(request: Request) -> dict[str, np.ndarray]:
    """One image → ``images`` float32 [1, 64]."""
    return {"images": to_pixels(image_bytes(request))[np.newaxis]}


def postprocess(request: Request, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """The digit and the probability of each digit 0..9."""
    probabilities = outputs["probabilities"][0]
    return {"class": int(np.argmax(probabilities)), "probabilities": probabilities.tolist()}
