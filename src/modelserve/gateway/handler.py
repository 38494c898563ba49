"""The handler contract: the user's pre- and post-processing, in a plain Python module.

A web worker of the gateway turns an HTTP request into model inputs (``preprocess``), calls the model
server, and turns the outputs into the HTTP answer (``postprocess``). The module holds no model; it may
hold small per-worker resources (a tokenizer) created in ``setup``. The same module runs unchanged under
every Gunicorn worker class (sync, gthread, gevent, asyncio): the functions are plain, synchronous code,
and the gateway does the I/O.

A handler module::

    import numpy as np
    from modelserve.gateway import HttpError, Request

    MODEL = "digits"                     # required: the model to call
    SIGNATURE = "serving_default"        # optional
    VERSION = None                       # optional: a version number, or LABEL = "stable"

    def setup() -> None:                 # optional: once per worker process, after the fork
        ...

    def preprocess(request: Request) -> dict[str, np.ndarray]:
        body = request.json()
        if "pixels" not in body:
            raise HttpError(400, "send {'pixels': [[...64 floats...]]}")
        return {"images": np.asarray(body["pixels"], np.float32)}

    def postprocess(request: Request, outputs: dict[str, np.ndarray]) -> object:
        return {"class": int(outputs["classes"][0])}   # JSON; or a Response for anything else

``preprocess`` may also return a ``ModelCall`` to pick the model, version or signature per request.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import orjson


class HttpError(Exception):
    """Raise from ``preprocess``/``postprocess`` to answer ``status`` with ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Request:
    """One incoming HTTP request, as the handler sees it (the same under WSGI and ASGI workers)."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON; HttpError 400 naming the problem when it is not JSON."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise HttpError(400, f"request body is not valid JSON: {exc}") from None


@dataclass(frozen=True, slots=True)
class Response:
    """An answer other than a JSON document: raw bytes or text, any status and headers."""

    body: bytes | str = b""
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


@dataclass(frozen=True, slots=True)
class ModelCall:
    """What ``preprocess`` returns to choose the model call per request instead of the module's defaults."""

    inputs: Mapping[str, np.ndarray]
    model: str | None = None
    version: int | None = None
    label: str | None = None
    signature: str | None = None
    output_filter: tuple[str, ...] | None = None


Preprocess = Callable[[Request], "Mapping[str, np.ndarray] | ModelCall"]
Postprocess = Callable[[Request, dict[str, np.ndarray]], Any]


@dataclass(frozen=True, slots=True)
class Handler:
    """A loaded handler module, validated: what the web workers call."""

    name: str
    model: str
    preprocess: Preprocess
    postprocess: Postprocess
    setup: Callable[[], None] | None = None
    signature: str | None = None
    version: int | None = None
    label: str | None = None

    def model_call(self, prepared: Mapping[str, np.ndarray] | ModelCall) -> ModelCall:
        """``preprocess``'s result with the module's defaults filled in."""
        if isinstance(prepared, ModelCall):
            return ModelCall(
                inputs=prepared.inputs,
                model=prepared.model or self.model,
                version=prepared.version if prepared.version is not None else self.version,
                label=prepared.label if prepared.label is not None else self.label,
                signature=prepared.signature or self.signature,
                output_filter=prepared.output_filter,
            )
        if not isinstance(prepared, Mapping):
            raise TypeError(
                f"{self.name}.preprocess returned {type(prepared).__name__}; expected a dict of input "
                f"name -> numpy array, or a ModelCall"
            )
        return ModelCall(
            inputs=prepared,
            model=self.model,
            version=self.version,
            label=self.label,
            signature=self.signature,
        )


def load_handler(spec: str) -> Handler:
    """Import a handler module from a file path (``examples/digits/handler.py``) or a dotted name.

    Raises ValueError naming what is missing, so ``modelserve gateway`` fails at startup, not per request.
    """
    module = _import(spec)
    model = getattr(module, "MODEL", None)
    if not isinstance(model, str) or not model:
        raise ValueError(f"handler {spec}: set MODEL = '<model name>' (the model the handler calls)")
    preprocess = getattr(module, "preprocess", None)
    postprocess = getattr(module, "postprocess", None)
    for name, function in (("preprocess", preprocess), ("postprocess", postprocess)):
        if not callable(function):
            raise ValueError(f"handler {spec}: define {name}() (see modelserve.gateway.handler)")
    setup = getattr(module, "setup", None)
    if setup is not None and not callable(setup):
        raise ValueError(f"handler {spec}: setup must be a function")
    version = getattr(module, "VERSION", None)
    label = getattr(module, "LABEL", None)
    if version is not None and label is not None:
        raise ValueError(f"handler {spec}: set VERSION or LABEL, not both")
    return Handler(
        name=module.__name__,
        model=model,
        preprocess=preprocess,  # type: ignore[arg-type]
        postprocess=postprocess,  # type: ignore[arg-type]
        setup=setup,
        signature=getattr(module, "SIGNATURE", None),
        version=version,
        label=label,
    )


def _import(spec: str) -> ModuleType:
    path = Path(spec)
    if spec.endswith(".py") or path.is_file():
        if not path.is_file():
            raise ValueError(f"handler file {spec} does not exist")
        resolved = path.resolve()
        # One module per file: two handlers both called handler.py must not replace each other.
        digest = hashlib.blake2b(str(resolved).encode(), digest_size=4).hexdigest()
        name = f"modelserve_handler_{path.stem}_{digest}"
        loader_spec = importlib.util.spec_from_file_location(name, resolved)
        if loader_spec is None or loader_spec.loader is None:
            raise ValueError(f"cannot import handler file {spec}")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = module  # pickling, dataclasses and relative lookups need it registered
        folder = str(resolved.parent)
        if folder not in sys.path:
            # Appended, not prepended: the handler may import its neighbours, but a neighbour never
            # shadows an installed package.
            sys.path.append(folder)
        loader_spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(spec)
    except ImportError as exc:
        raise ValueError(f"cannot import handler module {spec}: {exc}") from exc
