"""Blobs in S3-compatible object storage (AWS S3, MinIO, …): `XMODAL_BLOB_URL=s3://bucket/prefix`.

Through boto3: AWS's own, maintained client; it reads the standard credential chain (AWS_ACCESS_KEY_ID
/ AWS_SECRET_ACCESS_KEY, profiles, instance roles), honours AWS_ENDPOINT_URL and AWS_DEFAULT_REGION,
and its managed transfers do multipart uploads, downloads and server-side copies in parallel parts.
An S3-compatible server only needs its endpoint (`XMODAL_S3_ENDPOINT_URL`).

Keys: `<prefix>/<sha256>` for blobs, `<prefix>/.tmp/upload-<start ms>-<uuid>` for writes in progress. A
streamed write does not know its name until its last byte, so it goes up as a multipart upload to a
temp key, part by part as the bytes arrive, two parts on their way while the next fills (nothing whole
in memory or on local disk), and on commit
is copied server-side to its content address and the temp key deleted. S3 shows an object only
once complete, so a reader never sees a partial blob. A writer killed mid-write leaves an unfinished
multipart upload (or a temp object); `remove_stale_temp_files` aborts and deletes those. The start
time in the temp key is the writer's own clock: some servers' upload listings carry no real
`Initiated` (moto answers 2010 for every upload), and a write whose first part is still on its way has
no part listed yet, so without it a live write could look abandoned.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from store.blobs import (CHUNK_BYTES, STALE_TEMP_SECONDS, BlobNotFound, BlobRef, BlobTooLarge, Tally, check_sha256,
                         stream_into)

PART_BYTES = 8 * 1024 * 1024
"""One multipart part (S3 takes 5 MiB at least, except the last)."""
PARTS_IN_FLIGHT = 2
"""Parts a streamed write sends at once while the next one fills, each on a thread of its own: sending
overlaps receiving and hashing. Into SeaweedFS on one 2-core machine, a 1 GiB upload went from 58 to
81 MiB/s (bench/results/upload_s3_seaweedfs*.md); boto3 alone sent 8 MiB parts at 99 MiB/s one by one
and 142 MiB/s four at once (a scratch measurement).
A write holds at most this many parts in memory, plus the one filling."""
TRANSFER = TransferConfig(multipart_threshold=PART_BYTES, multipart_chunksize=PART_BYTES, max_concurrency=4)
DOWNLOAD = TransferConfig(multipart_threshold=64 * 1024 * 1024, multipart_chunksize=64 * 1024 * 1024,
                          max_concurrency=4)
"""Fewer, larger ranged GETs: each range is streamed to the file, so a bigger one costs no memory."""
COPY_OBJECT_MAX = 5 * 1024**3
"""S3's limit for one server-side CopyObject; larger blobs are copied as a multipart copy."""
_MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchUpload"}
_TEMP_NAME = re.compile(r"upload-(\d+)-[0-9a-f]{32}$")


@lru_cache(maxsize=8)
def s3_blob_store(url: str, endpoint_url: str | None) -> S3BlobStore:
    """One store (and one thread-safe client, with its connection pool) per process and URL. An
    S3-compatible server gets path-style URLs (`endpoint/bucket/key`: MinIO needs no DNS per bucket)."""
    style = "path" if endpoint_url else "auto"
    client = boto3.session.Session().client(
        "s3", endpoint_url=endpoint_url,
        config=Config(retries={"mode": "standard"}, max_pool_connections=32, s3={"addressing_style": style}))
    return S3BlobStore(client, url)


class S3BlobStore:
    """The `store.blobs.Blobs` interface on one bucket and key prefix."""

    def __init__(self, client: Any, url: str) -> None:
        parts = urlsplit(url)
        self.client, self.bucket = client, parts.netloc
        prefix = parts.path.strip("/")
        self._prefix = f"{prefix}/" if prefix else ""
        self._tmp = f"{self._prefix}.tmp/"

    @property
    def temp_location(self) -> str:
        return f"s3://{self.bucket}/{self._tmp}"

    def key(self, sha256: str) -> str:
        return self._prefix + check_sha256(sha256)

    def exists(self, sha256: str) -> bool:
        try:
            self.size(sha256)
            return True
        except BlobNotFound:
            return False

    def size(self, sha256: str) -> int:
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=self.key(sha256))["ContentLength"])
        except ClientError as exc:
            raise _not_found(exc, sha256) from None

    def read(self, sha256: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes `[start, end)` by one ranged GET, streamed; the request goes out at once, so a
        missing blob raises here, before a caller has sent any header."""
        key = self.key(sha256)
        if end is not None and end <= start:
            return iter(())
        span = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key, Range=span)["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":  # start at the very end: nothing
                return iter(())
            raise _not_found(exc, sha256) from None
        return _drain(body)

    def fetch(self, sha256: str, dest: Path) -> Path:
        """Download the blob to the local file `dest` (parallel ranged GETs): readers such as core's
        dataset loader and tar extraction need a seekable local file."""
        try:
            self.client.download_file(self.bucket, self.key(sha256), str(dest), Config=DOWNLOAD)
        except ClientError as exc:
            dest.unlink(missing_ok=True)
            raise _not_found(exc, sha256, "is missing from the blob store") from None
        return dest

    def writer(self, max_bytes: int | None = None) -> S3BlobWriter:
        return S3BlobWriter(self, max_bytes)

    def write_stream(self, chunks: Iterable[bytes], max_bytes: int | None = None) -> BlobRef:
        return stream_into(self.writer(max_bytes), chunks)

    def write_file(self, path: Path | str, max_bytes: int | None = None) -> BlobRef:
        """A local file (a checkpoint tar) is hashed first, then uploaded straight to its content
        address in parallel parts: no temp key, no copy. A PUT appears whole or not at all."""
        tally = Tally(max_bytes)
        with Path(path).open("rb") as src:
            for chunk in iter(lambda: src.read(CHUNK_BYTES), b""):
                tally.add(chunk)
        if not self.exists(tally.sha256):
            self.client.upload_file(str(path), self.bucket, self.key(tally.sha256), Config=TRANSFER)
        return BlobRef(tally.sha256, tally.size)

    def delete(self, sha256: str) -> bool:
        """Remove a blob. Rows may share a blob (same bytes), so callers delete only unreferenced ones."""
        if not self.exists(sha256):
            return False
        self.client.delete_object(Bucket=self.bucket, Key=self.key(sha256))
        return True

    def remove_stale_temp_files(self, older_than: float = STALE_TEMP_SECONDS) -> int:
        """Abort multipart uploads with no part written for `older_than` seconds, and delete temp
        objects that old: what writers killed mid-write left (judged by age, as any host may be writing)."""
        cutoff = time.time() - older_than
        removed = 0
        for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=self._tmp):
            for upload in page.get("Uploads", []):
                started = max(_started_at(upload["Key"]), _timestamp(upload["Initiated"]))
                if started < cutoff and self._last_part_at(upload) < cutoff:
                    self._abort(upload["Key"], upload["UploadId"])
                    removed += 1
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._tmp):
            for item in page.get("Contents", []):
                if _timestamp(item["LastModified"]) < cutoff:
                    self.client.delete_object(Bucket=self.bucket, Key=item["Key"])
                    removed += 1
        return removed

    def _last_part_at(self, upload: dict[str, Any]) -> float:
        parts = self.client.list_parts(Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        times = [_timestamp(part["LastModified"]) for part in parts.get("Parts", [])]
        return max(times, default=0.0)

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except ClientError as exc:
            if _code(exc) not in _MISSING:  # another host's sweep (or the writer) got there first
                raise


class S3BlobWriter:
    """A multipart upload to a temp key, hashed as it is written, `PARTS_IN_FLIGHT` parts on their way
    while the next fills. `commit` completes it and copies it to its content address; `discard` (also
    on leaving a `with` block uncommitted) aborts it, so an abandoned write leaves nothing behind."""

    def __init__(self, blobs: S3BlobStore, max_bytes: int | None) -> None:
        self._blobs, self._client, self._bucket = blobs, blobs.client, blobs.bucket
        self._tally = Tally(max_bytes)
        self._key = f"{blobs._tmp}upload-{time.time_ns() // 1_000_000}-{uuid.uuid4().hex}"
        self._buffer = bytearray()
        self._upload_id: str | None = None  # the multipart upload, once the first full part went up
        self._parts: list[dict[str, Any]] = []  # sent: number and ETag, in order
        self._sending: deque[tuple[int, Future[dict[str, Any]]]] = deque()  # on their way, oldest first
        self._senders: ThreadPoolExecutor | None = None
        self._done = False  # committed or discarded
        self._temp_object = False  # the temp key holds a complete object that commit has not yet removed

    @property
    def size(self) -> int:
        return self._tally.size

    def write(self, chunk: bytes) -> None:
        """Append `chunk`, sending a part whenever one is full; raises BlobTooLarge (and discards) past `max_bytes`."""
        assert not self._done, "write after commit or discard"
        try:
            self._tally.add(chunk)
        except BlobTooLarge:
            self.discard()
            raise
        self._buffer += chunk
        while len(self._buffer) >= PART_BYTES:
            self._send_part(memoryview(self._buffer)[:PART_BYTES].tobytes())
            del self._buffer[:PART_BYTES]

    def commit(self, before_rename: Callable[[str], None] | None = None) -> BlobRef:
        """Finish the temp object, then copy it to its content address. `before_rename(sha256)` runs
        first, so what it records (an upload's reservation) precedes the blob's appearance."""
        assert not self._done, "commit after commit or discard"
        try:
            self._finish_temp_object()
            sha256 = self._tally.sha256
            if before_rename is not None:
                before_rename(sha256)
            final = self._blobs.key(sha256)
            if not self._blobs.exists(sha256):  # same bytes already there: copying them changes nothing
                self._copy_to(final)
            return BlobRef(sha256, self.size)
        finally:
            self.discard()

    def discard(self) -> None:
        """Abort the multipart upload or delete the temp object (a no-op once done)."""
        if self._done:
            return
        self._done = True
        self._buffer = bytearray()
        self._stop_sending()
        if self._temp_object:
            self._client.delete_object(Bucket=self._bucket, Key=self._key)
        elif self._upload_id is not None:
            self._blobs._abort(self._key, self._upload_id)

    def _copy_to(self, final: str) -> None:
        """Server-side: one CopyObject (one request, atomic) up to its 5 GiB limit, else a multipart copy."""
        source = {"Bucket": self._bucket, "Key": self._key}
        if self.size <= COPY_OBJECT_MAX:
            self._client.copy_object(CopySource=source, Bucket=self._bucket, Key=final)
        else:
            self._client.copy(source, self._bucket, final, Config=TRANSFER)

    def _send_part(self, data: bytes) -> None:
        """Start sending `data` as the next part, once fewer than PARTS_IN_FLIGHT are on their way; a
        part that failed raises here (or at commit), and the write is discarded by its caller."""
        if self._upload_id is None:
            self._upload_id = self._client.create_multipart_upload(Bucket=self._bucket, Key=self._key)["UploadId"]
            self._senders = ThreadPoolExecutor(PARTS_IN_FLIGHT, thread_name_prefix="xmodal-s3-part")
        assert self._senders is not None
        self._collect(keep=PARTS_IN_FLIGHT - 1)
        number = len(self._parts) + len(self._sending) + 1
        self._sending.append((number, self._senders.submit(
            self._client.upload_part, Bucket=self._bucket, Key=self._key, UploadId=self._upload_id,
            PartNumber=number, Body=data)))

    def _collect(self, keep: int) -> None:
        """Wait for the oldest parts on their way until at most `keep` are."""
        while len(self._sending) > keep:
            number, sent = self._sending.popleft()
            self._parts.append({"PartNumber": number, "ETag": sent.result()["ETag"]})

    def _stop_sending(self) -> None:
        """Drop parts not yet started and wait for the ones being sent, so an abort that follows frees
        them all (S3 may keep a part that finishes after its upload's abort)."""
        for _, sent in self._sending:
            sent.cancel()
        self._sending.clear()
        if self._senders is not None:
            self._senders.shutdown(wait=True)
            self._senders = None

    def _finish_temp_object(self) -> None:
        """A small blob is one PUT; a large one sends its last part and completes the upload."""
        if self._upload_id is None:
            self._client.put_object(Bucket=self._bucket, Key=self._key, Body=bytes(self._buffer))
        else:
            if self._buffer:
                self._send_part(bytes(self._buffer))
            self._collect(keep=0)
            self._client.complete_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id,
                                                   MultipartUpload={"Parts": self._parts})
        self._temp_object = True
        self._buffer = bytearray()

    def __enter__(self) -> S3BlobWriter:
        return self

    def __exit__(self, *_: object) -> None:
        self.discard()


def _drain(body: Any) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(CHUNK_BYTES)
    finally:
        body.close()


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _not_found(exc: ClientError, sha256: str, what: str = "") -> Exception:
    """A missing key is BlobNotFound; any other failure (credentials, network) stays what it was."""
    if _code(exc) in _MISSING:
        return BlobNotFound(f"blob {sha256} {what}".rstrip() if what else f"no blob {sha256}")
    return exc


def _timestamp(value: datetime) -> float:
    return value.timestamp()


def _started_at(key: str) -> float:
    """When the writer of temp `key` started, by its own clock (0 for a name without one)."""
    match = _TEMP_NAME.search(key)
    return int(match.group(1)) / 1000 if match else 0.0
