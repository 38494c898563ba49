"""The batcher's settings, resolved from TF Serving's ``BatchingParameters`` once per model."""

from __future__ import annotations

from dataclasses import dataclass

from modelserve.config.text_files import BatchingParameters
from modelserve.errors import InvalidArgument


@dataclass(frozen=True, slots=True)
class BatchingOptions:
    """What one model's batcher does; ``timeout_seconds`` None selects the adaptive policy."""

    max_batch_size: int = 1000  # largest request accepted (rows), and largest batch unless splitting
    execution_batch_size: int = 1000  # largest batch run at once
    timeout_seconds: float | None = None
    max_enqueued_rows: int = 10_000
    threads: int = 1
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False
    split_large_batches: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.execution_batch_size <= self.max_batch_size:
            raise InvalidArgument(
                f"the execution batch size ({self.execution_batch_size}) must be between 1 and "
                f"max_batch_size ({self.max_batch_size})"
            )
        if not self.split_large_batches and self.execution_batch_size != self.max_batch_size:
            raise InvalidArgument("max_execution_batch_size needs enable_large_batch_splitting")
        if self.threads < 1 or self.max_enqueued_rows < 1:
            raise InvalidArgument(
                f"num_batch_threads ({self.threads}) and the queue bound ({self.max_enqueued_rows} rows) "
                f"must be positive"
            )

    @property
    def adaptive(self) -> bool:
        return self.timeout_seconds is None

    @classmethod
    def from_parameters(cls, params: BatchingParameters, default_threads: int) -> BatchingOptions:
        """TF Serving's semantics: with ``enable_large_batch_splitting``, ``max_batch_size`` bounds one
        request and ``max_execution_batch_size`` one run; the queue holds ``max_enqueued_batches``
        batches of the run size. Without ``batch_timeout_micros`` in the file, the adaptive policy runs."""
        splitting = params.enable_large_batch_splitting
        execution = params.max_batch_size
        if splitting and params.max_execution_batch_size:
            execution = min(params.max_execution_batch_size, params.max_batch_size)
        sizes = params.allowed_batch_sizes
        if sizes and sizes[-1] != execution:
            what = "max_execution_batch_size" if splitting else "max_batch_size"
            raise InvalidArgument(
                f"the last allowed_batch_sizes entry ({sizes[-1]}) must equal {what} ({execution})"
            )
        return cls(
            max_batch_size=params.max_batch_size,
            execution_batch_size=execution,
            timeout_seconds=params.batch_timeout_micros / 1e6 if params.timeout_given else None,
            max_enqueued_rows=params.max_enqueued_batches * execution,
            threads=params.num_batch_threads or default_threads,
            allowed_batch_sizes=sizes,
            pad_variable_length_inputs=params.pad_variable_length_inputs,
            split_large_batches=splitting,
        )
