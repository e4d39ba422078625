"""Issue 12, finding 2: request bodies are bounded, and never read before the key is checked.

A red-team run got a 422 (not a 401) for `{not json` with no key, and a 500 MB JSON body with no
key got its 401 after 16.5 s while the API grew from 140 to 1148 MiB. Against a real server: with
no key or a wrong one the answer is a 401 before the body is read; with a good key a JSON body past
`max_json_bytes` (1 MiB) is a 413, from Content-Length before a byte of it is sent, and from the
bytes themselves after about the limit for a chunked body; the server's memory stays put.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import pytest

from store.settings import Settings
from tests.service.api_fixtures import assert_error, auth, live_server
from tests.service.conftest import OwnerKey
from tests.service.raw_http import answered, open_request, read_response, server_rss_bytes

pytestmark = pytest.mark.integration

JOBS = "/v1/fine_tuning/jobs"
MIB = 1024**2
QUICKLY_S = 3.0
"""Far below reading the bodies these tests offer (hundreds of MB), tolerant of a busy machine."""
JSON = {"Content-Type": "application/json"}


def push_chunked(sock: socket.socket, most: int, chunk: bytes = b" " * (64 * 1024)) -> int:
    """Send `chunk`s (chunked transfer encoding) until the server answers or `most` bytes went; the bytes sent."""
    sent = 0
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    while sent < most and not answered(sock):
        try:
            sock.sendall(frame)
        except (BrokenPipeError, ConnectionResetError):
            break  # the server answered and closed
        sent += len(chunk)
    return sent


def test_without_a_valid_key_no_body_is_read(settings: Settings, owner_key: OwnerKey, tmp_path: Path) -> None:
    with live_server(tmp_path) as url, httpx.Client(base_url=url, timeout=10) as http:
        assert_error(http.post(JOBS, content=b"{not json", headers=JSON), 401, "invalid_api_key")
        assert_error(http.post(JOBS, content=b"{not json", headers={**JSON, **auth("xm-" + "0" * 40)}), 401,
                     "invalid_api_key")
        assert_error(http.post(JOBS, content=b"{not json", headers={**JSON, **auth(owner_key.key)}), 422,
                     "invalid_json")  # with the key, the body is read and judged
        rss_before = server_rss_bytes(http)

        start = time.monotonic()
        declared = open_request(url, "POST", JOBS, {**JSON, "Content-Length": str(500 * MIB)}, b"[" * MIB)
        with declared:
            status, body = read_response(declared, timeout=QUICKLY_S)
        assert status == 401 and b'"invalid_api_key"' in body, (status, body)
        assert time.monotonic() - start < QUICKLY_S

        with open_request(url, "POST", JOBS, {**JSON, "Transfer-Encoding": "chunked"}) as chunked:
            sent = push_chunked(chunked, most=256 * MIB)
            status, body = read_response(chunked, timeout=QUICKLY_S)
        assert status == 401 and b'"invalid_api_key"' in body, (status, body)
        assert sent < 32 * MIB, f"{sent / MIB:.0f} MiB went in before the 401"
        growth = server_rss_bytes(http) - rss_before
        assert growth < 32 * MIB, f"the API grew by {growth / MIB:.0f} MiB"


def test_a_json_body_past_the_limit_is_413_before_it_is_buffered(settings: Settings, owner_key: OwnerKey,
                                                                 tmp_path: Path) -> None:
    headers = {**JSON, **auth(owner_key.key)}
    with live_server(tmp_path) as url, httpx.Client(base_url=url, timeout=10) as http:
        rss_before = server_rss_bytes(http)
        start = time.monotonic()
        with open_request(url, "POST", JOBS, {**headers, "Content-Length": str(2 * MIB)}) as declared:
            status, body = read_response(declared, timeout=QUICKLY_S)  # not a byte of the body was sent
        assert status == 413 and b'"request_too_large"' in body, (status, body)
        assert time.monotonic() - start < QUICKLY_S

        start = time.monotonic()
        with open_request(url, "POST", JOBS, {**headers, "Transfer-Encoding": "chunked"}) as chunked:
            sent = push_chunked(chunked, most=256 * MIB)
            status, body = read_response(chunked, timeout=QUICKLY_S)
        print(f"chunked JSON body: 413 after {sent / MIB:.1f} MiB sent, {time.monotonic() - start:.2f} s")
        assert status == 413 and b'"request_too_large"' in body, (status, body)
        assert sent < 32 * MIB, f"{sent / MIB:.0f} MiB went in before the 413"
        growth = server_rss_bytes(http) - rss_before
        assert growth < 32 * MIB, f"the API grew by {growth / MIB:.0f} MiB"

        error = assert_error(http.post(JOBS, content=b"{" + b" " * (2 * MIB), headers=headers), 413,
                             "request_too_large")
        assert str(MIB) in error["message"]
        # just under the limit, the body reaches the route whole: judged on its content, not its size
        near_limit = b'{"model": "tiny-bert", "training_file": "file-x", "suffix": "' + b"s" * (MIB - 100) + b'"}'
        assert_error(http.post(JOBS, content=near_limit, headers=headers), 422, param="suffix")
