"""Server-sent event streams of a job's events and metrics, against a real uvicorn server on SQLite
and on PostgreSQL: rows appended while a client listens arrive in order, `Last-Event-ID` (or
`?after=`) resumes after a row, an ended job closes its stream with `end`, another owner's job is
a 404 before anything streams, and an open stream holds no database transaction."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from store.db import dispose_engines, session_scope
from store.models import Job
from store.repositories import events, metrics
from store.repositories.metrics import NewPoint
from store.settings import reset_settings
from tests.service.api_fixtures import assert_error, auth, live_server, npz_bytes, upload
from tests.service.conftest import _configure, make_owner_key
from tests.service.test_api_requests import job_body

pytestmark = pytest.mark.integration

JOBS = "/v1/fine_tuning/jobs"
READ_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Server:
    backend: str
    http: httpx.Client
    alice: str
    bob: str
    file_id: str

    def new_job(self) -> str:
        created = self.http.post(JOBS, headers=auth(self.alice), json=job_body(self.file_id))
        assert created.status_code == 200, created.text
        return str(created.json()["id"])


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server per backend, polling every 50 ms and sending a keep-alive every 0.5 s."""
    with serving(request, tmp_path_factory) as running_server:
        yield running_server


@contextmanager
def serving(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, **settings: str
            ) -> Iterator[Server]:
    """A real server on `request.param`'s backend with alice's file, polling every 50 ms and sending
    a keep-alive every 0.5 s; `settings` are more XMODAL_* values for it."""
    from migrations import upgrade

    data_dir = tmp_path_factory.mktemp(f"streams-{request.param}")
    env = {"data_dir": str(data_dir), "stream_poll_seconds": "0.05", "stream_keepalive_seconds": "0.5",
           "rate_limit_per_minute": "0", **settings}
    if request.param == "postgresql":
        env["database_url"] = request.getfixturevalue("postgres_database_url")
    with pytest.MonkeyPatch.context() as monkeypatch:
        configured = _configure(monkeypatch, **env)
        upgrade(configured.database_url)
        alice = make_owner_key(f"streams-alice-{request.param}").key
        bob = make_owner_key(f"streams-bob-{request.param}").key
        with live_server(data_dir) as url, httpx.Client(base_url=url, timeout=READ_TIMEOUT_S) as http:
            file_id = upload(http, alice, npz_bytes()).json()["id"]
            yield Server(request.param, http, alice, bob, file_id)
        dispose_engines()
        reset_settings()


def sse(response: httpx.Response, comments: bool = False) -> Iterator[dict[str, str]]:
    """The stream's events as `{"event", "id", "data"}` dicts (fields the server sent); comments
    (keep-alives) as `{"comment": ...}` when asked for."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line.startswith(":"):
            if comments:
                yield {"comment": line[1:].strip()}
        elif line:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        elif fields:
            yield fields
            fields = {}


@contextmanager
def stream(server: Server, job_id: str, kind: str = "events", api_key: str | None = None,
           **options: Any) -> Iterator[httpx.Response]:
    """An open stream; `options` are query parameters, besides `headers`."""
    with server.http.stream("GET", f"{JOBS}/{job_id}/{kind}/stream", headers={**auth(api_key or server.alice),
                            **options.pop("headers", {})}, params=options) as response:
        yield response


def add_events(job_id: str, *messages: str) -> list[int]:
    with session_scope() as session:
        return [events.append(session, job_id, stage="refine", message=message).id for message in messages]


def finish(job_id: str, status: str = "succeeded") -> None:
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.status = status


def listed(server: Server, job_id: str, kind: str, **params: Any) -> list[dict[str, Any]]:
    page = server.http.get(f"{JOBS}/{job_id}/{kind}", headers=auth(server.alice), params={"limit": 100, **params})
    return list(page.json()["data"])


def test_rows_appended_while_listening_arrive_then_end_closes_the_stream(server: Server) -> None:
    job_id = server.new_job()
    add_events(job_id, "first")
    with stream(server, job_id) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        received = sse(response)
        assert next(received)["event"] == "event"
        add_events(job_id, "second", "third")
        got = [next(received), next(received)]
        add_events(job_id, "last words")
        finish(job_id, "failed")
        rest = list(received)  # ends: the server closes the stream after `end`
    *tail, end = rest
    assert [item["event"] for item in got + tail] == ["event"] * 3 and end["event"] == "end" and "id" not in end
    sent = [json.loads(item["data"]) for item in got + tail]
    assert [item["message"] for item in sent] == ["second", "third", "last words"]
    assert sent == listed(server, job_id, "events")[1:]  # the list endpoint's objects, exactly
    assert [int(item["id"]) for item in got + tail] == [item["id"] for item in sent]
    assert json.loads(end["data"])["status"] == "failed" and json.loads(end["data"])["id"] == job_id


def test_last_event_id_or_after_resumes_after_that_row(server: Server) -> None:
    job_id = server.new_job()
    ids = add_events(job_id, *(f"event {i}" for i in range(5)))
    finish(job_id)

    def resumed(**options: Any) -> list[str]:
        with stream(server, job_id, **options) as response:
            return [item.get("id", "end") for item in sse(response)]

    later = [str(row_id) for row_id in ids[2:]] + ["end"]
    assert resumed(headers={"Last-Event-ID": str(ids[1])}) == later
    assert resumed(after=ids[1]) == later
    assert resumed(after=ids[3], headers={"Last-Event-ID": str(ids[1])}) == later  # the header wins
    assert resumed(headers={"Last-Event-ID": str(ids[-1])}) == ["end"]


def test_metrics_stream_filters_by_key_and_split(server: Server) -> None:
    job_id = server.new_job()
    with session_scope() as session:
        metrics.append_many(session, job_id, [NewPoint("loss", 1.0 / (s + 1), s, "train", 0) for s in range(4)]
                            + [NewPoint("accuracy", 0.5, 3, "validation", 0), NewPoint("loss", 0.9, 3, "validation")])
    finish(job_id)
    with stream(server, job_id, "metrics", key="loss", split="train") as response:
            items = list(sse(response))
    points = [json.loads(item["data"]) for item in items if item["event"] == "metric"]
    assert points == listed(server, job_id, "metrics", key="loss", split="train")
    assert [(p["key"], p["split"], p["step"]) for p in points] == [("loss", "train", s) for s in range(4)]
    assert items[-1]["event"] == "end"


def test_another_owners_or_unknown_job_is_a_404_before_streaming(server: Server) -> None:
    job_id = server.new_job()
    for kind in ("events", "metrics"):
        with stream(server, job_id, kind, api_key=server.bob) as response:
            response.read()
            assert_error(response, 404, "job_not_found")
        with stream(server, "ftjob-doesnotexist", kind) as response:
            response.read()
            assert_error(response, 404, "job_not_found")
    with stream(server, job_id, headers={"Last-Event-ID": "abc"}) as response:
        response.read()
        assert_error(response, 422, "invalid_parameter", "Last-Event-ID")
    assert_error(server.http.get(f"{JOBS}/{job_id}/events/stream"), 401, "invalid_api_key")


def open_streams(server: Server) -> float:
    families = text_string_to_metric_families(server.http.get("/metrics").text)
    return next(family.samples[0].value for family in families if family.name == "xmodal_sse_streams_open")


def test_a_quiet_stream_sends_keepalives_holds_no_transaction_and_stops_when_the_client_goes(server: Server) -> None:
    job_id = server.new_job()
    with stream(server, job_id) as response:
        received = sse(response, comments=True)  # held: dropping the iterator would close the connection
        assert "comment" in next(received)  # nothing to send yet: a keep-alive within 0.5 s
        assert open_streams(server) == 1
        if server.backend == "postgresql":
            time.sleep(1.0)  # a session held across polls would sit idle in its transaction all along
            with session_scope() as session:
                held = session.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                           "AND state = 'idle in transaction' AND now() - state_change > '0.5 s'"))
            assert held == 0
    deadline = time.monotonic() + 5
    while open_streams(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert open_streams(server) == 0
