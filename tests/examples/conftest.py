"""Fixtures for the runnable examples under ``examples/``: their built models and loaded handlers.

Both examples build into one session-wide directory (their ``--out``), once; handlers are loaded with the
gateway's own ``load_handler`` and set up, as a web worker does after the fork.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from examples_support import EXAMPLES, InProcessModel, load_example

from modelserve.gateway import Handler, load_handler


@pytest.fixture(scope="session")
def examples_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("examples")


@pytest.fixture(scope="session")
def minilm_base(examples_out: Path) -> Path:
    """``examples/embeddings/prepare.py``'s model: ``<base>/1/model.onnx``."""
    return load_example("embeddings", "prepare").prepare(examples_out)


@pytest.fixture(scope="session")
def digits_base(examples_out: Path) -> Path:
    """``examples/digits/prepare.py``'s model; its sample PNGs are in ``<base>/../samples``."""
    return load_example("digits", "prepare").prepare(examples_out)


@pytest.fixture(scope="session")
def minilm(minilm_base: Path) -> InProcessModel:
    return InProcessModel(minilm_base / "1" / "model.onnx")


@pytest.fixture(scope="session")
def digits(digits_base: Path) -> InProcessModel:
    return InProcessModel(digits_base / "1" / "model.onnx")


def _handler(example: str) -> Handler:
    handler = load_handler(str(EXAMPLES / example / "handler.py"))
    if handler.setup is not None:
        handler.setup()
    return handler


@pytest.fixture(scope="session")
def embeddings_handler() -> Handler:
    return _handler("embeddings")


@pytest.fixture(scope="session")
def digits_handler() -> Handler:
    return _handler("digits")
