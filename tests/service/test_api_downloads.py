"""Checkpoint download: the tar blob with ETag = sha256, If-None-Match → 304, one Range → 206,
an unsatisfiable one → 416 with the error shape."""

from __future__ import annotations

import hashlib
import io
import tarfile

import pytest
from fastapi.testclient import TestClient

from api.downloads import parse_range
from api.errors import ApiError
from store.blobs import BlobStore
from store.db import session_scope
from store.repositories import checkpoints, files, jobs
from store.settings import Settings
from tests.service.api_fixtures import (
    assert_error,
    auth,
    client_fixture,  # noqa: F401 (registers the `client` fixture)
)
from tests.service.conftest import OwnerKey


def _tar_bytes() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        members = {"manifest.json": b'{"task": "classification"}', "model.safetensors": bytes(range(256)) * 40}
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


@pytest.fixture
def checkpoint_url(settings: Settings, owner_key: OwnerKey) -> tuple[str, bytes]:
    """A job with one checkpoint whose tar is in the blob store, inserted through the store."""
    content = _tar_bytes()
    blob = BlobStore(settings.blob_root).write_stream([content])
    with session_scope() as session:
        file = files.create(session, owner_id=owner_key.owner_id, filename="t.npz", purpose="fine-tune", bytes=1,
                            sha256="a" * 64, status="processed")
        job = jobs.create(session, owner_id=owner_key.owner_id, model="tiny-bert", method="orca",
                          config={"method": "orca"}, training_file_id=file.id)
        checkpoint = checkpoints.create(session, job.id, step=10, epoch=1, stage="refine", sha256=blob.sha256,
                                        bytes=blob.size, final=True)
        return f"/v1/fine_tuning/jobs/{job.id}/checkpoints/{checkpoint.id}/content", content


def test_full_download_has_etag_and_accept_ranges(client: TestClient, owner_key: OwnerKey,
                                                  checkpoint_url: tuple[str, bytes]) -> None:
    url, content = checkpoint_url
    response = client.get(url, headers=auth(owner_key.key))
    assert response.status_code == 200
    assert response.content == content
    assert response.headers["etag"] == f'"{hashlib.sha256(content).hexdigest()}"'
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["content-type"] == "application/x-tar"
    assert int(response.headers["content-length"]) == len(content)
    with tarfile.open(fileobj=io.BytesIO(response.content)) as tar:
        assert sorted(tar.getnames()) == ["manifest.json", "model.safetensors"]


def test_if_none_match_gives_304(client: TestClient, owner_key: OwnerKey, checkpoint_url: tuple[str, bytes]) -> None:
    url, content = checkpoint_url
    etag = f'"{hashlib.sha256(content).hexdigest()}"'
    for header in (etag, f'"other", W/{etag}', "*"):
        response = client.get(url, headers={**auth(owner_key.key), "If-None-Match": header})
        assert response.status_code == 304 and response.content == b"" and response.headers["etag"] == etag
    assert client.get(url, headers={**auth(owner_key.key), "If-None-Match": '"stale"'}).status_code == 200


@pytest.mark.parametrize(("header", "start", "end"), [
    ("bytes=0-99", 0, 100), ("bytes=100-", 100, None), ("bytes=-50", -50, None), ("bytes=5-5", 5, 6),
    ("bytes=10-99999999", 10, None),
])
def test_single_range_gives_206(client: TestClient, owner_key: OwnerKey, checkpoint_url: tuple[str, bytes],
                                header: str, start: int, end: int | None) -> None:
    url, content = checkpoint_url
    response = client.get(url, headers={**auth(owner_key.key), "Range": header})
    expected = content[start:end]
    assert response.status_code == 206 and response.content == expected
    first = start % len(content)
    assert response.headers["content-range"] == f"bytes {first}-{first + len(expected) - 1}/{len(content)}"
    assert int(response.headers["content-length"]) == len(expected)


def test_resuming_a_download_reassembles_the_tar(client: TestClient, owner_key: OwnerKey,
                                                 checkpoint_url: tuple[str, bytes]) -> None:
    url, content = checkpoint_url
    head = client.get(url, headers={**auth(owner_key.key), "Range": "bytes=0-4999"}).content
    tail = client.get(url, headers={**auth(owner_key.key), "Range": f"bytes={len(head)}-"}).content
    assert head + tail == content


def test_unsatisfiable_range_is_416_with_the_error_shape(client: TestClient, owner_key: OwnerKey,
                                                         checkpoint_url: tuple[str, bytes]) -> None:
    url, content = checkpoint_url
    for header in (f"bytes={len(content)}-", f"bytes={len(content) + 10}-{len(content) + 20}", "bytes=-0"):
        response = client.get(url, headers={**auth(owner_key.key), "Range": header})
        assert_error(response, 416, "range_not_satisfiable", "Range")
        assert response.headers["content-range"] == f"bytes */{len(content)}"


@pytest.mark.parametrize("header", ["items=0-5", "bytes=0-5,10-20", "bytes=abc", "bytes=9-2", "bytes=-", "bytes 0-5"])
def test_malformed_or_multi_ranges_are_ignored(client: TestClient, owner_key: OwnerKey,
                                               checkpoint_url: tuple[str, bytes], header: str) -> None:
    url, content = checkpoint_url
    response = client.get(url, headers={**auth(owner_key.key), "Range": header})
    assert response.status_code == 200 and response.content == content


def test_parse_range_edges() -> None:
    assert parse_range("bytes=0-0", 1) == (0, 1)
    assert parse_range("bytes=-10", 4) == (0, 4)
    assert parse_range(" BYTES = 2-3", 10) == (2, 4)
    with pytest.raises(ApiError):
        parse_range("bytes=0-", 0)
    with pytest.raises(ApiError):
        parse_range("bytes=-5", 0)


def test_lost_blob_is_an_internal_error(client: TestClient, owner_key: OwnerKey, settings: Settings,
                                        checkpoint_url: tuple[str, bytes]) -> None:
    url, content = checkpoint_url
    BlobStore(settings.blob_root).delete(hashlib.sha256(content).hexdigest())
    assert_error(client.get(url, headers=auth(owner_key.key)), 500, "internal_error")
