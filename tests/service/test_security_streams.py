"""Attacks on the server-sent event streams (issue 12), against a real uvicorn server on SQLite and
on PostgreSQL: one key opening stream after stream is refused past its cap and the server's, and a
closed stream gives its slot back; a stream whose key is revoked ends promptly instead of going on."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest

from store.db import session_scope
from store.repositories import keys
from tests.service.api_fixtures import assert_error, auth, npz_bytes, upload
from tests.service.conftest import make_owner_key
from tests.service.test_api_requests import job_body
from tests.service.test_streams import JOBS, Server, add_events, serving, sse, stream

pytestmark = pytest.mark.integration

PER_KEY, IN_ALL = 3, 5
KEY_CHECK_S = 0.2
KEY_CACHE_S = 0.5  # the server trusts a key it checked this long: another process's revoke waits for it


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(request, tmp_path_factory, max_streams_per_key=str(PER_KEY), max_streams=str(IN_ALL),
                 stream_key_check_seconds=str(KEY_CHECK_S), api_key_cache_seconds=str(KEY_CACHE_S)) as running_server:
        yield running_server


def job_of(server: Server, key: str) -> str:
    """A queued job of the key's owner (it never ends: its streams stay open until closed)."""
    file_id = upload(server.http, key, npz_bytes()).json()["id"]
    created = server.http.post(JOBS, headers=auth(key), json=job_body(file_id))
    assert created.status_code == 200, created.text
    return str(created.json()["id"])


def open_stream(stack: ExitStack, server: Server, job_id: str, key: str, kind: str = "events") -> httpx.Response:
    """A stream held open until `stack` closes; its status is known, its body not read."""
    return stack.enter_context(stream(server, job_id, kind, api_key=key))


def assert_too_many(response: httpx.Response, message_part: str) -> None:
    assert response.status_code == 429, "the stream was opened"  # before reading: an open stream never ends
    response.read()
    error = assert_error(response, 429, "too_many_streams")
    assert message_part in error["message"] and int(response.headers["Retry-After"]) > 0


def opens_within(server: Server, job_id: str, key: str, count: int, seconds: float = 5.0) -> bool:
    """Whether `count` more streams of `key` open together within `seconds` (a closed stream's slot
    comes back once the server notices the client went)."""
    deadline = time.monotonic() + seconds
    while True:
        with ExitStack() as stack:
            statuses = [open_stream(stack, server, job_id, key).status_code for _ in range(count)]
        if statuses == [200] * count:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def test_streams_past_the_keys_or_the_servers_cap_are_429_and_a_closed_stream_frees_its_slot(server: Server) -> None:
    alice_job, bob_job = server.new_job(), job_of(server, server.bob)
    with ExitStack() as alices, ExitStack() as bobs:
        held = [open_stream(alices, server, alice_job, server.alice, kind) for kind in ("events", "metrics", "events")]
        assert [response.status_code for response in held] == [200] * PER_KEY
        with stream(server, alice_job, api_key=server.alice) as refused:  # events and metrics count together
            assert_too_many(refused, "with this API key")
        # another key has slots of its own, up to the server's cap
        bob_statuses = [open_stream(bobs, server, bob_job, server.bob).status_code for _ in range(IN_ALL - PER_KEY)]
        assert bob_statuses == [200] * (IN_ALL - PER_KEY)
        with stream(server, bob_job, "metrics", api_key=server.bob) as refused:
            assert_too_many(refused, "this server")
        held[0].close()  # the client goes: its slot comes back
        assert opens_within(server, alice_job, server.alice, 1), "a closed stream kept its slot"
    assert opens_within(server, alice_job, server.alice, PER_KEY), "closed streams kept their slots"


def test_a_revoked_keys_stream_ends_with_an_error_event(server: Server) -> None:
    owner = make_owner_key(f"streams-revoked-{server.backend}-{time.monotonic_ns()}")
    job_id = job_of(server, owner.key)
    with stream(server, job_id, api_key=owner.key) as response:
        assert response.status_code == 200
        received = sse(response, comments=True)
        add_events(job_id, "before revocation")
        assert next(item for item in received if "comment" not in item)["event"] == "event"
        with session_scope() as session:
            keys.revoke(session, owner.key[:keys.DISPLAY_PREFIX_CHARS])
        revoked = time.monotonic()
        after: list[dict[str, str]] = []
        for item in received:  # keep-alives every 0.5 s keep this loop turning while the stream is open
            if "comment" not in item:
                after.append(item)
            if time.monotonic() - revoked > 5:
                break
        ended_after = time.monotonic() - revoked
    assert ended_after < 5 * KEY_CHECK_S + 1, f"the stream went on for {ended_after:.1f} s after revocation"
    assert [item["event"] for item in after] == ["error"]
    assert json.loads(after[0]["data"]) == {"error": {"code": "invalid_api_key",
                                                      "message": "the API key of this stream was revoked",
                                                      "param": None}}
    time.sleep(max(0.0, revoked + KEY_CACHE_S - time.monotonic()))  # revoked in this process, not the server's
    assert_error(server.http.get(f"{JOBS}/{job_id}", headers=auth(owner.key)), 401, "invalid_api_key")
