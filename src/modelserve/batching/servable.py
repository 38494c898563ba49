"""``BatchingServable``: a loaded servable behind a batcher, with the servable's own interface.

The inference service recognises it and queues requests with ``submit`` instead of calling ``predict``;
``predict`` itself still runs one request directly (warm-up, requests that cannot be batched).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from modelserve.batching.batcher import Batcher, BatchObserver, BatchTicket
from modelserve.batching.options import BatchingOptions
from modelserve.core.servable import Servable
from modelserve.core.signature import Signature


class BatchingServable:
    """Wraps ``inner``; closing it stops the batch threads, then closes ``inner``."""

    def __init__(
        self,
        inner: Servable,
        options: BatchingOptions,
        name: str,
        observer: BatchObserver | None = None,
    ) -> None:
        self.inner = inner
        self.batcher = Batcher(inner.predict, options, name, observer, self._variable_output_axes)
        self._observer = observer
        if observer is not None:
            observer.watch_queue(self.batcher.queued_rows)

    @property
    def platform(self) -> str:
        return self.inner.platform

    @property
    def signatures(self) -> Mapping[str, Signature]:
        return self.inner.signatures

    def predict(
        self,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str],
    ) -> dict[str, np.ndarray]:
        return self.inner.predict(signature_name, inputs, output_names)

    def submit(
        self,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str],
        timeout_seconds: float | None,
        release: Callable[[], None],
    ) -> BatchTicket:
        """Queue one request for batching (see ``Batcher.submit``)."""
        return self.batcher.submit(signature_name, inputs, output_names, timeout_seconds, release)

    def _variable_output_axes(self, signature_name: str) -> dict[str, frozenset[int]]:
        """Per output, the dimensions its signature declares variable (they may be un-padded)."""
        signature = self.inner.signatures.get(signature_name)
        if signature is None:
            return {}
        return {
            name: frozenset(axis for axis, dim in enumerate(spec.shape or ()) if dim is None)
            for name, spec in signature.outputs.items()
        }

    def memory_bytes(self) -> int:
        return self.inner.memory_bytes()

    def close(self) -> None:
        self.batcher.close()
        if self._observer is not None:
            self._observer.close()
        self.inner.close()
