"""Content-addressed blob storage: the interface every user goes through, and its local directory.

A blob's name is the sha256 of its bytes, so writing the same bytes twice stores them once and a
name always means the same content. `Blobs` is what api and worker use; `blob_store(settings)`
picks the implementation: this module's `BlobStore` (a local directory, the embedded default) or
`store.s3blobs.S3BlobStore` (`XMODAL_BLOB_URL=s3://…`, so hosts share no disk).

Local writes go to a temp file under the root, are fsynced, then renamed into place: readers never
see a partial blob, even if the writer dies. A writer killed mid-write leaves its temp file behind;
`remove_stale_temp_files` clears those at start-up.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

if TYPE_CHECKING:
    from store.settings import Settings

CHUNK_BYTES = 1024 * 1024
STALE_TEMP_SECONDS = 3600.0
"""A temp file nobody wrote to for this long belongs to a dead writer (a live one writes every chunk)."""
_SHA256 = re.compile(r"[0-9a-f]{64}")


def check_sha256(sha256: str) -> str:
    """A blob name is a sha256 hex digest and nothing else, so it can never name a path or key outside the store."""
    if not _SHA256.fullmatch(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return sha256


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


class Writer(Protocol):
    """A blob written piece by piece: hashed as it goes, stored under its sha256 on `commit`."""

    size: int

    def write(self, chunk: bytes) -> None: ...
    def commit(self, before_rename: Callable[[str], None] | None = None) -> BlobRef: ...
    def discard(self) -> None: ...
    def __enter__(self) -> Writer: ...
    def __exit__(self, *_: object) -> None: ...


class Blobs(Protocol):
    """What api and worker need of a blob store, whichever holds the bytes."""

    def exists(self, sha256: str) -> bool: ...
    def size(self, sha256: str) -> int: ...
    def read(self, sha256: str, start: int = 0, end: int | None = None) -> Iterator[bytes]: ...
    def fetch(self, sha256: str, dest: Path) -> Path: ...
    def writer(self, max_bytes: int | None = None) -> Writer: ...
    def write_stream(self, chunks: Iterable[bytes], max_bytes: int | None = None) -> BlobRef: ...
    def write_file(self, path: Path | str, max_bytes: int | None = None) -> BlobRef: ...
    def delete(self, sha256: str) -> bool: ...
    def remove_stale_temp_files(self, older_than: float = STALE_TEMP_SECONDS) -> int: ...
    @property
    def temp_location(self) -> str: ...


def blob_store(settings: Settings) -> Blobs:
    """The store the settings name: S3-compatible storage for `XMODAL_BLOB_URL=s3://…`, else the local directory."""
    if settings.blob_url:
        from store.s3blobs import s3_blob_store  # boto3 is imported only by deployments that use it

        return s3_blob_store(settings.blob_url, settings.s3_endpoint_url or None)
    return BlobStore(settings.blob_root)


class BlobStore:
    """Blobs in a local directory: the embedded default, and one host's (or one shared volume's) store."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._tmp = self.root / ".tmp"

    @property
    def temp_location(self) -> str:
        return str(self._tmp)

    def path(self, sha256: str) -> Path:
        """Where the blob lives (`root/ab/cd/<sha256>`), whether or not it exists."""
        check_sha256(sha256)
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def size(self, sha256: str) -> int:
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {sha256}") from None

    def read(self, sha256: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes `[start, end)` in chunks; the file opens at once, so a missing blob raises here."""
        source = self.open(sha256)
        return _chunks(source, start, end)

    def fetch(self, sha256: str, dest: Path) -> Path:
        """Give the blob the local file name `dest` a reader expects, without copying gigabytes: a symlink.

        A missing or unreadable blob is raised here, as the store's fault: reached through the link,
        a reader (core's dataset loader) would report it as the user's file being unreadable."""
        target = self.path(sha256).absolute()  # a relative target would resolve from the link's folder, not ours
        if not target.is_file():
            raise BlobNotFound(f"blob {sha256} is missing from the blob store")
        if not os.access(target, os.R_OK):
            raise PermissionError(f"blob {sha256} in the blob store is not readable by this process")
        dest.symlink_to(target)
        return dest

    def open(self, sha256: str) -> BinaryIO:
        try:
            return self.path(sha256).open("rb")
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {sha256}") from None

    def write_stream(self, chunks: Iterable[bytes], max_bytes: int | None = None) -> BlobRef:
        """Store the concatenated chunks, hashing as they arrive; raises BlobTooLarge past max_bytes."""
        return stream_into(self.writer(max_bytes), chunks)

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


def stream_into(writer: Writer, chunks: Iterable[bytes]) -> BlobRef:
    """Write every chunk and commit; an exception on the way discards the partial blob."""
    with writer:
        for chunk in chunks:
            writer.write(chunk)
        return writer.commit()


class Tally:
    """A blob's running sha256 and size, and its limit: what every writer counts before it stores a chunk."""

    def __init__(self, max_bytes: int | None) -> None:
        self._max_bytes = max_bytes
        self._digest = hashlib.sha256()
        self.size = 0

    def add(self, chunk: bytes) -> None:
        """Count `chunk`; raises BlobTooLarge once the bytes pass `max_bytes` (the chunk is not hashed)."""
        self.size += len(chunk)
        if self._max_bytes is not None and self.size > self._max_bytes:
            raise BlobTooLarge(self._max_bytes)
        self._digest.update(chunk)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()


class BlobWriter:
    """A temp file under the root, hashed as it is written. `commit` renames it into place;
    `discard` (also on leaving a `with` block uncommitted) removes it, so an abandoned write leaves
    nothing behind."""

    def __init__(self, blobs: BlobStore, max_bytes: int | None) -> None:
        self._blobs = blobs
        self._tally = Tally(max_bytes)
        fd, tmp_name = tempfile.mkstemp(dir=blobs._tmp, prefix="upload-")
        self._tmp: Path | None = Path(tmp_name)  # None once committed or discarded
        self._out: BinaryIO = os.fdopen(fd, "wb")

    @property
    def size(self) -> int:
        return self._tally.size

    def write(self, chunk: bytes) -> None:
        """Append `chunk`; raises BlobTooLarge (and discards) once the bytes pass `max_bytes`."""
        try:
            self._tally.add(chunk)
        except BlobTooLarge:
            self.discard()
            raise
        self._out.write(chunk)

    def commit(self, before_rename: Callable[[str], None] | None = None) -> BlobRef:
        """Make the bytes durable and move them to their content address. `before_rename(sha256)`
        runs first, so what it records (an upload's reservation) precedes the blob's appearance."""
        assert self._tmp is not None, "commit after commit or discard"
        try:
            self._out.flush()
            os.fsync(self._out.fileno())
            self._out.close()
            final = self._blobs.path(self._tally.sha256)
            if before_rename is not None:
                before_rename(final.name)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._tmp, final)  # same bytes already there: replacing it changes nothing
            self._tmp = None  # its name is free for another writer now: never unlink it
            _fsync_dir(final.parent)
            return BlobRef(final.name, self.size)
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


def _chunks(source: BinaryIO, start: int, end: int | None) -> Iterator[bytes]:
    with source:
        source.seek(start)
        remaining = None if end is None else end - start
        while remaining is None or remaining > 0:
            chunk = source.read(CHUNK_BYTES if remaining is None else min(CHUNK_BYTES, remaining))
            if not chunk:
                return
            if remaining is not None:
                remaining -= len(chunk)
            yield chunk


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
