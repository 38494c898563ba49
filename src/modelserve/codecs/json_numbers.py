"""Numbers exactly as TF Serving writes them into JSON, without a Python step per element where it matters.

TF Serving's rule (``WriteDecimal`` in ``tensorflow_serving/util/json_tensor.cc``), for float and double:

1. ``s = absl::StrCat(x)``: six significant digits laid out like printf ``%g``
   (``0.5``, ``999999``, ``9e+06``, ``3e-05``, ``-0``);
2. if ``s`` does not parse back to exactly ``x`` (``absl::SimpleAtof`` / ``SimpleAtod``, correctly
   rounded), ``s = "%.*g" % (max_digits10, x)``: ``%.9g`` for float, ``%.17g`` for double;
3. ``.0`` is appended when ``s`` has neither ``.`` nor ``e`` (``3.0``, ``999999.0``, ``-0.0``);
4. non-finite values are the bare tokens ``NaN``, ``Infinity``, ``-Infinity``.

Integers are plain decimal (RapidJSON ``Writer::Int``/``Int64``/``Uint``/``Uint64``), bools
``true``/``false``; orjson writes both the same way. Upstream TF Serving cannot write DT_HALF at all; we
write float16 as the float it widens to, as the open upstream pull request for half support does.

Where the cost lives: float32 tensors of `VECTOR_MIN` elements or more are decided with whole-array
operations and written by orjson (`_float32_compact_vector`); smaller ones take one cheap Python step per
element, the round trip decided from orjson's shortest representations and the text written by a single
``%`` over the tensor; doubles take one Python step per element (``float()`` makes their round trip exact).
"""

from __future__ import annotations

import math
from fractions import Fraction
from itertools import repeat

import numpy as np
import orjson

_SPECIAL = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_NUMPY = orjson.OPT_SERIALIZE_NUMPY

# Arrays at least this large take the vectorised float32 path; below it numpy's per-call overhead dominates.
VECTOR_MIN = 48


# -- one value at a time (the reference rule; also the fallback for the rare uncertain elements) ----------


def _round_to_float32(value: Fraction) -> float:
    """The float32 nearest to an exact rational, ties to even (what ``absl::SimpleAtof`` computes)."""
    with np.errstate(over="ignore"):
        guess = np.float32(float(value))  # may be off by one ulp through double rounding
    best = guess
    for candidate in (np.nextafter(guess, np.float32(-np.inf)), np.nextafter(guess, np.float32(np.inf))):
        if not np.isfinite(candidate) or not np.isfinite(best):
            continue
        d_best = abs(Fraction(float(best)) - value)
        d_cand = abs(Fraction(float(candidate)) - value)
        if d_cand < d_best or (d_cand == d_best and int(candidate.view(np.uint32)) % 2 == 0):
            best = candidate
    return float(best)


def decimal_text(value: float, double: bool) -> str:
    """One float or double as TF Serving's WriteDecimal writes it (``value`` already rounded to its type)."""
    if not math.isfinite(value):
        return _SPECIAL["nan" if value != value else ("inf" if value > 0 else "-inf")]
    text = format(value, "g")
    if double:
        if float(text) != value:
            text = format(value, ".17g")
    elif _round_to_float32(Fraction(text)) != value:
        text = format(value, ".9g")
    if "." in text or "e" in text:
        return text
    return text + ".0"


# -- float32 -------------------------------------------------------------------------------------------------
#
# Step 2 of the rule needs no parsing: the six-digit text converts back to x exactly when x's shortest
# round-trip representation has at most six significant digits (if it has, that representation *is* the
# six-digit rounding of x, because float32's rounding interval is narrower than half a unit in the sixth
# digit; if the six-digit rounding converts back, the shortest has at most six digits). orjson writes
# float32 arrays with their shortest representations (Ryu), so counting digits decides step 2.


# printf conversion by the number of significant digits of the shortest representation (0..9).
_SPEC_BY_DIGITS = ["%g"] * 7 + ["%.9g"] * 3
_PLAIN_LIMIT = {"%g": 1e6, "%.9g": 1e9}  # integers below these are written without an exponent


def _float32_specs(flat: np.ndarray, values: list[float]) -> list[str] | None:
    """The printf conversion TF Serving uses for each of a few float32 values; None if one needs care.

    The values are then formatted by a single ``%`` over the whole tensor, and the per-element work is
    done by C-level ``map`` calls. NaN, infinities (orjson's ``null``) and exponent-form shortest
    representations (|x| < 1e-5 or >= 1e16) are left to `_float32_tokens_careful`.
    """
    shortest = orjson.dumps(flat, option=_NUMPY)
    if b"e" in shortest or b"null" in shortest:
        return None
    tokens = shortest[1:-1].split(b",")
    # Significant digits: b"0.00012" -> b"12" -> 2, b"100.0" -> b"1" -> 1, b"12.5" -> b"125" -> 3.
    stripped = map(bytes.strip, tokens, repeat(b"-0."))
    digits = map(len, map(bytes.replace, stripped, repeat(b"."), repeat(b"")))
    specs = list(map(_SPEC_BY_DIGITS.__getitem__, digits))
    if b".0," in shortest or shortest.endswith(b".0]"):  # integers: printf leaves out TF's ".0"
        for index, token in enumerate(tokens):
            if token.endswith(b".0") and abs(values[index]) < _PLAIN_LIMIT[specs[index]]:
                specs[index] += ".0"
    return specs


def _float32_tokens_careful(flat: np.ndarray, values: list[float]) -> list[str]:
    """One float32 token at a time, for tensors with NaN, infinities or tiny/huge values."""
    tokens = []
    for value, token in zip(values, orjson.dumps(flat, option=_NUMPY)[1:-1].split(b","), strict=True):
        if token == b"null":  # orjson's spelling of NaN and the infinities
            tokens.append(decimal_text(value, double=False))
            continue
        digits = token.partition(b"e")[0].strip(b"-0.")
        text = format(value, "g" if len(digits) - (b"." in digits) <= 6 else ".9g")
        tokens.append(text if ("." in text or "e" in text) else text + ".0")
    return tokens


def _float64_tokens(flat: np.ndarray) -> list[str]:
    """Tokens of float64 values; Python's ``float()`` is correctly rounded, so the round trip is exact."""
    tokens = []
    for value in flat.tolist():
        text = format(value, "g")
        if text in _SPECIAL:
            tokens.append(_SPECIAL[text])
            continue
        if float(text) != value:
            text = format(value, ".17g")
        tokens.append(text if ("." in text or "e" in text) else text + ".0")
    return tokens


def float_tokens(values: np.ndarray) -> list[str]:
    """Every element of a float16/32/64 array as TF Serving writes it, flattened in row-major order."""
    flat = values.reshape(-1)
    if flat.dtype == np.float64:
        return _float64_tokens(flat)
    flat = np.ascontiguousarray(flat, dtype=np.float32)
    numbers = flat.tolist()
    specs = _float32_specs(flat, numbers)
    if specs is None:
        return _float32_tokens_careful(flat, numbers)
    return ("\x00".join(specs) % tuple(numbers)).split("\x00")


_POW_OFFSET = 64
# Correctly rounded powers of ten; exact for |k| <= 22, which is where exactness is relied on.
_POW10 = np.array([float(f"1e{k}") for k in range(-_POW_OFFSET, _POW_OFFSET + 1)])
_MIDPOINT_BITS = np.uint64((1 << 29) - 1)  # the float64 mantissa bits below float32's precision
# printf's exponent suffix for each decimal exponent X (index X + 64): "e-05", "e+06", "e-45".
_SUFFIX = np.array([b"e%+03d" % x for x in range(-_POW_OFFSET, _POW_OFFSET + 1)], dtype=object)


def _float32_compact_vector(x: np.ndarray) -> bytes:
    """Compact JSON of a float32 tensor, decided and written with whole-array operations.

    For every normal x: the digits d9 = round(x, 9 significant) and d6 = round(x, 6 significant) in float64
    (x has 24 bits and the scaled value stays below 2^30, so the float64 error is below 1e-6 of a unit);
    "six" = d6 converts back to x. A value printf writes without exponent (-4 <= X < 6 or 9) is replaced
    by the double nearest to its decimal (one exact division), whose shortest representation orjson prints
    with exactly those digits and TF's layout ("0.000123", "3.0"). The others become NaN, which orjson
    writes as ``null``, and are spliced back in as mantissa (a second orjson call on d / 1e8) + exponent
    suffix. NaN, infinities, subnormals and values within float64 noise of a rounding tie (a few in a
    million) are formatted exactly, one by one.
    """
    flat = x.reshape(-1)
    magnitude = np.abs(flat)
    with np.errstate(invalid="ignore"):
        wide = magnitude.astype(np.float64)
        normal = (wide >= 2.0**-126) & (wide <= 3.5e38)  # False for zero, subnormals, infinities and NaN
    w = np.where(normal, wide, 1.0)
    exponent = np.floor(np.log10(w)).astype(np.intp)  # exact: no float32 is within 1e-7 of a power of ten
    scaled = w * _POW10[_POW_OFFSET + 8 - exponent]  # x * 10**(8 - E), in [1e8, 1e9]
    d9 = np.rint(scaled)
    scaled6 = scaled * 1e-3
    d6 = np.rint(scaled6)
    back = d6 * _POW10[_POW_OFFSET - 5 + exponent]  # d6 * 10**(E - 5), within two ulps of the decimal
    six = back.astype(np.float32) == magnitude
    unsure = np.abs(np.abs(scaled - d9) - 0.5) < 2e-6  # a tie at the ninth digit
    unsure |= np.abs(np.abs(scaled6 - d6) - 0.5) < 2e-9  # a tie at the sixth digit
    tail = (back.view(np.uint64) & _MIDPOINT_BITS).astype(np.intp)
    unsure |= np.abs(tail - (1 << 28)) <= 16  # too close to a float32 midpoint to round blindly
    digits = np.where(six, d6 * 1000.0, d9)
    carry = digits >= 1e9  # rounding up to 10**9 moves the decimal exponent
    digits = np.where(carry, 1e8, digits)
    exponent += carry
    certain = normal & ~unsure
    plain = certain & (exponent >= -4) & (exponent < np.where(six, 6, 9))
    decimal = digits / _POW10[_POW_OFFSET + np.where(plain, 8 - exponent, 0)]  # exact powers, one rounding
    with np.errstate(invalid="ignore"):
        out = np.where(plain, np.copysign(decimal, flat), np.where(wide == 0, flat, np.nan))
    text = orjson.dumps(out.reshape(x.shape), option=_NUMPY)
    pending = np.flatnonzero(~plain & (wide != 0))
    if not pending.size:
        return text
    # Exponent form: orjson writes the mantissa d / 1e8 (one exact division) and we append "e-05" etc.
    with np.errstate(invalid="ignore"):
        mantissa = np.copysign(digits[pending] / 1e8, flat[pending])
    written = orjson.dumps(mantissa, option=_NUMPY).replace(
        b".0,", b","
    )  # "%g" writes "1e-05", not "1.0e-05"
    mantissas = (written[1:-3] if written.endswith(b".0]") else written[1:-1]).split(b",")
    suffixes = _SUFFIX[exponent[pending] + _POW_OFFSET].tolist()
    for i in np.flatnonzero(~certain[pending]).tolist():
        mantissas[i] = decimal_text(float(flat[pending[i]]), double=False).encode()
        suffixes[i] = b""
    parts: list[bytes] = [b""] * (3 * pending.size + 1)
    parts[0::3] = text.split(b"null")
    parts[1::3] = mantissas
    parts[2::3] = suffixes
    return b"".join(parts)


# -- whole tensors as compact JSON ---------------------------------------------------------------------------


def _nest_tokens(tokens: list[str], shape: tuple[int, ...]) -> str:
    """Row-major tokens nested as compact JSON arrays: ``[[a,b],[c,d]]``."""
    if not shape:
        return tokens[0]
    if len(shape) == 1:
        return "[" + ",".join(tokens) + "]"
    step = len(tokens) // shape[0] if shape[0] else 0
    inner = shape[1:]
    return (
        "[" + ",".join(_nest_tokens(tokens[i * step : (i + 1) * step], inner) for i in range(shape[0])) + "]"
    )


def compact_json(values: np.ndarray) -> bytes:
    """A numeric (float, int, bool) tensor as compact JSON with TF Serving's number rules.

    ``[[1.0,2.5],[NaN,3e-05]]``; a rank-0 tensor is a bare value. No spaces: callers lay it out.
    """
    kind = values.dtype.kind
    if kind == "f":
        if values.dtype == np.float64:
            return _nest_tokens(_float64_tokens(values.reshape(-1)), values.shape).encode()
        flat = np.ascontiguousarray(values.reshape(-1), dtype=np.float32)
        if flat.size >= VECTOR_MIN:
            return _float32_compact_vector(flat.reshape(values.shape))
        numbers = flat.tolist()
        specs = _float32_specs(flat, numbers)
        if specs is None:
            return _nest_tokens(_float32_tokens_careful(flat, numbers), values.shape).encode()
        return (_nest_tokens(specs, values.shape) % tuple(numbers)).encode()
    if kind in "iub":
        if values.ndim == 0:
            return orjson.dumps(values.item())
        return orjson.dumps(np.ascontiguousarray(values), option=_NUMPY)
    raise TypeError(f"not a numeric dtype: {values.dtype}")
