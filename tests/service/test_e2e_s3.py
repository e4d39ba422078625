"""Scale-out end to end: blobs in S3-compatible storage (a real moto server), PostgreSQL, Redis,
and an API and a worker that share nothing on local disk (each has its own data dir). Upload via
the real API, a real worker job to `succeeded`, the checkpoint downloaded whole and by Range."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from store.blobs import blob_store
from store.settings import Settings, get_settings, reset_settings
from tests.service.api_fixtures import auth, free_port, running, wait_until_up
from tests.service.conftest import make_owner_key
from tests.service.s3_server import s3_endpoint, s3_url  # noqa: F401  (fixtures)
from tests.service.test_e2e import QUICK, XMODAL, Service, sine_dataset

pytestmark = pytest.mark.integration


@pytest.fixture
def deployment(pg_settings: Settings, redis_url: str, s3_url: str, s3_endpoint: str,  # noqa: F811
               monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    monkeypatch.setenv("XMODAL_BROKER_URL", redis_url)
    monkeypatch.setenv("XMODAL_BLOB_URL", s3_url)
    monkeypatch.setenv("XMODAL_S3_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("XMODAL_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "xmodal-cache"))
    reset_settings()
    return get_settings()


@pytest.fixture
def hosts(tmp_path: Path) -> dict[str, Path]:
    """One data dir per process, as on two machines."""
    return {name: tmp_path / name for name in ("api", "worker")}


@pytest.fixture
def service(deployment: Settings, hosts: dict[str, Path], tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    key = make_owner_key("alice").key
    monkeypatch.setenv("XMODAL_DATA_DIR", str(hosts["api"]))  # each child copies the environment as it starts
    with running([*XMODAL, "serve", "--port", str(port)], tmp_path / "server.log") as server:
        monkeypatch.setenv("XMODAL_DATA_DIR", str(hosts["worker"]))
        with running([*XMODAL, "worker"], tmp_path / "worker.log"), \
                httpx.Client(base_url=url, headers=auth(key), timeout=60) as http:
            service = Service(http, tmp_path)
            try:
                wait_until_up(url, server)
            except (RuntimeError, TimeoutError) as exc:
                raise AssertionError(f"{exc}\n{service.tail()}") from None
            yield service


def test_job_on_object_storage_with_nothing_shared_on_disk(service: Service, deployment: Settings,
                                                           hosts: dict[str, Path]) -> None:
    content, _, _ = sine_dataset()
    file_id = service.upload(content)
    job = service.finished(service.create(file_id, QUICK)["id"])
    assert job["status"] == "succeeded", f"{job}\n{service.tail()}"

    base = f"/v1/fine_tuning/jobs/{job['id']}"
    final = next(c for c in service.http.get(f"{base}/checkpoints").json()["data"]
                 if c["id"] == job["result"]["checkpoint"])
    whole = service.http.get(f"{base}/checkpoints/{final['id']}/content")
    assert whole.status_code == 200 and hashlib.sha256(whole.content).hexdigest() == final["sha256"]
    assert len(whole.content) == final["bytes"] > 1000
    start = final["bytes"] // 3
    part = service.http.get(f"{base}/checkpoints/{final['id']}/content", headers={"Range": f"bytes={start}-"})
    assert part.status_code == 206 and part.content == whole.content[start:]
    assert part.headers["content-range"] == f"bytes {start}-{final['bytes'] - 1}/{final['bytes']}"
    uploaded = service.http.get(f"/v1/files/{file_id}/content", headers={"Range": "bytes=0-99"})
    assert uploaded.status_code == 206 and uploaded.content == content[:100]

    blobs = blob_store(deployment)  # the bucket holds both blobs, and no write was left half done
    assert blobs.exists(hashlib.sha256(content).hexdigest()) and blobs.exists(final["sha256"])
    assert blobs.remove_stale_temp_files(older_than=0) == 0
    for host in hosts.values():  # neither process kept a blob (or any scratch file) on its own disk
        kept = [path for path in host.rglob("*") if path.is_file() and path.stat().st_size >= 100]
        assert kept == [], kept
