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
from collections.abc import Iterable
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
        self._tmp.mkdir(parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix="upload-")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise BlobTooLarge(max_bytes)
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            sha256 = digest.hexdigest()
            final = self.path(sha256)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)  # same bytes already there: replacing it changes nothing
            _fsync_dir(final.parent)
            return BlobRef(sha256, size, final)
        finally:
            tmp.unlink(missing_ok=True)

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


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
