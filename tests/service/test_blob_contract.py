"""The blob-store contract, run on both implementations: the local directory and S3-compatible
storage (a real moto server, tests/service/s3_server.py). api and worker see only `store.blobs.Blobs`,
so whatever one store does the other must do too."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from store.blobs import BlobNotFound, Blobs, BlobStore, BlobTooLarge
from store.s3blobs import PART_BYTES
from tests.service.s3_server import s3_endpoint, s3_url  # noqa: F401  (fixtures)

BIG = bytes(range(256)) * ((2 * PART_BYTES + 12345) // 256)
"""Past two parts: the S3 store sends it as a multipart upload with a short last part."""


@pytest.fixture(params=["local", "s3"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Blobs:
    if request.param == "local":
        return BlobStore(tmp_path / "blobs")
    from store.s3blobs import s3_blob_store

    return s3_blob_store(request.getfixturevalue("s3_url"), request.getfixturevalue("s3_endpoint"))


def temp_entries(blobs: Blobs) -> list[str]:
    """What writes in progress (or abandoned) hold: temp files, or temp keys and multipart uploads."""
    if isinstance(blobs, BlobStore):
        tmp = blobs.root / ".tmp"
        return [entry.name for entry in tmp.iterdir()] if tmp.exists() else []
    client, bucket, prefix = blobs.client, blobs.bucket, blobs._tmp
    keys = [item["Key"] for item in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    uploads = [item["Key"] for item in client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])]
    return keys + uploads


def test_write_stream_is_content_addressed_and_reads_back(blobs: Blobs) -> None:
    first = blobs.write_stream([BIG[:1000], BIG[1000:]])
    second = blobs.write_stream([BIG])
    assert first == second and first.sha256 == hashlib.sha256(BIG).hexdigest() and first.size == len(BIG)
    assert blobs.exists(first.sha256) and blobs.size(first.sha256) == len(BIG)
    assert b"".join(blobs.read(first.sha256)) == BIG
    assert temp_entries(blobs) == []


def test_small_and_empty_blobs(blobs: Blobs) -> None:
    for data in (b"", b"tiny"):
        ref = blobs.write_stream([data])
        assert b"".join(blobs.read(ref.sha256)) == data and blobs.size(ref.sha256) == len(data)


def test_ranges(blobs: Blobs) -> None:
    sha256 = blobs.write_stream([BIG]).sha256
    size = len(BIG)
    for start, end in [(0, 1), (5, 100), (PART_BYTES - 3, PART_BYTES + 7), (size - 10, size), (size, size)]:
        assert b"".join(blobs.read(sha256, start, end)) == BIG[start:end], (start, end)
    assert b"".join(blobs.read(sha256, size - 10)) == BIG[-10:]


def test_fetch_gives_a_local_file(blobs: Blobs, tmp_path: Path) -> None:
    sha256 = blobs.write_stream([BIG]).sha256
    dest = blobs.fetch(sha256, tmp_path / "train.npz")
    assert dest == tmp_path / "train.npz" and dest.read_bytes() == BIG


def test_missing_blob(blobs: Blobs, tmp_path: Path) -> None:
    sha256 = hashlib.sha256(b"never stored").hexdigest()
    assert not blobs.exists(sha256) and not blobs.delete(sha256)
    with pytest.raises(BlobNotFound):
        blobs.size(sha256)
    with pytest.raises(BlobNotFound):
        blobs.read(sha256)  # raised when asked, before a caller sends a header
    with pytest.raises(BlobNotFound, match="missing from the blob store"):
        blobs.fetch(sha256, tmp_path / "x")
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError):
        blobs.exists("../../etc/passwd")


def test_delete(blobs: Blobs) -> None:
    sha256 = blobs.write_stream([b"to delete"]).sha256
    assert blobs.delete(sha256) and not blobs.exists(sha256) and not blobs.delete(sha256)


def test_too_large_keeps_nothing(blobs: Blobs) -> None:
    with pytest.raises(BlobTooLarge):
        blobs.write_stream([BIG[:PART_BYTES], BIG[PART_BYTES:]], max_bytes=PART_BYTES + 10)
    assert temp_entries(blobs) == [] and not blobs.exists(hashlib.sha256(BIG).hexdigest())
    assert blobs.write_stream([b"a" * 15], max_bytes=15).size == 15


def test_failed_stream_leaves_nothing(blobs: Blobs) -> None:
    def broken() -> Iterator[bytes]:
        yield BIG  # two parts already sent to S3
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        blobs.write_stream(broken())
    assert temp_entries(blobs) == [] and not blobs.exists(hashlib.sha256(BIG).hexdigest())


def test_writer_commit_runs_the_hook_before_the_blob_appears(blobs: Blobs) -> None:
    seen: list[tuple[str, bool]] = []
    with blobs.writer() as writer:
        writer.write(BIG)
        assert writer.size == len(BIG)
        ref = writer.commit(lambda sha256: seen.append((sha256, blobs.exists(sha256))))
    assert seen == [(ref.sha256, False)] and blobs.exists(ref.sha256) and temp_entries(blobs) == []


def test_write_file(blobs: Blobs, tmp_path: Path) -> None:
    source = tmp_path / "checkpoint.tar"
    source.write_bytes(BIG)
    ref = blobs.write_file(source)
    assert ref.sha256 == hashlib.sha256(BIG).hexdigest() and ref.size == len(BIG)
    assert b"".join(blobs.read(ref.sha256)) == BIG and temp_entries(blobs) == []
    with pytest.raises(BlobTooLarge):
        blobs.write_file(source, max_bytes=len(BIG) - 1)


def test_stale_temp_files_are_removed_and_live_ones_kept(blobs: Blobs) -> None:
    """A writer killed mid-write leaves its temp behind; a sweep removes it once it is old, never sooner."""
    abandoned = blobs.writer()
    abandoned.write(BIG)  # never committed nor discarded: its process "died"
    assert temp_entries(blobs) != []
    assert blobs.remove_stale_temp_files(older_than=3600) == 0 and temp_entries(blobs) != []
    if isinstance(blobs, BlobStore):  # age the temp file; S3's clock cannot be moved, so sweep "now"
        for entry in (blobs.root / ".tmp").iterdir():
            os.utime(entry, (time.time() - 7200, time.time() - 7200))
        older_than = 3600.0
    else:
        time.sleep(1.1)  # S3 timestamps have one-second resolution
        older_than = 0.5
    assert blobs.remove_stale_temp_files(older_than=older_than) == 1
    assert temp_entries(blobs) == []


def test_s3_copies_past_the_copy_object_limit_in_parts(s3_url: str, s3_endpoint: str,  # noqa: F811
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Blobs over S3's 5 GiB CopyObject limit take the multipart copy; made to here with a tiny limit."""
    import store.s3blobs as s3blobs

    monkeypatch.setattr(s3blobs, "COPY_OBJECT_MAX", PART_BYTES)
    blobs = s3blobs.s3_blob_store(s3_url, s3_endpoint)
    ref = blobs.write_stream([BIG])
    assert b"".join(blobs.read(ref.sha256)) == BIG and temp_entries(blobs) == []


def test_settings_pick_the_store(s3_url: str, s3_endpoint: str, tmp_path: Path,  # noqa: F811
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from store.blobs import blob_store
    from store.s3blobs import S3BlobStore
    from store.settings import Settings, SettingsError, load_settings

    assert isinstance(blob_store(Settings(data_dir=tmp_path)), BlobStore)
    on_s3 = blob_store(Settings(data_dir=tmp_path, blob_url=s3_url, s3_endpoint_url=s3_endpoint))
    prefix = s3_url.removeprefix("s3://").split("/", 1)[1]
    assert isinstance(on_s3, S3BlobStore) and on_s3.key("a" * 64) == f"{prefix}/{'a' * 64}"
    for bad in ("/var/blobs", "s3://", "s3://Upper_Case/x", "gs://bucket"):
        monkeypatch.setenv("XMODAL_BLOB_URL", bad)
        with pytest.raises(SettingsError, match="XMODAL_BLOB_URL: expected s3://bucket"):
            load_settings()


class SlowParts:
    """A store's S3 client whose parts each take `seconds` more, counting how many are on their way at
    once; `fail_part` raises for that part number instead (a dropped connection)."""

    def __init__(self, client: object, seconds: float, fail_part: int | None = None) -> None:
        self._client, self.seconds, self.fail_part = client, seconds, fail_part
        self._lock = threading.Lock()
        self.sending = self.most_at_once = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._client, name)

    def upload_part(self, **request: object) -> dict[str, object]:
        with self._lock:
            self.sending += 1
            self.most_at_once = max(self.most_at_once, self.sending)
        try:
            time.sleep(self.seconds)
            if request["PartNumber"] == self.fail_part:
                raise ConnectionError("connection reset while sending a part")
            return self._client.upload_part(**request)  # type: ignore[attr-defined, no-any-return]
        finally:
            with self._lock:
                self.sending -= 1


def chunks_of(data: bytes, size: int = 1 << 20) -> list[bytes]:
    return [data[start:start + size] for start in range(0, len(data), size)]


def test_s3_sends_parts_while_the_next_fills(s3_url: str, s3_endpoint: str) -> None:  # noqa: F811
    from store.s3blobs import PARTS_IN_FLIGHT, S3BlobStore, s3_blob_store

    slow = SlowParts(s3_blob_store(s3_url, s3_endpoint).client, seconds=0.3)
    blobs = S3BlobStore(slow, s3_url)
    data = os.urandom(4 * PART_BYTES + 4321)  # five parts
    ref = blobs.write_stream(chunks_of(data))
    assert slow.most_at_once == PARTS_IN_FLIGHT > 1
    assert b"".join(blobs.read(ref.sha256)) == data and temp_entries(blobs) == []


def test_s3_a_write_whose_first_part_is_on_its_way_is_not_stale(s3_url: str, s3_endpoint: str) -> None:  # noqa: F811
    """No part is listed while the first is being sent, and moto's uploads all say they began in 2010:
    the sweep must judge the write by the start time in its key, not abort it."""
    from store.s3blobs import S3BlobStore, s3_blob_store

    client = s3_blob_store(s3_url, s3_endpoint).client
    writer = S3BlobStore(SlowParts(client, seconds=2.0), s3_url).writer()
    writer.write(os.urandom(PART_BYTES + 1))  # the first part goes on its way; write returns at once
    sweeper = S3BlobStore(client, s3_url)
    assert sweeper.remove_stale_temp_files(older_than=60) == 0
    writer.discard()
    assert temp_entries(sweeper) == []


def test_s3_a_failed_part_fails_the_write_and_leaves_nothing(s3_url: str, s3_endpoint: str) -> None:  # noqa: F811
    from store.s3blobs import S3BlobStore, s3_blob_store

    slow = SlowParts(s3_blob_store(s3_url, s3_endpoint).client, seconds=0.1, fail_part=2)
    blobs = S3BlobStore(slow, s3_url)
    data = os.urandom(4 * PART_BYTES + 4321)
    with pytest.raises(ConnectionError):
        blobs.write_stream(chunks_of(data))
    assert slow.sending == 0  # no part still on its way after the write gave up
    assert temp_entries(blobs) == [] and not blobs.exists(hashlib.sha256(data).hexdigest())
