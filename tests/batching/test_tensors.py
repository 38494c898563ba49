"""Merging requests into a batch and splitting outputs back: exact rows, padding undone."""

from __future__ import annotations

import numpy as np
import pytest

from modelserve.batching.tensors import batch_rows, merge, pad_target, shape_key, split
from modelserve.errors import Internal, InvalidArgument


def rows(start: int, count: int, width: int = 3) -> np.ndarray:
    return np.arange(start * width, (start + count) * width, dtype=np.float32).reshape(count, width)


def test_batch_rows() -> None:
    assert batch_rows({"a": np.zeros((0, 2))}) == 0
    assert batch_rows({"a": np.zeros((5, 2)), "b": np.zeros((5,))}) == 5
    assert batch_rows({"a": np.zeros((5, 2)), "b": np.zeros((4,))}) is None
    assert batch_rows({"a": np.float32(1.0) * np.ones(())}) is None


def test_merge_and_split_round_trip() -> None:
    parts = [{"x": rows(0, 1)}, {"x": rows(1, 5)}, {"x": rows(6, 2)}]
    batch = merge(parts)
    assert batch.inputs["x"].shape == (8, 3) and batch.rows == (1, 5, 2) and batch.padded_rows == 8
    results = split({"y": batch.inputs["x"] * 2}, batch)
    for part, result in zip(parts, results, strict=True):
        np.testing.assert_array_equal(result["y"], part["x"] * 2)


def test_single_request_passes_through_without_copies() -> None:
    x = rows(0, 4)
    batch = merge([{"x": x}])
    assert batch.inputs["x"] is x
    outputs = {"y": x + 1}
    assert split(outputs, batch)[0]["y"] is outputs["y"]


def test_pad_to_allowed_batch_size_with_copies_of_the_last_row() -> None:
    parts = [{"x": rows(0, 2)}, {"x": rows(2, 1)}]
    batch = merge(parts, pad_to_rows=pad_target(3, (2, 4, 8)))
    assert batch.padded_rows == 4 and batch.real_rows == 3
    np.testing.assert_array_equal(batch.inputs["x"][3], batch.inputs["x"][2])
    results = split({"y": batch.inputs["x"] * 10}, batch)
    assert [r["y"].shape[0] for r in results] == [2, 1]
    np.testing.assert_array_equal(results[1]["y"], parts[1]["x"] * 10)


@pytest.mark.parametrize(
    ("rows_", "sizes", "target"), [(3, (2, 4, 8), 4), (4, (2, 4, 8), 4), (1, (), 1), (9, (2, 4, 8), 9)]
)
def test_pad_target(rows_: int, sizes: tuple[int, ...], target: int) -> None:
    assert pad_target(rows_, sizes) == target


def test_variable_length_padding_and_unpadding() -> None:
    short = np.array([[1, 2]], dtype=np.int64)
    long = np.array([[3, 4, 5, 6], [7, 8, 9, 10]], dtype=np.int64)
    batch = merge([{"ids": short}, {"ids": long}], pad_variable_length=True)
    np.testing.assert_array_equal(batch.inputs["ids"], [[1, 2, 0, 0], [3, 4, 5, 6], [7, 8, 9, 10]])
    # A per-token output (same padded dimension) is cut back; a pooled one is only split by rows.
    per_token = batch.inputs["ids"] * 2
    pooled = batch.inputs["ids"].sum(axis=1)
    variable = {"tokens": frozenset({1}), "sum": frozenset()}  # the signature: tokens [-1,-1], sum [-1]
    first, second = split({"tokens": per_token, "sum": pooled}, batch, variable)
    np.testing.assert_array_equal(first["tokens"], [[2, 4]])
    np.testing.assert_array_equal(first["sum"], [3])
    np.testing.assert_array_equal(second["tokens"], long * 2)
    np.testing.assert_array_equal(second["sum"], long.sum(axis=1))


def test_fixed_output_dimensions_are_never_cut() -> None:
    # Lengths 2 and 4, and an embedding of width 4: the same size as the padded length, but declared fixed.
    batch = merge(
        [{"ids": np.ones((1, 2), np.int64)}, {"ids": np.ones((1, 4), np.int64)}], pad_variable_length=True
    )
    embedding = np.arange(8, dtype=np.float32).reshape(2, 4)
    first, _ = split({"embedding": embedding}, batch, {"embedding": frozenset()})
    assert first["embedding"].shape == (1, 4)
    first, _ = split({"embedding": embedding}, batch)  # no signature information: nothing is cut
    assert first["embedding"].shape == (1, 4)


def test_an_axis_two_inputs_padded_differently_is_cut_by_the_matching_size() -> None:
    a = {"ids": np.ones((1, 2), np.int64), "chars": np.ones((1, 5), np.int64)}
    b = {"ids": np.ones((1, 4), np.int64), "chars": np.ones((1, 6), np.int64)}
    batch = merge([a, b], pad_variable_length=True)
    variable = {"per_id": frozenset({1}), "per_char": frozenset({1})}
    first, second = split({"per_id": np.zeros((2, 4)), "per_char": np.zeros((2, 6))}, batch, variable)
    assert first["per_id"].shape == (1, 2) and first["per_char"].shape == (1, 5)
    assert second["per_id"].shape == (1, 4) and second["per_char"].shape == (1, 6)


def test_variable_length_strings_pad_with_empty_bytes() -> None:
    a = np.array([[b"a"]], dtype=object)
    b = np.array([[b"b", b"c"]], dtype=object)
    batch = merge([{"s": a}, {"s": b}], pad_variable_length=True)
    assert batch.inputs["s"].tolist() == [[b"a", b""], [b"b", b"c"]]


def test_different_shapes_without_padding_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="pad_variable_length_inputs"):
        merge([{"x": rows(0, 1, width=2)}, {"x": rows(0, 1, width=3)}])


def test_shape_key_groups_only_stackable_requests() -> None:
    a = {"x": np.zeros((1, 3), np.float32)}
    b = {"x": np.zeros((7, 3), np.float32)}
    c = {"x": np.zeros((1, 4), np.float32)}
    assert shape_key(a, False) == shape_key(b, False) != shape_key(c, False)
    assert shape_key(a, True) == shape_key(c, True)
    assert shape_key(a, True) != shape_key({"x": np.zeros((1, 3), np.float64)}, True)


def test_unbatched_output_of_a_merged_batch_is_an_internal_error() -> None:
    batch = merge([{"x": rows(0, 1)}, {"x": rows(1, 1)}])
    with pytest.raises(Internal, match="not batched along dimension 0"):
        split({"y": np.zeros((3,))}, batch)
