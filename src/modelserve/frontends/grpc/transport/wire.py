"""gRPC over HTTP/2 (grpc's PROTOCOL-HTTP2.md): header encoding, status trailers, timeouts and compression.

Response headers are encoded statelessly — ``:status: 200`` as static-table index 8, everything else as
"literal header field without indexing" with a literal name and no Huffman — so we never track the
peer's dynamic table.
"""

from __future__ import annotations

import base64
import re
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import hpack

Metadata = Sequence[tuple[str, str | bytes]]

# Request headers that are protocol, not the caller's metadata.
RESERVED_HEADERS = frozenset(
    {b"content-type", b"te", b"grpc-timeout", b"grpc-encoding", b"grpc-accept-encoding"}
)


def hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """An HPACK integer (RFC 7541 §5.1) with ``first``'s high bits in front of the prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name: bytes, value: bytes) -> bytes:
    """A literal header field without indexing, with a literal name (RFC 7541 §6.2.2)."""
    return b"\x00" + hpack_int(len(name), 7) + name + hpack_int(len(value), 7) + value


def http_status(status: int) -> bytes:
    """``:status`` as a literal without indexing whose name is static-table entry 8."""
    value = str(status).encode()
    return b"\x08" + hpack_int(len(value), 7) + value


RESPONSE_HEADERS = (
    b"\x88"  # :status: 200
    + literal(b"content-type", b"application/grpc")
    + literal(b"grpc-accept-encoding", b"identity,deflate,gzip")
)
_STATUS = [literal(b"grpc-status", str(code).encode()) for code in range(17)]
OK_TRAILERS = _STATUS[0]

# grpc-message is percent-encoded: everything outside printable ASCII, and "%" itself.
_UNSAFE = re.compile(rb"[^\x20-\x24\x26-\x7e]")


def percent_encode(details: str) -> bytes:
    """grpc-message's encoding of a details string (UTF-8, then %XX for unsafe bytes)."""
    raw = details.encode("utf-8", "replace")
    if _UNSAFE.search(raw) is None:
        return raw
    return _UNSAFE.sub(lambda match: b"%%%02X" % match.group()[0], raw)


def _header_bytes(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode("utf-8")


def metadata_block(metadata: Iterable[tuple[str, Any]]) -> bytes:
    """Custom metadata as header fields; ``-bin`` values are base64 without padding."""
    parts = []
    for key, value in metadata:
        name = _header_bytes(key).lower()
        if name.endswith(b"-bin"):
            encoded = base64.b64encode(_header_bytes(value)).rstrip(b"=")
        else:
            encoded = _header_bytes(value)
        parts.append(literal(name, encoded))
    return b"".join(parts)


def status_block(code: int, details: str | None, trailing: Metadata = ()) -> bytes:
    """grpc-status, grpc-message and trailing metadata."""
    block = _STATUS[code] if 0 <= code < len(_STATUS) else literal(b"grpc-status", str(code).encode())
    if details:
        block += literal(b"grpc-message", percent_encode(details))
    if trailing:
        block += metadata_block(trailing)
    return block


_TIMEOUT_UNITS = {72: 3600.0, 77: 60.0, 83: 1.0, 109: 1e-3, 117: 1e-6, 110: 1e-9}  # H M S m u n


def parse_timeout(value: bytes) -> float | None:
    """Seconds in a grpc-timeout value (1-8 digits and a unit), or None when malformed."""
    unit = _TIMEOUT_UNITS.get(value[-1]) if value else None
    digits = value[:-1]
    if unit is None or not digits.isdigit() or len(digits) > 8:
        return None
    return int(digits) * unit


def decode_metadata(headers: Iterable[tuple[bytes, bytes]]) -> tuple[tuple[str, str | bytes], ...]:
    """The caller's metadata from decoded request headers; ``-bin`` values base64-decoded to bytes."""
    metadata: list[tuple[str, str | bytes]] = []
    for name, value in headers:
        if name[:1] == b":" or name in RESERVED_HEADERS:
            continue
        key = name.decode("ascii", "replace")
        if name.endswith(b"-bin"):
            try:
                metadata.append((key, base64.b64decode(value + b"=" * (-len(value) % 4))))
            except ValueError:
                continue
        else:
            metadata.append((key, value.decode("utf-8", "replace")))
    return tuple(metadata)


class MessageTooLarge(Exception):
    """A (decompressed) message exceeds the receive limit."""


_WBITS = {b"gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}
SUPPORTED_ENCODINGS = frozenset({b"identity", b"gzip", b"deflate"})


def decompress(data: bytes, encoding: bytes, limit: int) -> bytes:
    """Inflate a compressed message; raises MessageTooLarge past ``limit`` (inflating no further than
    one byte beyond it) and zlib.error when corrupt or truncated."""
    inflater = zlib.decompressobj(_WBITS[encoding])
    out = inflater.decompress(data, limit + 1)
    if len(out) > limit:
        raise MessageTooLarge(len(out))
    if not inflater.eof:
        raise zlib.error("compressed message is truncated")
    return out


def new_decoder(max_header_list_size: int) -> Any:
    """An HPACK decoder for one connection's request headers."""
    decoder = hpack.Decoder(max_header_list_size=max_header_list_size)
    return decoder
