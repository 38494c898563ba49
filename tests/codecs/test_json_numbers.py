"""TF Serving's number formatting (WriteDecimal in util/json_tensor.cc) and the vectorised fast path."""

from __future__ import annotations

import numpy as np
import pytest

from modelserve.codecs import json_numbers
from modelserve.codecs.json_numbers import compact_json, decimal_text, float_tokens


@pytest.mark.parametrize(
    ("value", "dtype", "expected"),
    [
        # json_tensor_test.cc FromJsonSingleFloatTensorSixDigitPrecision, verbatim.
        (9000000, np.float32, "9e+06"),
        (999999, np.float32, "999999.0"),
        (0.50000, np.float32, "0.5"),
        (0.0003, np.float32, "0.0003"),
        (0.00003, np.float32, "3e-05"),
        (555557.5, np.float32, "555557.5"),
        # FromJsonSingleFloatTensorNonFinite.
        (float("nan"), np.float32, "NaN"),
        (float("inf"), np.float32, "Infinity"),
        (3, np.float32, "3.0"),
        (float("-inf"), np.float32, "-Infinity"),
        # Our own: the %g -> %.9g / %.17g fallback and the ".0" rule.
        (0.2, np.float32, "0.2"),  # no float->double noise digits
        (-0.0, np.float32, "-0.0"),
        (123456789.0, np.float32, "123456792.0"),  # %g loses digits: %.9g, then ".0"
        (0.1234567, np.float32, "0.123456702"),
        (1234567.125, np.float32, "1234567.12"),  # %.9g rounds a tie to even
        (1e-45, np.float32, "1.4013e-45"),  # the smallest subnormal: six digits round-trip
        (3.4028235e38, np.float32, "3.40282347e+38"),
        (16777216.0, np.float32, "16777216.0"),
        (1.0 / 3.0, np.float64, "0.33333333333333331"),
        (0.1, np.float64, "0.1"),
        (1e300, np.float64, "1e+300"),
        (float("nan"), np.float64, "NaN"),
        (float("-inf"), np.float64, "-Infinity"),
        (12.0, np.float64, "12.0"),
        (0.1, np.float16, "0.0999755859"),  # halves are written as the float they widen to
    ],
)
def test_float_tokens(value: float, dtype: type, expected: str) -> None:
    assert float_tokens(np.array([value], dtype=dtype)) == [expected]
    assert decimal_text(float(np.array(value, dtype=dtype)), double=dtype == np.float64) == expected


def test_six_digit_vector_from_the_tf_serving_test_laid_out_compactly() -> None:
    values = np.array([[9000000, 999999, 0.5], [0.0003, 0.00003, 555557.5]], np.float32)
    assert compact_json(values) == b"[[9e+06,999999.0,0.5],[0.0003,3e-05,555557.5]]"


def _reference(values: np.ndarray) -> bytes:
    """Element by element with the exact (Fraction-based) rule."""
    tokens = [decimal_text(float(v), double=False) for v in values.reshape(-1)]
    return ("[" + ",".join(tokens) + "]").encode()


def _awkward_float32s(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    parts = [
        rng.integers(0, 2**32, 6000, dtype=np.uint64).astype(np.uint32).view(np.float32),  # every exponent
        rng.random(3000).astype(np.float32),
        (10.0 ** rng.uniform(-44, 38, 3000)).astype(np.float32),
        np.round(rng.random(2000) * 1000, 3).astype(np.float32),  # short decimals
        rng.integers(-(10**7), 10**7, 2000).astype(np.float32),  # integers
        np.array(
            [
                *(0.0, -0.0, np.nan, np.inf, -np.inf, 1e-45, 1.1754944e-38, 3.4028235e38, 1234567.125),
                *(555557.5, 9.9999997e-5, 999999.94, 99999.99, 1e9, 999999940, 1e-4, 1e-5, 1e-6, 1e6),
                *(1e5, 0.99999994),
            ],
            np.float32,
        ),
    ]
    values = np.concatenate(parts)
    return np.concatenate([values, -values])


@pytest.mark.parametrize("seed", [1, 2])
def test_vectorised_path_matches_the_rule_element_by_element(seed: int) -> None:
    values = _awkward_float32s(seed)
    assert values.size >= json_numbers.VECTOR_MIN
    with np.errstate(invalid="ignore"):
        assert compact_json(values) == _reference(values)


def test_small_path_matches_the_rule() -> None:
    values = _awkward_float32s(3)
    step = json_numbers.VECTOR_MIN - 1
    for start in range(0, values.size, step):
        chunk = values[start : start + step]
        assert compact_json(chunk) == _reference(chunk)


def test_nesting_matches_between_paths() -> None:
    values = np.random.default_rng(4).random((3, 4, 5)).astype(np.float32)
    vector = compact_json(values)
    small = b"[" + b",".join(compact_json(values[i]) for i in range(3)) + b"]"
    assert vector == small
    assert vector.startswith(b"[[[") and vector.endswith(b"]]]")


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (np.array([[1, 2], [3, 4]], np.int32), b"[[1,2],[3,4]]"),
        (np.array([2**64 - 1], np.uint64), b"[18446744073709551615]"),
        (np.array([-(2**63)], np.int64), b"[-9223372036854775808]"),
        (np.array([True, False]), b"[true,false]"),
        (np.array(7, np.int8), b"7"),
        (np.array(2.5, np.float32), b"2.5"),
        (np.zeros((2, 0), np.float32), b"[[],[]]"),
        (np.array([0.5, 2.0], np.float64), b"[0.5,2.0]"),
    ],
)
def test_compact_json_of_other_types(values: np.ndarray, expected: bytes) -> None:
    assert compact_json(values) == expected
