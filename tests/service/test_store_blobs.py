"""Blob store: content addressing, atomic writes, size limits."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from store.blobs import BlobNotFound, BlobStore, BlobTooLarge


def test_same_bytes_same_blob(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    data = b"x" * 3000
    first = blobs.write_stream([data[:1000], data[1000:]])
    second = blobs.write_stream([data])
    assert first == second
    assert first.sha256 == hashlib.sha256(data).hexdigest() and first.size == 3000
    assert blobs.path(first.sha256) == tmp_path / "blobs" / first.sha256[:2] / first.sha256[2:4] / first.sha256
    with blobs.open(first.sha256) as f:
        assert f.read() == data
    assert list((tmp_path / "blobs" / ".tmp").iterdir()) == []


def test_too_large_keeps_nothing(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    with pytest.raises(BlobTooLarge):
        blobs.write_stream([b"a" * 10, b"b" * 10], max_bytes=15)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    assert blobs.write_stream([b"a" * 15], max_bytes=15).size == 15


def test_failed_stream_leaves_no_partial_blob(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)

    def broken() -> Iterator[bytes]:
        yield b"partial"
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        blobs.write_stream(broken())
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_write_file_delete_and_missing(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "b")
    source = tmp_path / "src.bin"
    source.write_bytes(b"\x00\x01" * 1_000_000)
    ref = blobs.write_file(source)
    assert blobs.exists(ref.sha256) and ref.size == 2_000_000
    assert blobs.delete(ref.sha256) and not blobs.exists(ref.sha256)
    assert not blobs.delete(ref.sha256)
    with pytest.raises(BlobNotFound):
        blobs.open(ref.sha256)
    with pytest.raises(ValueError):
        blobs.path("../../etc/passwd")
