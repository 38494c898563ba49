"""Merge the inputs of several requests into one batch and split the outputs back, exactly.

Rows are stacked along dimension 0, in queue order. Two kinds of padding, both undone on the way out:

- **batch padding**: the merged batch is extended to the next ``allowed_batch_sizes`` entry with copies of
  its last row (copies of real data cannot produce NaNs or errors that zeros might); the extra output rows
  are dropped;
- **variable-length padding** (``pad_variable_length_inputs``): inputs whose other dimensions differ (token
  sequences of different lengths) are zero-padded to the longest along each such dimension. An output
  dimension that the signature declares variable (-1), of the same index and the same padded size as a
  padded input dimension, is cut back to each request's own length, so a per-token output comes back as
  long as the request's tokens. Fixed output dimensions (an embedding's width) are never cut, and neither
  is a dimension that two inputs padded differently would claim.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from modelserve.errors import Internal, InvalidArgument

Tensors = Mapping[str, np.ndarray]


def batch_rows(inputs: Tensors) -> int | None:
    """The number of rows of a request: the shared size of dimension 0; None if it cannot be batched."""
    rows: int | None = None
    for array in inputs.values():
        if array.ndim == 0:
            return None
        if rows is None:
            rows = array.shape[0]
        elif array.shape[0] != rows:
            return None
    return rows


def shape_key(inputs: Tensors, pad_variable_length: bool) -> tuple[object, ...]:
    """What requests must share to be merged: input names and dtypes, and the other dimensions unless
    variable-length padding may even them out (then only the ranks)."""
    if pad_variable_length:
        return tuple((name, a.dtype.str, a.ndim) for name, a in sorted(inputs.items()))
    return tuple((name, a.dtype.str, a.shape[1:]) for name, a in sorted(inputs.items()))


@dataclass(frozen=True, slots=True)
class MergedBatch:
    """One batch ready to run, and what is needed to cut its outputs back into per-request results."""

    inputs: dict[str, np.ndarray]
    rows: tuple[int, ...]  # rows of each part, in order
    padded_rows: int  # rows actually run, >= sum(rows)
    # Per padded dimension index: (padded size, each part's own size) for every input padded there.
    padded_dims: dict[int, list[tuple[int, tuple[int, ...]]]]

    @property
    def real_rows(self) -> int:
        return sum(self.rows)


def merge(parts: Sequence[Tensors], pad_to_rows: int = 0, pad_variable_length: bool = False) -> MergedBatch:
    """Stack ``parts`` (each a request's inputs, already validated) into one batch of ``pad_to_rows``."""
    rows = tuple(batch_rows(part) or 0 for part in parts)
    total = sum(rows)
    padded_rows = max(total, pad_to_rows)
    names = list(parts[0])
    inputs: dict[str, np.ndarray] = {}
    padded_dims: dict[int, list[tuple[int, tuple[int, ...]]]] = {}
    for name in names:
        arrays = [part[name] for part in parts]
        inner = [a.shape[1:] for a in arrays]
        if all(shape == inner[0] for shape in inner):
            if len(arrays) == 1 and padded_rows == total:
                inputs[name] = arrays[0]
                continue
            merged = np.concatenate(arrays, axis=0)
            if padded_rows > total:
                merged = np.concatenate([merged, np.repeat(merged[-1:], padded_rows - total, axis=0)])
            inputs[name] = merged
            continue
        if not pad_variable_length:
            raise InvalidArgument(
                f"input '{name}' has different shapes in one batch: {sorted(set(inner))}; "
                f"enable pad_variable_length_inputs to batch them"
            )
        target = tuple(max(dims) for dims in zip(*inner, strict=True))
        merged = np.zeros((padded_rows, *target), dtype=arrays[0].dtype)
        if merged.dtype == object:
            merged.fill(b"")
        offset = 0
        for array in arrays:
            region = (slice(offset, offset + array.shape[0]), *(slice(0, d) for d in array.shape[1:]))
            merged[region] = array
            offset += array.shape[0]
        if padded_rows > total:
            merged[total:] = merged[total - 1]
        inputs[name] = merged
        for axis, size in enumerate(target, start=1):
            sizes = tuple(shape[axis - 1] for shape in inner)
            if any(s != size for s in sizes) and (size, sizes) not in padded_dims.get(axis, []):
                padded_dims.setdefault(axis, []).append((size, sizes))
    return MergedBatch(inputs, rows, padded_rows, padded_dims)


def split(
    outputs: Tensors, batch: MergedBatch, variable_axes: Mapping[str, frozenset[int]] | None = None
) -> list[dict[str, np.ndarray]]:
    """Cut the batch's outputs into one result per part (views, no copies where possible).

    ``variable_axes`` names, per output, the dimensions its signature declares variable: only those may
    be cut back after variable-length padding.
    """
    if len(batch.rows) == 1 and batch.padded_rows == batch.rows[0] and not batch.padded_dims:
        return [dict(outputs)]
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != batch.padded_rows:
            raise Internal(
                f"output '{name}' has shape {list(array.shape)} for a batch of {batch.padded_rows} rows: "
                f"the model's outputs are not batched along dimension 0"
            )
    cuts = {
        name: _unpadding(array, batch, (variable_axes or {}).get(name, frozenset()))
        for name, array in outputs.items()
    }
    results: list[dict[str, np.ndarray]] = []
    offset = 0
    for index, rows in enumerate(batch.rows):
        result: dict[str, np.ndarray] = {}
        for name, array in outputs.items():
            part = array[offset : offset + rows]
            for axis, sizes in cuts[name]:
                if sizes[index] != part.shape[axis]:
                    cut = [slice(None)] * part.ndim
                    cut[axis] = slice(0, sizes[index])
                    part = part[tuple(cut)]
            result[name] = part
        results.append(result)
        offset += rows
    return results


def _unpadding(
    array: np.ndarray, batch: MergedBatch, variable: frozenset[int]
) -> list[tuple[int, tuple[int, ...]]]:
    """The (axis, per-part sizes) to cut ``array`` back along: variable axes padded unambiguously."""
    cuts = []
    for axis, candidates in batch.padded_dims.items():
        if axis not in variable or axis >= array.ndim:
            continue
        matching = [sizes for padded, sizes in candidates if padded == array.shape[axis]]
        if len(matching) == 1:
            cuts.append((axis, matching[0]))
    return cuts


def pad_target(rows: int, allowed_batch_sizes: Sequence[int]) -> int:
    """The smallest allowed batch size holding ``rows`` (``rows`` itself when any size is allowed)."""
    for size in allowed_batch_sizes:
        if size >= rows:
            return size
    return rows
