"""`Idempotency-Key` on `POST /v1/fine_tuning/jobs` and `POST /v1/files`, on SQLite and PostgreSQL:
a retry returns the first object, the key with another request is a 422, keys expire, and two
concurrent requests with one key make one object."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from api.main import create_app
from store.db import session_scope
from store.models import File, IdempotencyKey, Job, utcnow
from store.settings import Settings
from tests.service.api_fixtures import QUICK_ORCA, assert_error, auth, npz_bytes, sent_fixture  # noqa: F401 (fixtures)
from tests.service.conftest import OwnerKey, make_owner_key



@pytest.fixture
def client(backend_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def alice(backend_settings: Settings) -> OwnerKey:
    return make_owner_key("alice")


@pytest.fixture
def file_id(client: TestClient, alice: OwnerKey) -> str:
    return str(upload_with_key(client, alice.key, npz_bytes(), key=None).json()["id"])


def post_job(client: TestClient, api_key: str, body: dict[str, Any], key: str | None) -> httpx.Response:
    headers = {**auth(api_key), **({"Idempotency-Key": key} if key else {})}
    return client.post("/v1/fine_tuning/jobs", headers=headers, json=body)


def upload_with_key(client: TestClient, api_key: str, content: bytes, key: str | None,
                    filename: str = "train.npz") -> httpx.Response:
    headers = {**auth(api_key), **({"Idempotency-Key": key} if key else {})}
    return client.post("/v1/files", headers=headers, files={"file": (filename, content)}, data={"purpose": "fine-tune"})


def count(model: type[File] | type[Job]) -> int:
    with session_scope() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(
            *([File.deleted_at.is_(None)] if model is File else []))) or 0)


def expire_keys() -> None:
    """Age every idempotency key past the default 24 h."""
    with session_scope() as session:
        session.execute(update(IdempotencyKey).values(created_at=utcnow() - timedelta(hours=24, seconds=1)))


def blobs_on_disk(settings: Settings) -> int:
    return sum(1 for path in settings.blob_root.rglob("*") if path.is_file() and ".tmp" not in path.parts)


# --- jobs ---------------------------------------------------------------------------------------


def test_a_job_retry_returns_the_first_job(client: TestClient, alice: OwnerKey, file_id: str, sent: list[str]) -> None:
    body = {"model": "tiny-bert", "training_file": file_id, "method": QUICK_ORCA, "metadata": {"a": "1", "b": "2"}}
    first = post_job(client, alice.key, body, "retry-1")
    assert first.status_code == 200, first.text
    reordered = {**dict(reversed(list(body.items()))), "metadata": {"b": "2", "a": "1"}}
    again = post_job(client, alice.key, reordered, "retry-1")
    assert again.status_code == 200 and again.json() == first.json()
    assert count(Job) == 1 and sent == [first.json()["id"]]  # one row, one wake-up
    assert post_job(client, alice.key, body, "retry-2").json()["id"] != first.json()["id"]
    bob = make_owner_key("bob")
    bobs_file = upload_with_key(client, bob.key, npz_bytes(), key=None).json()["id"]
    bobs = post_job(client, bob.key, {**body, "training_file": bobs_file}, "retry-1")  # keys are per owner
    assert bobs.status_code == 200 and bobs.json()["id"] != first.json()["id"]


def test_the_same_key_with_another_job_body_is_422(client: TestClient, alice: OwnerKey, file_id: str,
                                                   sent: list[str]) -> None:
    body = {"model": "tiny-bert", "training_file": file_id, "method": QUICK_ORCA}
    assert post_job(client, alice.key, body, "k").status_code == 200
    for other in ({**body, "seed": 7}, {**body, "model": "tiny-swin"}, {**body, "suffix": "v2"}):
        assert_error(post_job(client, alice.key, other, "k"), 422, "idempotency_key_reused", "Idempotency-Key")
    assert count(Job) == 1


def test_an_expired_job_key_makes_a_new_job(client: TestClient, alice: OwnerKey, file_id: str, sent: list[str]) -> None:
    body = {"model": "tiny-bert", "training_file": file_id, "method": QUICK_ORCA}
    first = post_job(client, alice.key, body, "k").json()["id"]
    expire_keys()
    second = post_job(client, alice.key, {**body, "seed": 3}, "k")  # another body is fine once expired
    assert second.status_code == 200 and second.json()["id"] != first
    assert post_job(client, alice.key, {**body, "seed": 3}, "k").json()["id"] == second.json()["id"]
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(IdempotencyKey)) == 1  # the expired row is gone


def test_a_key_whose_job_was_not_queued_is_released(client: TestClient, alice: OwnerKey, file_id: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A 503 (broker down) cancelled the job it made; retrying it with its key makes one that runs."""
    import api.submission

    def down(job_id: str, settings: object = None) -> None:
        raise ConnectionRefusedError("broker down")

    body = {"model": "tiny-bert", "training_file": file_id, "method": QUICK_ORCA}
    monkeypatch.setattr(api.submission, "send_run_job", down)
    assert_error(post_job(client, alice.key, body, "k"), 503, "queue_unavailable")
    monkeypatch.setattr(api.submission, "send_run_job", lambda job_id, settings=None: None)
    retried = post_job(client, alice.key, body, "k")
    assert retried.status_code == 200 and retried.json()["status"] == "queued"
    assert post_job(client, alice.key, body, "k").json()["id"] == retried.json()["id"]


def _race(monkeypatch: pytest.MonkeyPatch, module: Any, name: str, request: Callable[[TestClient], httpx.Response],
          ) -> list[httpx.Response]:
    """Two API instances send `request` at once; both get past the key lookup before either inserts."""
    barrier = threading.Barrier(2, timeout=30)
    real = getattr(module, name)

    def after_both_looked(*args: Any, **kwargs: Any) -> Any:
        barrier.wait()
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, after_both_looked)

    def one() -> httpx.Response:
        with TestClient(create_app(), raise_server_exceptions=False) as instance:
            return request(instance)

    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda _: one(), range(2)))


def test_concurrent_job_creates_with_one_key_make_one_job(alice: OwnerKey, file_id: str, sent: list[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import api.submission

    body = {"model": "tiny-bert", "training_file": file_id, "method": QUICK_ORCA}
    responses = _race(monkeypatch, api.submission, "check_job_allowed",
                      lambda instance: post_job(instance, alice.key, body, "once"))
    assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
    assert responses[0].json()["id"] == responses[1].json()["id"]
    assert count(Job) == 1 and sent == [responses[0].json()["id"]]


# --- files --------------------------------------------------------------------------------------


def test_an_upload_retry_returns_the_first_file(client: TestClient, alice: OwnerKey, backend_settings: Settings) -> None:
    content = npz_bytes(seed=1)
    first = upload_with_key(client, alice.key, content, "up-1")
    assert first.status_code == 200, first.text
    again = upload_with_key(client, alice.key, content, "up-1")
    assert again.status_code == 200 and again.json() == first.json()
    assert count(File) == 1 and blobs_on_disk(backend_settings) == 1
    assert upload_with_key(client, alice.key, content, "up-2").json()["id"] != first.json()["id"]  # new key, new file


def test_the_same_key_with_another_upload_is_422_and_keeps_no_blob(client: TestClient, alice: OwnerKey,
                                                                   backend_settings: Settings) -> None:
    first = upload_with_key(client, alice.key, npz_bytes(seed=1), "k").json()
    assert_error(upload_with_key(client, alice.key, npz_bytes(seed=2), "k"), 422, "idempotency_key_reused",
                 "Idempotency-Key")
    assert_error(upload_with_key(client, alice.key, npz_bytes(seed=1), "k", filename="other.npz"), 422,
                 "idempotency_key_reused")
    assert count(File) == 1 and blobs_on_disk(backend_settings) == 1
    assert client.get(f"/v1/files/{first['id']}/content", headers=auth(alice.key)).content == npz_bytes(seed=1)


def test_an_expired_or_deleted_files_key_makes_a_new_file(client: TestClient, alice: OwnerKey) -> None:
    content = npz_bytes(seed=1)
    first = upload_with_key(client, alice.key, content, "k").json()["id"]
    expire_keys()
    second = upload_with_key(client, alice.key, content, "k").json()["id"]
    assert second != first and count(File) == 2
    assert client.delete(f"/v1/files/{second}", headers=auth(alice.key)).status_code == 200
    third = upload_with_key(client, alice.key, content, "k")  # the key's file is gone: nothing to return
    assert third.status_code == 200 and third.json()["id"] not in (first, second)


def test_concurrent_uploads_with_one_key_make_one_file(alice: OwnerKey, backend_settings: Settings,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import api.routes.files

    content = npz_bytes(seed=4)
    responses = _race(monkeypatch, api.routes.files, "validate_npz",
                      lambda instance: upload_with_key(instance, alice.key, content, "once"))
    assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
    assert responses[0].json()["id"] == responses[1].json()["id"]
    assert count(File) == 1 and blobs_on_disk(backend_settings) == 1
