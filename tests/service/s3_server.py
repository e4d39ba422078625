"""A real S3-protocol server for tests: moto's server mode, as a child process on a free port.

`s3_endpoint` starts one per test session; `s3_url` gives each test a fresh bucket and the AWS
credential variables (moto accepts any), so child processes (uvicorn, worker) inherit them. Without
moto installed the tests skip, and fail under `make test` (tests/services.py).
"""

from __future__ import annotations

import importlib.util
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from store.settings import Settings
from tests.service.api_fixtures import free_port
from tests.service.conftest import _configure
from tests.services import unavailable

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m moto.server` on a free port; its URL once it answers."""
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("boto3") is None:
        unavailable("moto[server] and boto3 are not installed (pip install -e '.[test]')")
    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_for(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"moto server did not answer at {url} within {timeout:g}s")


@pytest.fixture
def s3_url(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket (so tests see no one else's keys); returns `s3://bucket/prefix`."""
    import boto3

    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    bucket = f"xmodal-test-{secrets.token_hex(6)}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/blobs"


@pytest.fixture
def s3_settings(data_dir: Path, s3_url: str, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Like conftest's `settings` (migrated SQLite, filesystem broker), with blobs in the S3 bucket."""
    from migrations import upgrade
    from store.db import dispose_engines
    from store.settings import reset_settings

    configured = _configure(monkeypatch, data_dir=str(data_dir), blob_url=s3_url, s3_endpoint_url=s3_endpoint)
    upgrade(configured.database_url)
    yield configured
    dispose_engines()
    reset_settings()
