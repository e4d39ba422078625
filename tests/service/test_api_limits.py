"""Per-owner limits: request rate per API key (429 + Retry-After), queued + running jobs (429),
storage of live files (413, the rejected blob not kept); each off at 0."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.ratelimit import RateLimiter
from store.settings import Settings, reset_settings
from tests.service.api_fixtures import assert_error, auth, npz_bytes, upload, limits_fixture  # noqa: F401 (fixtures)
from tests.service.conftest import OwnerKey, make_owner_key

FINETUNE = {"type": "finetune", "finetune": {"training": {"epochs": 1}}}


@pytest.fixture
def client(backend_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    import api.submission

    monkeypatch.setattr(api.submission, "send_run_job", lambda job_id, settings=None: None)
    with TestClient(create_app(), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def alice(backend_settings: Settings) -> OwnerKey:
    return make_owner_key("alice")


def create_job(client: TestClient, key: str, file_id: str) -> httpx.Response:
    return client.post("/v1/fine_tuning/jobs", headers=auth(key),
                       json={"model": "tiny-bert", "training_file": file_id, "method": FINETUNE})


# --- request rate -------------------------------------------------------------------------------


def test_a_key_past_its_rate_gets_429_with_retry_after(client: TestClient, alice: OwnerKey, limits: Any) -> None:
    limits(rate_limit_per_minute=3)
    for _ in range(3):
        assert client.get("/v1/files", headers=auth(alice.key)).status_code == 200
    refused = client.get("/v1/fine_tuning/jobs", headers=auth(alice.key))
    assert_error(refused, 429, "rate_limited")
    assert refused.headers["retry-after"] == "20"  # one request every 60/3 s
    assert client.get("/healthz").status_code == 200  # not a /v1 route
    other_key = make_owner_key("alice").key  # a second key of the same owner has its own bucket
    assert client.get("/v1/files", headers=auth(other_key)).status_code == 200
    assert_error(client.get("/v1/files", headers=auth("xm-wrong")), 401, "invalid_api_key")  # auth comes first


def test_rate_limit_zero_turns_it_off(client: TestClient, alice: OwnerKey, limits: Any) -> None:
    limits(rate_limit_per_minute=0)
    assert all(client.get("/v1/files", headers=auth(alice.key)).status_code == 200 for _ in range(30))


def test_the_default_rate_lets_a_burst_of_normal_use_through(client: TestClient, alice: OwnerKey,
                                                               backend_settings: Settings) -> None:
    assert backend_settings.rate_limit_per_minute == 600
    assert all(client.get("/v1/files", headers=auth(alice.key)).status_code == 200 for _ in range(100))


def test_the_bucket_refills_at_the_configured_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    import api.ratelimit

    now = [1000.0]
    monkeypatch.setattr(api.ratelimit.time, "monotonic", lambda: now[0])
    limiter = RateLimiter()
    assert [limiter.take("k", 120) for _ in range(120)] == [None] * 120  # a full minute's burst
    assert limiter.take("k", 120) == 1  # then one every 0.5 s
    now[0] += 0.5
    assert limiter.take("k", 120) is None and limiter.take("k", 120) == 1
    assert limiter.take("other", 120) is None
    now[0] += 3600
    assert [limiter.take("k", 120) for _ in range(121)].count(None) == 120  # refills only up to the burst


# --- jobs per owner ----------------------------------------------------------------------------


def test_too_many_active_jobs_is_429_until_one_ends(client: TestClient, alice: OwnerKey, limits: Any) -> None:
    limits(max_active_jobs=2)
    file_id = upload(client, alice.key, npz_bytes()).json()["id"]
    first, _ = (create_job(client, alice.key, file_id).json() for _ in range(2))
    refused = create_job(client, alice.key, file_id)
    assert_error(refused, 429, "too_many_jobs")
    assert int(refused.headers["retry-after"]) > 0
    bob = make_owner_key("bob")
    assert create_job(client, bob.key, upload(client, bob.key, npz_bytes()).json()["id"]).status_code == 200
    assert client.post(f"/v1/fine_tuning/jobs/{first['id']}/cancel", headers=auth(alice.key)).status_code == 200
    assert create_job(client, alice.key, file_id).status_code == 200
    limits(max_active_jobs=0)
    assert create_job(client, alice.key, file_id).status_code == 200


def test_concurrent_creates_cannot_both_take_the_last_job_slot(pg_settings: Settings, limits: Any,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """On PostgreSQL the owner's row lock makes the check and the insert one step."""
    import api.submission

    limits(max_active_jobs=1)
    monkeypatch.setattr(api.submission, "send_run_job", lambda job_id, settings=None: None)
    alice = make_owner_key("alice")
    with TestClient(create_app()) as client:
        file_id = upload(client, alice.key, npz_bytes()).json()["id"]
    barrier = threading.Barrier(2, timeout=30)
    real = api.submission.check_job_allowed

    def together(*args: Any) -> None:
        barrier.wait()  # both requests are past validation before either counts
        real(*args)

    monkeypatch.setattr(api.submission, "check_job_allowed", together)

    def one(_: int) -> int:
        with TestClient(create_app(), raise_server_exceptions=False) as instance:
            return create_job(instance, alice.key, file_id).status_code

    with ThreadPoolExecutor(2) as pool:
        assert sorted(pool.map(one, range(2))) == [200, 429]


# --- storage per owner -------------------------------------------------------------------------


def test_uploads_past_the_storage_quota_are_413_and_keep_no_blob(client: TestClient, alice: OwnerKey,
                                                                  backend_settings: Settings, limits: Any) -> None:
    first, second = npz_bytes(seed=1), npz_bytes(seed=2)
    limits(max_storage_bytes=len(first) + len(second) // 2)
    kept = upload(client, alice.key, first)
    assert kept.status_code == 200, kept.text
    assert_error(upload(client, alice.key, second), 413, "storage_quota_exceeded", "file")
    assert_error(upload(client, alice.key, first), 413, "storage_quota_exceeded")  # same bytes count again
    blobs = [path for path in backend_settings.blob_root.rglob("*") if path.is_file() and ".tmp" not in path.parts]
    assert [path.name for path in blobs] == [kept.json()["sha256"]]  # the refused new blob is gone, the shared one kept
    bob = make_owner_key("bob")
    assert upload(client, bob.key, second).status_code == 200  # quotas are per owner
    assert client.delete(f"/v1/files/{kept.json()['id']}", headers=auth(alice.key)).status_code == 200
    assert upload(client, alice.key, second).status_code == 200  # deleted files free their share
    limits(max_storage_bytes=0)
    assert upload(client, alice.key, first).status_code == 200
