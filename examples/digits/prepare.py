"""Train the digits classifier, export it to ONNX and write sample PNGs: ``<out>/digits/1/model.onnx``.

The model is ``modelserve.demo.models.write_digits_classifier``: an MLP (64 → 64 → 10) trained with
scikit-learn on its bundled 8x8 handwritten digits (nothing is downloaded) and written to ONNX node by node
from the fitted weights, so no converter package is needed::

    images         float32 [batch, 64]   8x8 pixels row by row, 0 (paper) .. 16 (ink), as in load_digits
    probabilities  float32 [batch, 10]   softmax
    classes        int64   [batch]       the digit

The held-out accuracy is measured on the exported file with ONNX Runtime. ``<out>/samples/`` gets 20
held-out digits as 64x64 PNGs, dark ink on white paper like a scan, named ``digit-<label>-<n>.png``.

Run ``python examples/digits/prepare.py [--out DIR]``; an existing model is reused (``--force`` retrains).
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

MODEL = "digits"
DEFAULT_OUT = Path(__file__).resolve().parent / "build"  # build/ is git-ignored
SAMPLES_PER_DIGIT = 2
PNG_SIZE = 64


def model_file(out: Path) -> Path:
    """Where ``prepare(out)`` puts the model: ``<out>/digits/1/model.onnx``."""
    return out / MODEL / "1" / "model.onnx"


def digit_png(pixels: np.ndarray, size: int = PNG_SIZE) -> bytes:
    """A PNG of one 8x8 digit (values 0..16, ink high): black ink on white, upscaled to ``size`` pixels."""
    from PIL import Image

    gray = np.round(255.0 - pixels.reshape(8, 8) * (255.0 / 16.0)).astype(np.uint8)
    image = Image.fromarray(gray).resize((size, size), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def held_out_accuracy(out: Path) -> float:
    """Accuracy of the exported model on the held-out quarter of the digits, run by ONNX Runtime."""
    import onnxruntime as ort

    from modelserve.demo.models import digits_split

    split = digits_split()  # the split the model was trained on (seed 0): x_test was never seen
    session = ort.InferenceSession(str(model_file(out)), providers=["CPUExecutionProvider"])
    (classes,) = session.run(["classes"], {"images": split.x_test})
    return float((classes == split.y_test).mean())


def write_samples(out: Path) -> list[Path]:
    """``SAMPLES_PER_DIGIT`` held-out images of each digit as PNGs under ``<out>/samples``."""
    from modelserve.demo.models import digits_split

    split = digits_split()
    directory = out / "samples"
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for label in range(10):
        for n, row in enumerate(np.flatnonzero(split.y_test == label)[:SAMPLES_PER_DIGIT]):
            path = directory / f"digit-{label}-{n}.png"
            path.write_bytes(digit_png(split.x_test[row]))
            paths.append(path)
    return paths


def prepare(out: Path = DEFAULT_OUT, *, force: bool = False) -> Path:
    """Train and export unless the model exists, write the samples; returns the base path ``<out>/digits``."""
    from modelserve.demo.models import write_digits_classifier

    target = model_file(out)
    if target.exists() and not force:
        print(f"digits: reusing {target}", flush=True)
    else:
        write_digits_classifier(target.parents[1], version=1)
        print(f"digits: wrote {target}", flush=True)
    print(f"digits: held-out accuracy {held_out_accuracy(out):.3f}", flush=True)
    samples = write_samples(out)
    print(f"digits: {len(samples)} sample PNGs in {samples[0].parent}", flush=True)
    return target.parents[1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})"
    )
    parser.add_argument("--force", action="store_true", help="retrain even if the model exists")
    args = parser.parse_args(argv)
    prepare(args.out, force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
