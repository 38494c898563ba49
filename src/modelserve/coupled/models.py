"""The models of a repository loaded in this process: what a coupled worker calls instead of a model server.

Each model is ``<base_path>/<version>/`` (the latest version), loaded with the same runtime adapters the
model server uses (`modelserve.runtimes`), so the coupled and decoupled architectures run the same graph.
A `ModelCall` is answered in-process; failures are raised as `ModelServerError` with the model server's
codes, so the gateway's pipeline maps them to the same HTTP statuses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelserve.client import ModelServerError
from modelserve.core.servable import RuntimeSettings, Servable
from modelserve.core.signature import DEFAULT_SIGNATURE
from modelserve.errors import Code, ServingError


@dataclass(frozen=True, slots=True)
class ModelSource:
    """One model of the repository: its name and the folder holding its numbered versions."""

    name: str
    base_path: str
    platform: str = ""  # empty: detected from the version's files


def model_sources(model_name: str, model_base_path: str, model_config_file: str) -> tuple[ModelSource, ...]:
    """The models named by ``--model_name``/``--model_base_path`` or by a ``--model_config_file``."""
    if bool(model_base_path) == bool(model_config_file):
        raise ValueError("give either --model_base_path (with --model_name) or --model_config_file")
    if model_base_path:
        return (ModelSource(model_name, model_base_path),)
    from modelserve.config.text_files import read_model_server_config

    config = read_model_server_config(model_config_file)
    return tuple(ModelSource(m.name, m.base_path, m.platform) for m in config.models)


def latest_version(base_path: str | Path) -> tuple[int, Path]:
    """The highest numbered version folder of ``base_path``."""
    versions = [
        (int(child.name), child)
        for child in Path(base_path).iterdir()
        if child.is_dir() and child.name.isdigit()
    ]
    if not versions:
        raise ValueError(f"no version folder (<base_path>/<number>/) in {base_path}")
    return max(versions)


class LocalModels:
    """Loaded models by name; ``predict`` is thread-safe (the runtimes' sessions are)."""

    def __init__(self, sources: tuple[ModelSource, ...], intra_op_threads: int = 1) -> None:
        from modelserve.runtimes import detect_platform, get_runtime

        settings = RuntimeSettings(intra_op_threads=intra_op_threads, inter_op_threads=1)
        self._models: dict[str, tuple[int, Servable]] = {}
        for source in sources:
            version, folder = latest_version(source.base_path)
            platform = source.platform or detect_platform(folder)
            if platform is None:
                raise ValueError(f"cannot tell the framework of {folder}: no model.onnx or saved_model.pb")
            self._models[source.name] = (version, get_runtime(platform).load(folder, settings))

    @property
    def names(self) -> tuple[str, ...]:
        """The loaded models' names."""
        return tuple(self._models)

    def predict(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        signature: str | None = None,
        output_filter: tuple[str, ...] | None = None,
    ) -> dict[str, np.ndarray]:
        """Run the model on ``inputs`` cast to its signature's dtypes; errors as `ModelServerError`."""
        if model not in self._models:
            raise ModelServerError(Code.NOT_FOUND, f"Servable not found for request: Latest({model})")
        _, servable = self._models[model]
        name = signature or DEFAULT_SIGNATURE
        spec = servable.signatures.get(name)
        if spec is None:
            raise ModelServerError(Code.NOT_FOUND, f'Serving signature name: "{name}" not found')
        feed: dict[str, np.ndarray] = {}
        for key, value in inputs.items():
            wanted = spec.inputs.get(key)
            array = np.asarray(value)
            # The model server converts JSON numbers to the signature's dtype; do the same here.
            if wanted is not None and not wanted.is_string and array.dtype != wanted.dtype:
                array = array.astype(wanted.dtype)
            feed[key] = array
        outputs = list(output_filter) if output_filter else list(spec.outputs)
        try:
            return servable.predict(name, feed, outputs)
        except ServingError as error:
            raise ModelServerError(error.code, error.message) from error

    def close(self) -> None:
        """Free every model (the worker is exiting)."""
        for _, servable in self._models.values():
            servable.close()
