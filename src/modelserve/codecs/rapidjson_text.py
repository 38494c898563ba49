"""JSON text laid out the way TF Serving's RapidJSON ``PrettyWriter`` lays it out.

TF Serving writes every REST response with ``rapidjson::PrettyWriter`` (4-space indent) and switches some
arrays to ``kFormatSingleLineArray``. What that produces, and what this module reproduces:

- objects always break lines: ``{`` newline, ``"key": value`` per line, newline, ``}``; empty ones are ``{}``;
- arrays in the default format put each element on its own line; in single-line format elements are
  separated by ``", "`` and the closing bracket follows the last element directly; empty arrays are ``[]``;
- indentation is four spaces per open container, counted from the root object;
- strings escape ``"``, ``\\``, ``\\b \\f \\n \\r \\t`` and other control bytes as ``\\u00XX``
  (upper-case hex); every other byte, including invalid UTF-8, is copied as is.

Tensors arrive here as compact JSON (``[[1,2],[3,4]]``, from `json_numbers`) and are re-spaced with a few
``bytes.replace`` calls; that is exact because numeric tokens contain no commas or brackets. String tensors
are laid out from their tokens. `value_text` renders any parsed JSON value the way TF Serving quotes
request content in error messages (``JsonValueToString``).
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from modelserve.codecs.json_numbers import decimal_text

INDENT = b"    "

_CONTROL = re.compile(rb'["\\\x00-\x1f]')
_SHORT_ESCAPES = {
    ord('"'): b'\\"',
    ord("\\"): b"\\\\",
    ord("\b"): b"\\b",
    ord("\f"): b"\\f",
    ord("\n"): b"\\n",
    ord("\r"): b"\\r",
    ord("\t"): b"\\t",
}
_LOWER_ESCAPE = re.compile(rb"\\(?:u([0-9a-f]{4})|.)")


def _escape_byte(match: re.Match[bytes]) -> bytes:
    code = match.group()[0]
    return _SHORT_ESCAPES.get(code) or b"\\u00%02X" % code


def _upper_hex(match: re.Match[bytes]) -> bytes:
    hex_digits = match.group(1)
    return b"\\u" + hex_digits.upper() if hex_digits else match.group()


def json_string(raw: bytes | str) -> bytes:
    """A quoted JSON string exactly as RapidJSON's ``Writer::String`` writes these bytes."""
    if isinstance(raw, str):
        text = raw
    else:
        try:
            text = raw.decode()
        except UnicodeDecodeError:  # RapidJSON copies invalid UTF-8 through; so do we
            return b'"' + _CONTROL.sub(_escape_byte, raw) + b'"'
    try:
        quoted = orjson.dumps(text)  # same escapes as RapidJSON, but \u00xx in lower case
    except TypeError:  # lone surrogates: only from surrogateescape'd invalid UTF-8
        return json_string(text.encode("utf-8", "surrogateescape"))
    return _LOWER_ESCAPE.sub(_upper_hex, quoted) if b"\\u" in quoted else quoted


def indent(level: int) -> bytes:
    """A line break followed by the indentation of ``level`` open containers."""
    return b"\n" + INDENT * level


# -- tensors -------------------------------------------------------------------------------------------------


def single_line(compact: bytes) -> bytes:
    """Compact numeric JSON in ``kFormatSingleLineArray``: ``[[1, 2], [3, 4]]``."""
    return compact.replace(b",", b", ")


def multi_line(compact: bytes, rank: int, depth: int) -> bytes:
    """Compact numeric JSON of a non-empty rank-``rank`` tensor in the default (one value per line) format.

    ``depth`` is the number of containers open where the tensor starts (1 for ``"outputs": [...]`` with one
    output, 2 inside the ``"outputs"`` object). The runs of brackets between rows are rewritten longest
    first, with the row comma parked as a NUL so the element commas can be rewritten last.
    """
    if rank == 0:
        return compact
    text = compact[rank:-rank]
    for level in range(rank - 1, 0, -1):
        closing = b"".join(indent(depth + rank - 1 - j) + b"]" for j in range(level))
        opening = b"".join(indent(depth + rank - level + j) + b"[" for j in range(level))
        text = text.replace(
            b"]" * level + b"," + b"[" * level, closing + b"\x00" + opening + indent(depth + rank)
        )
    text = text.replace(b",", b"," + indent(depth + rank)).replace(b"\x00", b",")
    opening = b"[" + b"".join(indent(depth + j) + b"[" for j in range(1, rank))
    closing = b"".join(indent(depth + rank - 1 - j) + b"]" for j in range(rank))
    return opening + indent(depth + rank) + text + closing


def rows(compact: bytes, rank: int) -> list[bytes]:
    """The compact text of each dim-0 slice of a rank >= 1 tensor (row format), in single-line format."""
    inner = compact[1:-1]
    if not inner:
        return []
    if rank == 1:
        return inner.split(b",")
    edge = rank - 1
    marked = inner.replace(b"]" * edge + b"," + b"[" * edge, b"]" * edge + b"\x00" + b"[" * edge)
    return [single_line(row) for row in marked.split(b"\x00")]


def tokens_single_line(tokens: Sequence[bytes], shape: tuple[int, ...]) -> bytes:
    """Ready-made tokens (strings, b64 objects) nested in single-line format."""
    if not shape:
        return tokens[0]
    if len(shape) == 1:
        return b"[" + b", ".join(tokens) + b"]"
    step = len(tokens) // shape[0] if shape[0] else 0
    parts = (tokens_single_line(tokens[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0]))
    return b"[" + b", ".join(parts) + b"]"


def tokens_multi_line(tokens: Sequence[bytes], shape: tuple[int, ...], depth: int) -> bytes:
    """Ready-made tokens nested in the default format, the outer array opening at ``depth``."""
    if not shape:
        return tokens[0]
    if shape[0] == 0:
        return b"[]"
    step = len(tokens) // shape[0]
    parts = [
        tokens_multi_line(tokens[i * step : (i + 1) * step], shape[1:], depth + 1) for i in range(shape[0])
    ]
    return b"[" + b",".join(indent(depth + 1) + part for part in parts) + indent(depth) + b"]"


def b64_object(encoded: bytes, depth: int) -> bytes:
    """``{"b64": ...}`` as an array element opened at ``depth``: objects always break lines in RapidJSON."""
    return b"{" + indent(depth + 1) + b'"b64": "' + encoded + b'"' + indent(depth) + b"}"


# -- request values quoted in error messages -----------------------------------------------------------------


class _Stop(Exception):
    """RapidJSON's writer refused a value (NaN or infinity inside an array or object)."""


def _grisu_text(value: float) -> str:
    """A double as RapidJSON's ``Writer::Double`` writes it (shortest digits, its own exponent style)."""
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign = "-" if value < 0 else ""
    mantissa, _, exp = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    # value = 0.digits * 10**point
    point = len(whole.lstrip("0")) if whole.strip("0") else -(len(fraction) - len(fraction.lstrip("0")))
    point += int(exp or 0)
    digits = digits.rstrip("0") or "0"
    length = len(digits)
    if 0 < point <= 21:
        if length <= point:
            return sign + digits + "0" * (point - length) + ".0"
        return sign + digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return sign + "0." + "0" * -point + digits
    exponent = point - 1
    mantissa = digits[0] + ("." + digits[1:] if length > 1 else "")
    return sign + mantissa + "e" + str(exponent)


def _write(value: Any, level: int, out: list[str]) -> None:
    if isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            out.append(("\n" if i == 0 else ",\n") + "    " * (level + 1))
            out.append(json_string(key).decode(errors="surrogateescape") + ": ")
            _write(item, level + 1, out)
        out.append("\n" + "    " * level + "}")
    elif isinstance(value, list):
        if not value:
            out.append("[]")
            return
        out.append("[")
        for i, item in enumerate(value):
            out.append(("\n" if i == 0 else ",\n") + "    " * (level + 1))
            _write(item, level + 1, out)
        out.append("\n" + "    " * level + "]")
    else:
        out.append(_scalar_text(value, top=False))


def _scalar_text(value: Any, top: bool) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return json_string(value).decode(errors="surrogateescape")
    if isinstance(value, int):
        if -(2**63) <= value < 2**64:
            return str(value)
        try:
            value = float(value)  # RapidJSON parses integers beyond uint64 as doubles
        except OverflowError:
            return str(value)
    if top:
        # JsonValueToString writes a lone number with WriteDecimal, as float when it fits one.
        fits_float = math.isfinite(value) and abs(value) <= 3.4028234e38
        return decimal_text(float(_to_float32(value)) if fits_float else value, double=not fits_float)
    if not math.isfinite(value):
        raise _Stop
    return _grisu_text(value)


def _to_float32(value: float) -> float:
    return float(np.float32(value))


def value_text(value: Any) -> str:
    """``JsonValueToString``: a request value as TF Serving quotes it in error messages."""
    if not isinstance(value, (dict, list)):
        return _scalar_text(value, top=True)
    out: list[str] = []
    # RapidJSON stops at the first value it cannot write; the message shows what came before it.
    with contextlib.suppress(_Stop):
        _write(value, 0, out)
    return "".join(out)


def json_type(value: Any) -> str:
    """``JsonTypeString``: RapidJSON's name for a value's type."""
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"
