"""Content-addressed blob storage on a local (or shared) directory.

A blob's name is the sha256 of its bytes, so writing the same bytes twice stores them once and a
name always means the same content. Writes go to a temp file under the root, are fsynced, then
renamed into place: readers never see a partial blob, even if the writer dies. A writer killed
mid-write leaves its temp file behind; `remove_stale_temp_files` clears those at start-up.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

CHUNK_BYTES = 1024 * 1024
STALE_TEMP_SECONDS = 3600.0
"""A temp file nobody wrote to for this long belongs to a dead writer (a live one writes every chunk)."""
_SHA256 = re.compile(r"[0-9a-f]{64}")


class BlobTooLarge(Exception):
    """The stream went past `max_bytes`; nothing was kept."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"blob exceeds the limit of {max_bytes} bytes")
        self.max_bytes = max_bytes


class BlobNotFound(FileNotFoundError):
    pass


@dataclass(frozen=True)
class BlobRef:
    sha256: str
    size: int
    path: Path


class BlobStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._tmp = self.root / ".tmp"

    def path(self, sha256: str) -> Path:
        """Where the blob lives (`root/ab/cd/<sha256>`), whether or not it exists."""
        if not _SHA256.fullmatch(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def open(self, sha256: str) -> BinaryIO:
        try:
            return self.path(sha256).open("rb")
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {sha256}") from None

    def write_stream(self, chunks: Iterable[bytes], max_bytes: int | None = None) -> BlobRef:
        """Store the concatenated chunks, hashing as they arrive; raises BlobTooLarge past max_bytes."""
        with self.writer(max_bytes) as writer:
            for chunk in chunks:
                writer.write(chunk)
            return writer.commit()

    def writer(self, max_bytes: int | None = None) -> BlobWriter:
        """A blob written piece by piece, for a caller that gets its bytes in separate calls (an
        upload read on the event loop, written on a thread a batch at a time)."""
        self._tmp.mkdir(parents=True, exist_ok=True)
        return BlobWriter(self, max_bytes)

    def write_file(self, path: Path | str, max_bytes: int | None = None) -> BlobRef:
        """Store a local file's bytes (the worker's checkpoint tars)."""
        with Path(path).open("rb") as src:
            return self.write_stream(iter(lambda: src.read(CHUNK_BYTES), b""), max_bytes)

    def remove_stale_temp_files(self, older_than: float = STALE_TEMP_SECONDS) -> int:
        """Delete temp files not written to for `older_than` seconds: what writers killed mid-write
        left. Judged by age, not by owner: API processes and workers, on this host or others sharing
        the volume, write here at the same time, and a pid means nothing across hosts. Returns the count."""
        cutoff = time.time() - older_than
        removed = 0
        try:
            entries = list(os.scandir(self._tmp))
        except FileNotFoundError:
            return 0
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:  # its writer renamed or removed it meanwhile
                continue
        return removed

    def delete(self, sha256: str) -> bool:
        """Remove a blob. Rows may share a blob (same bytes), so callers delete only unreferenced ones."""
        try:
            self.path(sha256).unlink()
            return True
        except FileNotFoundError:
            return False


class BlobWriter:
    """A temp file under the root, hashed as it is written. `commit` renames it into place;
    `discard` (also on leaving a `with` block uncommitted) removes it, so an abandoned write leaves
    nothing behind."""

    def __init__(self, blobs: BlobStore, max_bytes: int | None) -> None:
        self._blobs, self._max_bytes = blobs, max_bytes
        self._digest = hashlib.sha256()
        self.size = 0
        fd, tmp_name = tempfile.mkstemp(dir=blobs._tmp, prefix="upload-")
        self._tmp: Path | None = Path(tmp_name)  # None once committed or discarded
        self._out: BinaryIO = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        """Append `chunk`; raises BlobTooLarge (and discards) once the bytes pass `max_bytes`."""
        self.size += len(chunk)
        if self._max_bytes is not None and self.size > self._max_bytes:
            self.discard()
            raise BlobTooLarge(self._max_bytes)
        self._digest.update(chunk)
        self._out.write(chunk)

    def commit(self, before_rename: Callable[[str], None] | None = None) -> BlobRef:
        """Make the bytes durable and move them to their content address. `before_rename(sha256)`
        runs first, so what it records (an upload's reservation) precedes the blob's appearance."""
        assert self._tmp is not None, "commit after commit or discard"
        try:
            self._out.flush()
            os.fsync(self._out.fileno())
            self._out.close()
            final = self._blobs.path(self._digest.hexdigest())
            if before_rename is not None:
                before_rename(final.name)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._tmp, final)  # same bytes already there: replacing it changes nothing
            self._tmp = None  # its name is free for another writer now: never unlink it
            _fsync_dir(final.parent)
            return BlobRef(final.name, self.size, final)
        finally:
            self.discard()

    def discard(self) -> None:
        """Drop the temp file (a no-op once committed or discarded)."""
        self._out.close()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *_: object) -> None:
        self.discard()


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
