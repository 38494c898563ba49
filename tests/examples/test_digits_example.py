"""examples/digits: the trained classifier, the image handler, and both behind a real model server."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from examples_support import EXAMPLES, InProcessModel, gateway, load_example, post, through
from PIL import Image

from modelserve.client import Client
from modelserve.demo.models import digits_split
from modelserve.gateway import Handler, HttpError


def classify(handler: Handler, model: Any, png: bytes, content_type: str = "image/png") -> dict[str, Any]:
    answer = through(handler, model, post(png, content_type))
    assert isinstance(answer, dict)
    assert sorted(answer) == ["class", "probabilities"]
    assert isinstance(answer["class"], int) and len(answer["probabilities"]) == 10
    assert abs(sum(answer["probabilities"]) - 1.0) < 1e-5
    return answer


def encoded(image: Image.Image, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def held_out() -> tuple[np.ndarray, np.ndarray]:
    """The first 100 held-out digits (never trained on) and their labels."""
    split = digits_split()
    return split.x_test[:100], split.y_test[:100]


def test_prepare_trains_exports_and_writes_samples(digits_base: Path, examples_out: Path) -> None:
    prepare = load_example("digits", "prepare")
    assert prepare.held_out_accuracy(examples_out) >= 0.95
    samples = sorted((examples_out / "samples").glob("digit-*.png"))
    assert [path.name for path in samples[:3]] == ["digit-0-0.png", "digit-0-1.png", "digit-1-0.png"]
    assert len(samples) == 20
    with Image.open(samples[0]) as image:
        assert (image.format, image.size, image.mode) == ("PNG", (64, 64), "L")
    before = (digits_base / "1" / "model.onnx").stat().st_mtime_ns
    assert prepare.prepare(examples_out) == digits_base  # reused, not retrained
    assert (digits_base / "1" / "model.onnx").stat().st_mtime_ns == before


def test_held_out_pngs_are_classified(
    digits_handler: Handler, digits: InProcessModel, held_out: tuple[np.ndarray, np.ndarray]
) -> None:
    prepare = load_example("digits", "prepare")
    images, labels = held_out
    answers = [classify(digits_handler, digits, prepare.digit_png(image))["class"] for image in images]
    assert np.mean(np.array(answers) == labels) >= 0.9
    # The PNG round trip (upscale, grayscale, area-average back to 8x8) gives the model what load_digits does.
    request = post(prepare.digit_png(images[0]), "image/png")
    pixels = digits_handler.preprocess(request)["images"]  # type: ignore[index]
    assert pixels.shape == (1, 64) and pixels.dtype == np.float32
    np.testing.assert_allclose(pixels[0], images[0] * 16.0 / images[0].max(), atol=0.05)


def test_sample_files_are_classified(
    digits_handler: Handler, digits: InProcessModel, examples_out: Path
) -> None:
    samples = sorted((examples_out / "samples").glob("digit-*.png"))
    correct = [
        classify(digits_handler, digits, path.read_bytes())["class"] == int(path.name[6]) for path in samples
    ]
    assert np.mean(correct) >= 0.9


def test_other_encodings_and_polarities_give_the_same_class(
    digits_handler: Handler, digits: InProcessModel, held_out: tuple[np.ndarray, np.ndarray]
) -> None:
    prepare = load_example("digits", "prepare")
    for image in held_out[0][:10]:
        png = prepare.digit_png(image)
        expected = classify(digits_handler, digits, png)
        gray = Image.open(io.BytesIO(png))
        black_on_transparent = Image.merge(
            "LA", [Image.new("L", gray.size, 0), Image.eval(gray, lambda v: 255 - v)]
        )
        variants = {
            "json": (json_b64(png), "application/json"),
            "no content-type": (png, ""),
            "json, no content-type": (json_b64(png), ""),
            "white on black": (encoded(Image.eval(gray, lambda v: 255 - v)), "image/png"),
            "rgb jpeg, 200x200": (encoded(gray.convert("RGB").resize((200, 200)), "JPEG"), "image/jpeg"),
            "black on transparent": (encoded(black_on_transparent), "image/png"),
        }
        for name, (body, content_type) in variants.items():
            answer = classify(digits_handler, digits, body, content_type)
            assert answer["class"] == expected["class"], name


def json_b64(data: bytes) -> bytes:
    return b'{"image_b64": "' + base64.b64encode(data) + b'"}'


def png_bytes(digits_base: Path) -> bytes:
    return (digits_base.parent / "samples" / "digit-7-0.png").read_bytes()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("truncated", "cannot decode the image: image file is truncated"),
        ("corrupted", "cannot decode the image: broken data stream"),
        ("not an image", "cannot decode the image: not an image format Pillow reads"),
        ("empty", "the body is empty: send an image as the body"),
        (
            "json without image_b64",
            'send an image as the body (content-type: image/png) or JSON {"image_b64"',
        ),
        (
            "image_b64 not a string",
            'send an image as the body (content-type: image/png) or JSON {"image_b64"',
        ),
        ("bad base64", '"image_b64" is not valid base64: '),
        ("base64 of text", "cannot decode the image: not an image format Pillow reads"),
        ("broken json", "request body is not valid JSON"),
        ("too large", "the image is 4097x4097 pixels; at most 16777216"),
    ],
)
def test_bad_images_get_400_then_a_good_one_works(
    digits_handler: Handler, digits: InProcessModel, digits_base: Path, case: str, message: str
) -> None:
    png = png_bytes(digits_base)
    corrupted = bytearray(png)
    corrupted[100:110] = b"\xff" * 10  # inside the compressed pixels (IDAT): the zlib stream breaks
    bodies: dict[str, tuple[bytes, str]] = {
        "truncated": (png[: len(png) // 2], "image/png"),
        "corrupted": (bytes(corrupted), "image/png"),
        "not an image": (b"hello, this is text", "image/png"),
        "empty": (b"", "image/png"),
        "json without image_b64": (b'{"image": "x"}', "application/json"),
        "image_b64 not a string": (b'{"image_b64": 3}', "application/json"),
        "bad base64": (b'{"image_b64": "not base64!"}', "application/json"),
        "base64 of text": (json_b64(b"plain text"), "application/json"),
        "broken json": (b'{"image_b64": ', "application/json; charset=utf-8"),
        "too large": (encoded(Image.new("L", (4097, 4097), 255)), "image/png"),
    }
    body, content_type = bodies[case]
    with pytest.raises(HttpError) as error:
        digits_handler.preprocess(post(body, content_type))
    assert error.value.status == 400
    assert error.value.message.startswith(message), error.value.message
    assert classify(digits_handler, digits, png)["class"] == 7


def test_through_a_model_server(
    start_server: Any, digits_base: Path, digits_handler: Handler, digits: InProcessModel
) -> None:
    server = start_server("--model_name=digits", f"--model_base_path={digits_base}")
    samples = sorted((digits_base.parent / "samples").glob("digit-*.png"))
    for url in (server.url, f"grpc://{server.grpc_target}"):
        with Client(url) as client:
            for path in samples:
                answer = classify(
                    digits_handler, lambda inputs: client.predict("digits", inputs), path.read_bytes()
                )
                assert answer == classify(digits_handler, digits, path.read_bytes())
                assert answer["class"] == int(path.name[6])


def test_through_the_gateway_and_a_model_server(
    start_server: Any, tmp_path: Path, digits_base: Path, digits_handler: Handler, digits: InProcessModel
) -> None:
    """The README's curl commands: a PNG body, then the same image as JSON, then a broken one."""
    server = start_server("--model_name=digits", f"--model_base_path={digits_base}")
    png = png_bytes(digits_base)
    with gateway("digits", server.url, tmp_path) as url:
        reply = httpx.post(url, content=png, headers={"content-type": "image/png"}, timeout=30)
        assert reply.status_code == 200, reply.text
        assert reply.json() == classify(digits_handler, digits, png)
        assert reply.json()["class"] == 7
        as_json = httpx.post(url, json={"image_b64": base64.b64encode(png).decode()}, timeout=30)
        assert as_json.json() == reply.json()
        broken = httpx.post(url, content=png[:100], headers={"content-type": "image/png"}, timeout=30)
        assert broken.status_code == 400
        assert broken.json() == {"error": "cannot decode the image: image file is truncated"}


def test_run_py_builds_then_starts_the_stack(examples_out: Path, digits_base: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "digits" / "run.py"), "--out", str(examples_out), "--dry-run",
         "--workers", "3", "--nginx"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    lines = done.stdout.splitlines()
    assert lines[0] == f"digits: reusing {digits_base}/1/model.onnx"
    handler = EXAMPLES / "digits" / "handler.py"
    assert lines[-1] == (
        f"$ {sys.executable} -m modelserve stack {handler} --model_base_path={digits_base} --model_name=digits "
        "--workers 3 --nginx"
    )
