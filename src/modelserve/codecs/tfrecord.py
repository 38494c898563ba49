"""TFRecord files: TensorFlow's framing of a sequence of byte strings (a warm-up file is one).

Each record, as ``tf.io.TFRecordWriter`` writes it without compression::

    uint64 length (little-endian) | uint32 masked crc32c of the length | data | uint32 masked crc32c of data

Both checksums are verified, so a truncated or corrupted file fails with the file and the record index
(counted from 0) instead of handing garbage to a parser or a model. There is no ``DataLoss`` class in
``modelserve.errors``, so that failure is a ``FailedPrecondition``: the file on disk is unusable as it is.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import google_crc32c

from modelserve.errors import FailedPrecondition

_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_HEADER_SIZE = _LENGTH.size + _CRC.size
_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: crc32c rotated right by 15 bits plus a constant (``crc32c::Mask``).

    Masking keeps a record's CRC from being a valid CRC of data that itself embeds CRCs.
    """
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def read_records(path: Path) -> Iterator[bytes]:
    """Yield the data of each record of the TFRecord file ``path``, in order, checksums verified.

    Raises ``FailedPrecondition`` naming the file and the record index when a record is truncated or a
    checksum does not match; ``OSError`` when the file cannot be opened.
    """
    with path.open("rb") as stream:
        index = 0
        while True:
            data = _read_record(stream, path, index)
            if data is None:
                return
            yield data
            index += 1


def _read_record(stream: BinaryIO, path: Path, index: int) -> bytes | None:
    """One record's data; None at a clean end of file (no byte of a next record)."""
    header = stream.read(_HEADER_SIZE)
    if not header:
        return None
    if len(header) < _HEADER_SIZE:
        raise _corrupt(path, index, f"truncated header ({len(header)} of {_HEADER_SIZE} bytes)")
    length_bytes = header[: _LENGTH.size]
    (length_crc,) = _CRC.unpack_from(header, _LENGTH.size)
    if masked_crc32c(length_bytes) != length_crc:
        raise _corrupt(path, index, "length checksum mismatch")
    (length,) = _LENGTH.unpack(length_bytes)
    body = stream.read(length + _CRC.size)
    if len(body) < length + _CRC.size:
        raise _corrupt(path, index, f"truncated data ({len(body)} of {length + _CRC.size} bytes)")
    data = body[:length]
    (data_crc,) = _CRC.unpack_from(body, length)
    if masked_crc32c(data) != data_crc:
        raise _corrupt(path, index, "data checksum mismatch")
    return data


def _corrupt(path: Path, index: int, what: str) -> FailedPrecondition:
    return FailedPrecondition(f"corrupt TFRecord file {path}: record {index}: {what}")


def encode_record(data: bytes) -> bytes:
    """One record's bytes in the TFRecord framing."""
    length = _LENGTH.pack(len(data))
    return length + _CRC.pack(masked_crc32c(length)) + data + _CRC.pack(masked_crc32c(data))


def write_records(path: Path, records: Iterable[bytes]) -> int:
    """Write ``records`` to a new TFRecord file at ``path`` (replacing it); returns how many were written.

    The file is what ``tf.io.TFRecordWriter`` writes, so TensorFlow reads it back and vice versa.
    """
    count = 0
    with path.open("wb") as stream:
        for data in records:
            stream.write(encode_record(data))
            count += 1
    return count
