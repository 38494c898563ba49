"""TFRecord framing: round trip, TensorFlow's own reader and writer, and corrupt or truncated files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelserve.codecs.tfrecord import encode_record, masked_crc32c, read_records, write_records
from modelserve.errors import FailedPrecondition

RECORDS = [b"first", b"", b"\x00\xff" * 1000, b"last"]


@pytest.fixture(scope="module")
def tf() -> Any:
    return pytest.importorskip("tensorflow")


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "records"
    assert write_records(path, iter(RECORDS)) == len(RECORDS)
    assert list(read_records(path)) == RECORDS
    assert path.stat().st_size == sum(len(r) + 16 for r in RECORDS)


def test_empty_file_has_no_records(tmp_path: Path) -> None:
    path = tmp_path / "records"
    write_records(path, [])
    assert path.read_bytes() == b""
    assert list(read_records(path)) == []


def test_masked_crc32c_is_tensorflows() -> None:
    # crc32c("123456789") = 0xE3069283 (the standard check value), masked as crc32c::Mask does.
    crc = 0xE3069283
    assert masked_crc32c(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


@pytest.mark.tensorflow
def test_tensorflow_reads_ours_and_we_read_tensorflows(tf: Any, tmp_path: Path) -> None:
    ours = tmp_path / "ours"
    write_records(ours, RECORDS)
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(ours))] == RECORDS
    theirs = tmp_path / "theirs"
    with tf.io.TFRecordWriter(str(theirs)) as writer:
        for record in RECORDS:
            writer.write(record)
    assert theirs.read_bytes() == ours.read_bytes()
    assert list(read_records(theirs)) == RECORDS


@pytest.mark.parametrize(
    ("offset", "error"),
    [
        (3, "record 1: length checksum mismatch"),  # a length byte
        (9, "record 1: length checksum mismatch"),  # the length's checksum
        (14, "record 1: data checksum mismatch"),  # a data byte
        (len(b"second") + 13, "record 1: data checksum mismatch"),  # the data's checksum
    ],
)
def test_a_flipped_bit_names_the_file_and_the_record(tmp_path: Path, offset: int, error: str) -> None:
    path = tmp_path / "records"
    first = encode_record(b"first")
    data = bytearray(first + encode_record(b"second") + encode_record(b"third"))
    data[len(first) + offset] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(FailedPrecondition) as info:
        list(read_records(path))
    assert info.value.message == f"corrupt TFRecord file {path}: {error}"


@pytest.mark.parametrize(
    ("keep", "error"),
    [
        (5, "record 1: truncated header (5 of 12 bytes)"),
        (12, "record 1: truncated data (0 of 10 bytes)"),
        (20, "record 1: truncated data (8 of 10 bytes)"),
    ],
)
def test_a_truncated_file_names_the_file_and_the_record(tmp_path: Path, keep: int, error: str) -> None:
    path = tmp_path / "records"
    first = encode_record(b"first")
    path.write_bytes(first + encode_record(b"second")[:keep])
    records = read_records(path)
    assert next(records) == b"first"  # records before the damage are still read
    with pytest.raises(FailedPrecondition) as info:
        next(records)
    assert info.value.message == f"corrupt TFRecord file {path}: {error}"
