"""Issue 12, finding 1: uploads that stall must not freeze the API.

A red-team run opened 41 connections that sent `POST /v1/files` headers and `--XB\\r\\n`, then
nothing: each held a thread-pool thread for good, and `/healthz` and every other owner's requests
timed out. Against a real server: more stalled uploads than anyio's thread pool has threads (40;
the API does not resize it) leave `/healthz` and another owner's requests answering at once; the
stalled ones are cut off with a 408 after the read timeout, a dripping one by the minimum rate,
leaving no temp file or blob; past the per-key and total caps an upload is a 429.
"""

from __future__ import annotations

import socket
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from store.settings import Settings
from tests.service.api_fixtures import (
    assert_error,
    auth,
    limits_fixture,  # noqa: F401 (registers the `limits` fixture)
    live_server,
    npz_bytes,
    upload,
)
from tests.service.conftest import OwnerKey, make_owner_key
from tests.service.raw_http import answered, open_request, read_response

pytestmark = pytest.mark.integration

STALLED = 50
"""More stalled uploads than anyio's default thread pool has threads (40)."""
ANSWER_WITHIN_S = 1.0
"""The bound for /healthz and another owner's GET while uploads stall: far above their usual few
milliseconds (the machine may be busy), far below the failure (no answer at all)."""


def stalled_upload(url: str, key: str) -> socket.socket:
    """The red team's request: headers promising a body, the first boundary, then nothing."""
    headers = {**auth(key), "Content-Type": "multipart/form-data; boundary=XB", "Content-Length": "100000"}
    return open_request(url, "POST", "/v1/files", headers, b"--XB\r\n")


def temp_files(settings: Settings) -> list[Path]:
    tmp = settings.blob_root / ".tmp"
    return list(tmp.iterdir()) if tmp.is_dir() else []


def stored_files(settings: Settings) -> list[Path]:
    return [path for path in settings.blob_root.rglob("*") if path.is_file() and ".tmp" not in path.parts]


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)


@contextmanager
def closing_all(socks: list[socket.socket]) -> Iterator[list[socket.socket]]:
    try:
        yield socks
    finally:
        for sock in socks:
            sock.close()


def answer_times(http: httpx.Client, path: str, headers: dict[str, str], times: int = 5) -> list[float]:
    seconds = []
    for _ in range(times):
        start = time.perf_counter()
        response = http.get(path, headers=headers)
        seconds.append(time.perf_counter() - start)
        assert response.status_code == 200, response.text
    return seconds


def test_stalled_uploads_leave_the_api_answering_and_are_cut_off(settings: Settings, owner_key: OwnerKey,
                                                                limits: Callable[..., None], tmp_path: Path) -> None:
    read_timeout = 4
    limits(body_read_timeout_seconds=read_timeout, max_uploads_per_key=0, max_uploads=0)  # no cap: all 50 get in
    bob = make_owner_key("bob")
    with live_server(tmp_path) as url, httpx.Client(base_url=url, timeout=10) as http:
        opened = time.monotonic()
        with closing_all([stalled_upload(url, owner_key.key) for _ in range(STALLED)]) as socks:
            wait_for(lambda: len(temp_files(settings)) == STALLED, read_timeout - 1, "every upload in progress")
            health = answer_times(http, "/healthz", {})
            others = answer_times(http, "/v1/files", auth(bob.key))
            print(f"while {STALLED} uploads stall: /healthz median {statistics.median(health) * 1000:.1f} ms, "
                  f"max {max(health) * 1000:.1f} ms; bob's GET /v1/files median "
                  f"{statistics.median(others) * 1000:.1f} ms, max {max(others) * 1000:.1f} ms")
            assert max(health) < ANSWER_WITHIN_S and max(others) < ANSWER_WITHIN_S, (health, others)
            for sock in socks:
                status, body = read_response(sock, timeout=read_timeout + 10)
                assert status == 408 and b'"request_timeout"' in body, (status, body)
            cut_off_after = time.monotonic() - opened
        assert read_timeout - 0.5 <= cut_off_after <= read_timeout + 10
        assert temp_files(settings) == [] and stored_files(settings) == []
        assert upload(http, owner_key.key, npz_bytes()).status_code == 200  # their slots were given back


def test_a_dripping_upload_is_cut_off_by_the_minimum_rate(settings: Settings, owner_key: OwnerKey,
                                                          limits: Callable[..., None], tmp_path: Path) -> None:
    """One byte every 0.2 s never trips the read timeout; the minimum rate stops it."""
    read_timeout = 2
    limits(body_read_timeout_seconds=read_timeout, body_min_bytes_per_second=1024)
    with live_server(tmp_path) as url:
        with closing_all([stalled_upload(url, owner_key.key)]) as (sock,):
            start = time.monotonic()
            while not answered(sock) and time.monotonic() - start < 20:
                sock.sendall(b"x")
                time.sleep(0.2)
            status, body = read_response(sock, timeout=5)
            elapsed = time.monotonic() - start
        assert status == 408 and b"bytes a second" in body, (status, body)
        assert read_timeout <= elapsed < read_timeout + 4, elapsed
        wait_for(lambda: temp_files(settings) == [], 5, "the dripping upload's temp file removed")


def test_uploads_past_the_per_key_and_the_total_cap_are_429(settings: Settings, owner_key: OwnerKey,
                                                            limits: Callable[..., None], tmp_path: Path) -> None:
    limits(body_read_timeout_seconds=60, max_uploads_per_key=2, max_uploads=3)
    bob, carol = make_owner_key("bob"), make_owner_key("carol")
    with live_server(tmp_path) as url, httpx.Client(base_url=url, timeout=10) as http:
        with closing_all([stalled_upload(url, owner_key.key) for _ in range(2)]) as alices:
            wait_for(lambda: len(temp_files(settings)) == 2, 10, "alice's two uploads in progress")
            refused = upload(http, owner_key.key, npz_bytes())
            assert_error(refused, 429, "too_many_uploads")
            assert int(refused.headers["Retry-After"]) > 0
            with closing_all([stalled_upload(url, bob.key)]):
                wait_for(lambda: len(temp_files(settings)) == 3, 10, "bob's upload in progress")
                assert_error(upload(http, carol.key, npz_bytes()), 429, "too_many_uploads")  # 3 in all
                alices[0].close()  # a client that goes away gives its slot back
                wait_for(lambda: len(temp_files(settings)) == 2, 10, "alice's closed upload cleaned up")
                assert upload(http, owner_key.key, npz_bytes()).status_code == 200
                assert upload(http, carol.key, npz_bytes()).status_code == 200
