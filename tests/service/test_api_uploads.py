"""`POST /v1/files`: good datasets are stored and described; every bad one is a 4xx with the
error shape and leaves no file and no blob behind; the size limit stops reading early."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from fastapi.testclient import TestClient

from store.db import session_scope
from store.models import File
from store.settings import Settings, get_settings, reset_settings
from tests.core.bad_datasets import BAD_DATASETS, GOOD_DATASETS
from tests.service.api_fixtures import (
    assert_error,
    auth,
    client_fixture,  # noqa: F401 (registers the `client` fixture)
    live_server,
    npz_bytes,
    upload,
)
from tests.service.conftest import OwnerKey


def stored_blobs(settings: Settings) -> list[Path]:
    return [path for path in settings.blob_root.rglob("*") if path.is_file() and ".tmp" not in path.parts]


def file_rows() -> int:
    with session_scope() as session:
        return session.query(File).count()


def test_upload_stores_hashes_and_describes_the_dataset(client: TestClient, owner_key: OwnerKey,
                                                        settings: Settings) -> None:
    content = npz_bytes(n=30, length=24, classes=3)
    response = upload(client, owner_key.key, content, filename="ecg.npz")
    assert response.status_code == 200, response.text
    file = response.json()
    assert file["object"] == "file" and file["id"].startswith("file-") and file["filename"] == "ecg.npz"
    assert file["purpose"] == "fine-tune" and file["status"] == "processed" and file["error"] is None
    assert file["bytes"] == len(content) and file["sha256"] == hashlib.sha256(content).hexdigest()
    info = file["info"]
    assert (info["samples"], info["input_shape"], info["task_type"], info["num_classes"]) == \
        (30, [1, 24], "classification", 3)
    downloaded = client.get(f"/v1/files/{file['id']}/content", headers=auth(owner_key.key))
    assert downloaded.content == content and downloaded.headers["etag"] == f'"{file["sha256"]}"'
    assert 'filename="ecg.npz"' in downloaded.headers["content-disposition"]
    # same bytes twice: two files, one blob
    assert upload(client, owner_key.key, content).json()["sha256"] == file["sha256"]
    assert len(stored_blobs(settings)) == 1


@pytest.mark.parametrize(("name", "build", "task"), GOOD_DATASETS, ids=[case[0] for case in GOOD_DATASETS])
def test_every_good_layout_is_accepted(client: TestClient, owner_key: OwnerKey, tmp_path: Path, name: str,
                                       build: object, task: str) -> None:
    path = tmp_path / f"{name}.npz"
    build(path)  # type: ignore[operator]
    response = upload(client, owner_key.key, path.read_bytes())
    assert response.status_code == 200, response.text
    assert response.json()["info"]["task_type"] == task


@pytest.mark.parametrize(("name", "build", "field"), BAD_DATASETS, ids=[case[0] for case in BAD_DATASETS])
def test_every_bad_dataset_is_a_400_naming_the_field(client: TestClient, owner_key: OwnerKey, settings: Settings,
                                                     tmp_path: Path, name: str, build: object, field: str) -> None:
    path = tmp_path / f"{name}.npz"
    build(path)  # type: ignore[operator]
    assert_error(upload(client, owner_key.key, path.read_bytes()), 400, "invalid_dataset", field)
    assert file_rows() == 0 and stored_blobs(settings) == []
    assert client.get("/v1/files", headers=auth(owner_key.key)).json()["data"] == []


def test_a_rejected_upload_keeps_a_blob_another_file_uses(client: TestClient, owner_key: OwnerKey,
                                                          settings: Settings) -> None:
    content = npz_bytes()
    assert upload(client, owner_key.key, content).status_code == 200
    assert_error(upload(client, owner_key.key, content, purpose="batch"), 422, param="purpose")
    assert len(stored_blobs(settings)) == 1
    assert client.get(f"/v1/files/{upload(client, owner_key.key, content).json()['id']}/content",
                      headers=auth(owner_key.key)).content == content


def test_malformed_upload_requests(client: TestClient, owner_key: OwnerKey, settings: Settings) -> None:
    headers = auth(owner_key.key)
    assert_error(client.post("/v1/files", headers=headers, data={"purpose": "fine-tune"}), 415,
                 "unsupported_media_type")  # no file at all: not even multipart
    no_file = client.post("/v1/files", headers=headers, files={"other": ("a.npz", b"abc")})
    assert_error(no_file, 422, "missing_parameter", "file")
    as_text = client.post("/v1/files", headers=headers, files={"file": (None, "x" * 2000)})
    assert_error(as_text, 400, "invalid_multipart", "file")
    assert_error(upload(client, owner_key.key, npz_bytes(), purpose="p" * 2000), 400, "invalid_multipart", "purpose")
    two_files = client.post("/v1/files", headers=headers, files=[("file", ("a.npz", b"a")), ("file", ("b.npz", b"b"))])
    assert_error(two_files, 400, "invalid_multipart", "file")
    assert_error(client.post("/v1/files", headers={**headers, "Content-Type": "application/json"}, json={}), 415)
    no_boundary = client.post("/v1/files", headers={**headers, "Content-Type": "multipart/form-data"}, content=b"x")
    assert_error(no_boundary, 415)
    boundary = "multipart/form-data; boundary=xyz"
    truncated = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.npz"\r\n\r\nabc'
    assert_error(client.post("/v1/files", headers={**headers, "Content-Type": boundary}, content=truncated), 400,
                 "invalid_multipart")
    assert_error(client.post("/v1/files", headers={**headers, "Content-Type": boundary}, content=b"garbage" * 10),
                 400, "invalid_multipart")
    assert file_rows() == 0 and stored_blobs(settings) == []


@pytest.fixture
def small_limit(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    limit = 4096
    monkeypatch.setenv("XMODAL_MAX_UPLOAD_BYTES", str(limit))
    reset_settings()
    assert get_settings().max_upload_bytes == limit
    yield limit
    reset_settings()


def test_oversized_upload_is_413_and_stores_nothing(client: TestClient, owner_key: OwnerKey, settings: Settings,
                                                    small_limit: int) -> None:
    content = npz_bytes(n=200)  # ~13 KB
    assert len(content) > small_limit
    assert_error(upload(client, owner_key.key, content), 413, "file_too_large", "file")
    assert file_rows() == 0 and stored_blobs(settings) == []
    assert list((settings.blob_root / ".tmp").iterdir()) == []
    small = npz_bytes(n=8, length=8)
    assert len(small) <= small_limit and upload(client, owner_key.key, small).status_code == 200


def _multipart_chunks(content: bytes, boundary: str, chunk: int = 4096) -> Iterator[bytes]:
    """A multipart body in pieces, as a client streams it (no Content-Length)."""
    yield (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.npz"\r\n'
           "Content-Type: application/octet-stream\r\n\r\n").encode()
    for start in range(0, len(content), chunk):
        yield content[start:start + chunk]
    yield f"\r\n--{boundary}--\r\n".encode()


def test_reading_stops_as_soon_as_the_limit_is_crossed(tmp_path: Path) -> None:
    """The body is pulled chunk by chunk; past the limit no further chunk is asked for."""
    from starlette.requests import Request

    from api.errors import ApiError
    from api.uploads import receive_upload
    from store.blobs import BlobStore

    chunks = list(_multipart_chunks(b"\0" * 1_000_000, "xyz", chunk=1000))
    pulled = 0

    async def receive() -> dict[str, object]:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": chunks[pulled - 1], "more_body": pulled < len(chunks)}

    scope = {"type": "http", "method": "POST", "path": "/v1/files", "query_string": b"",
             "headers": [(b"content-type", b"multipart/form-data; boundary=xyz")]}
    blobs = BlobStore(tmp_path / "blobs")

    async def main() -> None:
        with pytest.raises(ApiError) as raised:
            await receive_upload(Request(scope, receive), blobs, max_bytes=10_000)
        assert raised.value.status == 413

    anyio.run(main)
    assert 10 <= pulled <= 13  # 10 KB of file data in 1 KB chunks, plus the part header: not the 1000 chunks
    assert [path for path in blobs.root.rglob("*") if path.is_file()] == []


@pytest.mark.integration
def test_streaming_upload_stops_at_the_limit_on_a_real_server(owner_key: OwnerKey, settings: Settings,
                                                              small_limit: int, tmp_path: Path) -> None:
    """Without Content-Length the server must count the bytes itself and answer 413 without storing."""
    content = npz_bytes(n=2000)  # ~130 KB, far past the 4 KiB limit
    with live_server(tmp_path) as url, httpx.Client(base_url=url, timeout=30) as http:
        try:
            response = http.post("/v1/files", headers={**auth(owner_key.key),
                                                       "Content-Type": "multipart/form-data; boundary=b0undary"},
                                 content=_multipart_chunks(content, "b0undary"))
            assert_error(response, 413, "file_too_large")
        except httpx.WriteError:
            pass  # the server answered and closed before the client finished sending: also a stop
        assert file_rows() == 0 and stored_blobs(settings) == []
        fine = upload(http, owner_key.key, npz_bytes(n=8, length=8))
        assert fine.status_code == 200, fine.text
        declared = http.post("/v1/files", headers=auth(owner_key.key), files={"file": ("big.npz", content)})
        assert_error(declared, 413, "file_too_large")
