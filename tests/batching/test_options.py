"""TF Serving's BatchingParameters resolved into batcher options."""

from __future__ import annotations

import pytest

from modelserve.batching.options import BatchingOptions
from modelserve.config.text_files import parse_batching_parameters
from modelserve.errors import InvalidArgument


def test_tf_serving_defaults_select_the_adaptive_policy() -> None:
    options = BatchingOptions.from_parameters(parse_batching_parameters(""), default_threads=2)
    assert options.adaptive and options.timeout_seconds is None
    assert (options.max_batch_size, options.execution_batch_size, options.threads) == (1000, 1000, 2)
    assert options.max_enqueued_rows == 10 * 1000


def test_explicit_timeout_is_static_even_when_zero() -> None:
    params = parse_batching_parameters("batch_timeout_micros { value: 0 } num_batch_threads { value: 3 }")
    options = BatchingOptions.from_parameters(params, default_threads=2)
    assert not options.adaptive and options.timeout_seconds == 0.0 and options.threads == 3


def test_large_batch_splitting() -> None:
    params = parse_batching_parameters(
        "max_batch_size { value: 100 } enable_large_batch_splitting { value: true } "
        "max_execution_batch_size { value: 8 } max_enqueued_batches { value: 4 } "
        "allowed_batch_sizes: 4 allowed_batch_sizes: 8"
    )
    options = BatchingOptions.from_parameters(params, default_threads=1)
    assert options.split_large_batches
    assert (options.max_batch_size, options.execution_batch_size, options.max_enqueued_rows) == (100, 8, 32)


def test_allowed_sizes_must_end_at_the_execution_batch_size() -> None:
    with pytest.raises(InvalidArgument, match="must equal max_batch_size"):
        BatchingOptions.from_parameters(
            parse_batching_parameters("max_batch_size { value: 64 } allowed_batch_sizes: 32"), 1
        )
