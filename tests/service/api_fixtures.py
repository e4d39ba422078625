"""Fixtures and helpers for the API tests. `conftest.py` belongs to the store's tests, so the API
test modules import these by name (fixtures as `<name>_fixture`, registered under `<name>`)."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from store.settings import Settings, reset_settings

REPO_ROOT = Path(__file__).resolve().parents[2]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def npz_bytes(n: int = 40, length: int = 16, classes: int = 2, seed: int = 0) -> bytes:
    """A small valid classification dataset, (n, 1, length) with labels 0..classes-1."""
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    np.savez(buffer, x=rng.standard_normal((n, 1, length)).astype(np.float32), y=np.arange(n) % classes)
    return buffer.getvalue()


def upload(client: TestClient | httpx.Client, key: str, content: bytes, filename: str = "train.npz",
           **fields: str) -> httpx.Response:
    return client.post("/v1/files", headers=auth(key), files={"file": (filename, content)},
                       data={"purpose": "fine-tune", **fields})


def assert_error(response: httpx.Response, status: int, code: str | None = None, param: str | None = None) -> dict:
    """The response has `status` and exactly the error shape; returns the inner error."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "param"}, body
    error = body["error"]
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error
    return error


QUICK_ORCA = {"type": "orca", "orca": {"alignment": {"epochs": 1, "maxsamples": 16, "proxy": "digits"},
                                       "training": {"epochs": 1, "batch_size": 8}}}
"""A job `method` that validates and would run in seconds (the API tests never run it)."""


@pytest.fixture(name="sent")
def sent_fixture(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Job ids whose wake-up message was sent (the broker itself is not under test here)."""
    import api.submission

    messages: list[str] = []
    monkeypatch.setattr(api.submission, "send_run_job", lambda job_id, settings=None: messages.append(job_id))
    return messages


@pytest.fixture(name="limits")
def limits_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Set XMODAL_<NAME> limits for the rest of the test (settings are re-read per request)."""

    def set_limits(**values: int) -> None:
        for name, value in values.items():
            monkeypatch.setenv(f"XMODAL_{name.upper()}", str(value))
        reset_settings()

    yield set_limits
    reset_settings()


@pytest.fixture(name="client")
def client_fixture(settings: Settings) -> Iterator[TestClient]:
    """The app in-process on the SQLite `settings`; server errors become 500 responses, as in production."""
    with TestClient(create_app(), raise_server_exceptions=False) as test_client:
        yield test_client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before answering")
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not come up within {timeout}s")


@contextmanager
def running(command: list[str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child process with the current XMODAL_* environment, stopped (then killed) afterwards."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=dict(os.environ), stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()


@contextmanager
def live_server(log_dir: Path) -> Iterator[str]:
    """A real uvicorn process serving the app factory; yields its base URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "uvicorn", "api.main:create_app", "--factory",
               "--host", "127.0.0.1", "--port", str(port)]
    with running(command, log_dir / "server.log") as process:
        try:
            wait_until_up(url, process)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}\n{(log_dir / 'server.log').read_text()}") from None
        yield url
