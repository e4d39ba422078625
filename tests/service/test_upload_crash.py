"""The API process killed (SIGKILL) in the middle of an upload: no file row and no blob appear, only
a temp file under the blob root's `.tmp`; the next start clears such leftovers once they are stale;
the retried upload succeeds.

Start-up removes temp files nobody wrote to for an hour (store.blobs.STALE_TEMP_SECONDS): other
API processes and workers may be writing there right now, so a fresh one is kept. The test ages
the crash's leftover by two hours (its mtime) instead of waiting one out.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from store.blobs import BlobStore
from store.db import session_scope
from store.models import File
from store.settings import Settings
from tests.service.api_fixtures import auth, free_port, npz_bytes, running, upload, wait_until_up
from tests.service.conftest import make_owner_key

pytestmark = pytest.mark.integration

CHUNK_BYTES = 64 * 1024


def trickle(body: bytes, first_half_sent: threading.Event, go_on: threading.Event) -> Iterator[bytes]:
    """The first half of `body`, then nothing until `go_on` (a client stalled mid-upload), then the rest."""
    half = len(body) // 2
    for start in range(0, half, CHUNK_BYTES):
        yield body[start:min(start + CHUNK_BYTES, half)]
    first_half_sent.set()
    go_on.wait(60)
    yield body[half:]


def file_rows() -> int:
    with session_scope() as session:
        return int(session.scalar(select(func.count()).select_from(File)) or 0)


def blob_files(root: Path) -> list[Path]:
    """Files under the blob root outside `.tmp`: stored blobs."""
    return [path for path in root.rglob("*") if path.is_file() and path.relative_to(root).parts[0] != ".tmp"]


def wait_for_partial_write(tmp: Path, at_least: int, timeout: float = 30.0) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        written = [path for path in tmp.glob("*") if path.stat().st_size >= at_least] if tmp.is_dir() else []
        if written:
            return written[0]
        time.sleep(0.05)
    raise AssertionError(f"the server never wrote {at_least} bytes of the upload under {tmp}")


def test_api_killed_mid_upload_leaves_no_row_or_blob_and_a_retry_succeeds(settings: Settings, tmp_path: Path) -> None:
    key = make_owner_key("alice").key
    content = npz_bytes(n=20_000, length=64)  # 5 MiB
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "cli.main", "serve", "--port", str(port)]
    tmp = settings.blob_root / ".tmp"
    encoded = httpx.Request("POST", f"{url}/v1/files", files={"file": ("train.npz", content)},
                            data={"purpose": "fine-tune"})
    headers = {**auth(key), "content-type": encoded.headers["content-type"]}
    first_half_sent, go_on = threading.Event(), threading.Event()
    outcome: list[object] = []

    def post() -> None:
        try:
            outcome.append(httpx.post(f"{url}/v1/files", content=trickle(encoded.read(), first_half_sent, go_on),
                                      headers=headers, timeout=60))
        except httpx.TransportError as exc:
            outcome.append(exc)

    with running(command, tmp_path / "server.log") as server:
        wait_until_up(url, server)
        client = threading.Thread(target=post)
        client.start()
        assert first_half_sent.wait(30)
        partial = wait_for_partial_write(tmp, at_least=1024 * 1024)
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        go_on.set()
        client.join(60)
    assert len(outcome) == 1 and isinstance(outcome[0], httpx.TransportError), outcome

    assert file_rows() == 0
    assert blob_files(settings.blob_root) == []
    assert list(tmp.iterdir()) == [partial] and 0 < partial.stat().st_size < len(content)

    two_hours_ago = time.time() - 2 * 3600
    os.utime(partial, (two_hours_ago, two_hours_ago))
    in_progress = tmp / "upload-in-progress"  # another writer's, still being written
    in_progress.write_bytes(b"partial")
    with running(command, tmp_path / "server-restarted.log") as server, \
            httpx.Client(base_url=url, timeout=60) as http:
        wait_until_up(url, server)
        assert sorted(tmp.iterdir()) == [in_progress]
        response = upload(http, key, content)
    assert response.status_code == 200, response.text
    stored = response.json()
    assert stored["status"] == "processed" and stored["bytes"] == len(content)
    assert stored["sha256"] == hashlib.sha256(content).hexdigest() and BlobStore(settings.blob_root).exists(stored["sha256"])
    assert file_rows() == 1 and blob_files(settings.blob_root) == [BlobStore(settings.blob_root).path(stored["sha256"])]
