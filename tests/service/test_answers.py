"""Polled reads answered from memory until their job changes (api/answers.py, api/live.py `JobReads`).

The shared-read rules on their own (asyncio, no database), then the app in-process on PostgreSQL
with its listener, counting the statements each GET sends: a repeated GET sends none, and every
visible change to the job (a progress write, a requested cancel, a new event) reaches the next GET
within a second, while a heartbeat does not cost a read. On SQLite, with no listener, every GET reads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from api import answers
from api.live import JobReads, Listener
from api.main import create_app
from store.db import session_scope
from store.models import Job, utcnow
from store.repositories import events
from store.settings import Settings
from tests.service.api_fixtures import auth, npz_bytes, upload
from tests.service.conftest import OwnerKey, make_owner_key
from tests.service.test_api_requests import job_body
from tests.service.test_queue_position import counted_statements

JOBS = "/v1/fine_tuning/jobs"
NOTIFIED_WITHIN_S = 1.0


# --- JobReads -----------------------------------------------------------------------------------


class Reads:
    """A read that counts its calls and answers with its own number, or with `answer` when set."""

    def __init__(self, answer: Any = ...) -> None:
        self.calls, self.answer = 0, answer
        self.gate: asyncio.Event | None = None

    async def __call__(self) -> Any:
        self.calls += 1
        number = self.calls
        if self.gate is not None:
            await self.gate.wait()
        return number if self.answer is ... else self.answer


def test_a_read_serves_every_caller_until_its_job_is_forgotten() -> None:
    async def scenario() -> None:
        shared, read = JobReads(), Reads()
        assert [await shared.get("job-a", "k", read) for _ in range(3)] == [1, 1, 1]
        assert await shared.get("job-a", "other key", read) == 2
        shared.forget("job-a")
        assert await shared.get("job-a", "k", read) == 3

    asyncio.run(scenario())


@pytest.mark.parametrize("change", ["supersede", "forget"])  # a notification; a write through this process
def test_a_read_running_when_its_job_changes_serves_its_waiters_but_is_not_kept(change: str) -> None:
    async def scenario() -> None:
        shared, read = JobReads(), Reads()
        read.gate = asyncio.Event()
        waiting = asyncio.ensure_future(shared.get("job-a", "k", read))
        await asyncio.sleep(0)
        getattr(shared, change)("job-a")  # the job changed while the read was on its way
        later = asyncio.ensure_future(shared.get("job-a", "k", read))  # must not take the older read
        await asyncio.sleep(0)
        read.gate.set()
        assert await waiting == 1 and await later == 2
        assert await shared.get("job-a", "k", read) == 2

    asyncio.run(scenario())


def test_a_notified_result_answers_while_its_replacement_is_read_if_servable() -> None:
    """The poll that starts the read a notification causes waits for it; polls during that read get the
    superseded answer; a caller that must see the change (no `servable`: a stream) waits for it;
    after `forget` nothing old answers."""

    async def scenario() -> None:
        shared, read = JobReads(), Reads()
        poll = lambda: shared.get("job-a", "k", read, servable=lambda _: True)  # noqa: E731
        assert await poll() == 1
        shared.supersede("job-a")
        read.gate = asyncio.Event()
        first = asyncio.ensure_future(poll())  # the first poll after the notification waits for the read
        await asyncio.sleep(0)
        assert not first.done()
        assert [await poll() for _ in range(3)] == [1, 1, 1]  # the others meanwhile: the old answer
        await asyncio.sleep(0)
        assert read.calls == 2  # one read for them all
        stream = asyncio.ensure_future(shared.get("job-a", "k", read))
        await asyncio.sleep(0)
        assert not stream.done()
        read.gate.set()
        assert await first == 2 and await stream == 2 and await poll() == 2 and read.calls == 2  # kept

        read.gate = asyncio.Event()
        shared.forget("job-a")
        waiting = asyncio.ensure_future(poll())
        await asyncio.sleep(0)
        assert not waiting.done()  # nothing read before a forget answers
        read.gate.set()
        assert await waiting == 3

    asyncio.run(scenario())


def test_a_question_nobody_asked_since_the_last_notification_is_dropped_at_the_next() -> None:
    """A follower asks for the page after the last event it saw, a new key after every new event: the
    old ones must not pile up for the life of the job."""

    async def scenario() -> None:
        shared, read = JobReads(), Reads()
        for after in (1, 2, 3):
            await shared.get("job-a", ("events", after), read, servable=lambda _: True)
            shared.supersede("job-a")  # a new event: the follower moves on
        assert len(shared) == 1  # the page after 3, kept to serve while it is read again
        await shared.get("job-a", "job", read)
        shared.supersede("job-a")
        assert len(shared) == 1  # the job GET, asked since the previous notification
        shared.supersede("job-a")
        assert len(shared) == 0

    asyncio.run(scenario())


def test_nothing_found_a_failure_and_a_stale_answer_are_not_kept() -> None:
    async def scenario() -> None:
        shared = JobReads()
        nothing = Reads(answer=None)
        assert [await shared.get("job-a", "k", nothing) for _ in range(2)] == [None, None]
        assert nothing.calls == 2

        async def failing() -> int:
            raise RuntimeError("database gone")

        with pytest.raises(RuntimeError):
            await shared.get("job-b", "k", failing)
        read = Reads()
        assert await shared.get("job-b", "k", read) == 1

        stale = Reads()
        assert [await shared.get("job-c", "k", stale, fresh=lambda n: n > 1) for _ in range(3)] == [1, 2, 2]

    asyncio.run(scenario())


def test_an_aged_result_answers_while_its_replacement_is_read_if_still_servable() -> None:
    async def scenario() -> None:
        shared, read = JobReads(), Reads()
        aged = {"fresh": True}
        get = lambda servable: shared.get("job-a", "k", read, fresh=lambda _: aged["fresh"],  # noqa: E731
                                           servable=lambda _: servable)
        assert await get(True) == 1
        aged["fresh"] = False
        read.gate = asyncio.Event()
        assert [await get(True) for _ in range(3)] == [1, 1, 1]  # the old answer, and one read under way
        await asyncio.sleep(0)
        assert read.calls == 2
        aged["fresh"] = True
        read.gate.set()
        await asyncio.sleep(0)
        assert await get(True) == 2

        aged["fresh"], read.gate = False, asyncio.Event()
        waiting = asyncio.ensure_future(get(False))  # too old to serve: the caller waits for the read
        await asyncio.sleep(0)
        assert not waiting.done()
        aged["fresh"] = True
        read.gate.set()
        assert await waiting == 3

    asyncio.run(scenario())


def test_at_most_max_jobs_are_held_least_recently_asked_dropped_first() -> None:
    async def scenario() -> None:
        shared, read = JobReads(max_jobs=2), Reads()
        for job in ("a", "b", "a", "c"):  # "b" is the least recently asked when "c" comes
            await shared.get(job, "k", read)
        assert read.calls == 3 and len(shared) == 2
        assert await shared.get("a", "k", read) == 1
        assert await shared.get("b", "k", read) == 4

    asyncio.run(scenario())


def test_a_listener_that_is_not_listening_shares_nothing() -> None:
    async def scenario() -> None:
        listener, read = Listener(), Reads()
        assert [await listener.read_shared("job-a", "k", read) for _ in range(2)] == [1, 2]

    asyncio.run(scenario())


# --- the app on PostgreSQL ----------------------------------------------------------------------


@pytest.fixture
def pg_client(pg_settings: Settings) -> Iterator[TestClient]:
    """The app on PostgreSQL, once its listener listens."""
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        deadline = time.monotonic() + 10.0
        while not client.app.state.stream_listener.listening:  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, "the listener did not start"
            time.sleep(0.02)
        yield client


@pytest.fixture
def pg_owner(pg_settings: Settings) -> OwnerKey:
    return make_owner_key("answers-alice")


def new_job(client: TestClient, owner: OwnerKey) -> str:
    file_id = upload(client, owner.key, npz_bytes()).json()["id"]
    response = client.post(JOBS, headers=auth(owner.key), json=job_body(file_id))
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def set_job(job_id: str, **values: Any) -> None:
    """A write from outside the API (as the worker makes), committed."""
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))


def get(client: TestClient, owner: OwnerKey, path: str) -> tuple[dict[str, Any], int]:
    """The response's JSON and how many statements answering it sent."""
    with counted_statements() as statements:
        response = client.get(path, headers=auth(owner.key))
    assert response.status_code == 200, response.text
    return response.json(), len(statements)


def until(client: TestClient, owner: OwnerKey, path: str, seen: Any) -> dict[str, Any]:
    """GET `path` until `seen(body)`, failing after NOTIFIED_WITHIN_S."""
    deadline = time.monotonic() + NOTIFIED_WITHIN_S
    while True:
        body, _ = get(client, owner, path)
        if seen(body):
            return body
        assert time.monotonic() < deadline, f"not seen within {NOTIFIED_WITHIN_S} s: {body}"
        time.sleep(0.01)


def test_a_repeated_job_get_reads_nothing_until_the_job_changes(pg_client: TestClient, pg_owner: OwnerKey) -> None:
    job_id = new_job(pg_client, pg_owner)
    set_job(job_id, status="running", started_at=utcnow(), attempt=1)
    path = f"{JOBS}/{job_id}"
    until(pg_client, pg_owner, path, lambda job: job["status"] == "running")
    assert [get(pg_client, pg_owner, path)[1] for _ in range(5)] == [0] * 5

    set_job(job_id, heartbeat_at=utcnow(), lease_expires_at=utcnow())  # nothing a client sees
    time.sleep(0.3)
    assert get(pg_client, pg_owner, path)[1] == 0

    progress = {"stage": "refine", "step": 7, "total_steps": 10, "fraction": 0.7, "eta_seconds": 3.0,
                "steps_per_second": 1.0}
    set_job(job_id, progress=progress)
    assert until(pg_client, pg_owner, path, lambda job: job["progress"] is not None)["progress"]["step"] == 7
    set_job(job_id, cancel_requested=True)
    until(pg_client, pg_owner, path, lambda job: job["cancel_requested"])
    set_job(job_id, attempt=2)
    until(pg_client, pg_owner, path, lambda job: job["attempt"] == 2)
    assert get(pg_client, pg_owner, path)[1] == 0

    bob = make_owner_key("answers-bob")
    assert pg_client.get(path, headers=auth(bob.key)).status_code == 404  # alice's answer is hers


def test_a_lone_poller_sees_a_change_at_its_first_poll_after_the_notification(pg_client: TestClient,
                                                                            pg_owner: OwnerKey) -> None:
    """The poll that finds its answer superseded reads (the others meanwhile may get the old one): a
    client polling every few seconds is not shown the old state one poll longer."""
    job_id = new_job(pg_client, pg_owner)
    set_job(job_id, status="running", started_at=utcnow(), attempt=1)
    path = f"{JOBS}/{job_id}"
    until(pg_client, pg_owner, path, lambda job: job["status"] == "running")
    assert get(pg_client, pg_owner, path)[1] == 0  # answered from memory
    set_job(job_id, status="succeeded", finished_at=utcnow())
    time.sleep(2 * NOTIFIED_WITHIN_S)  # the notification is in; no poll came meanwhile
    job, statements = get(pg_client, pg_owner, path)
    assert job["status"] == "succeeded" and statements > 0


def test_a_queued_jobs_answer_follows_the_queue_and_ages_with_time(
        pg_client: TestClient, pg_owner: OwnerKey, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = new_job(pg_client, pg_owner), new_job(pg_client, pg_owner)
    path = f"{JOBS}/{second}"
    job, reads = get(pg_client, pg_owner, path)
    assert job["queue_position"] == 2 and reads >= 1
    assert get(pg_client, pg_owner, path)[1] == 0
    set_job(first, status="running")  # notifies `first` and the queue, not `second`
    assert until(pg_client, pg_owner, path, lambda job: job["queue_position"] == 1)

    monkeypatch.setattr(answers, "QUEUED_MAX_AGE_S", (0.2, 0.2))  # the estimate drifts with time
    set_job(first, status="succeeded")  # answers read from now on age in 0.2 s
    time.sleep(0.1)
    get(pg_client, pg_owner, path)  # the old answer, while the new one is read
    time.sleep(0.3)
    with counted_statements() as statements:
        deadline = time.monotonic() + NOTIFIED_WITHIN_S
        while not statements and time.monotonic() < deadline:
            assert pg_client.get(path, headers=auth(pg_owner.key)).json()["queue_position"] == 1
            time.sleep(0.01)
    assert statements, "an aged answer was not read again"


def test_an_events_page_is_shared_until_a_new_event(pg_client: TestClient, pg_owner: OwnerKey) -> None:
    job_id = new_job(pg_client, pg_owner)
    path = f"{JOBS}/{job_id}/events"
    page, _ = get(pg_client, pg_owner, path)
    assert get(pg_client, pg_owner, path) == (page, 0)
    with session_scope() as session:
        events.append(session, job_id, stage="train", message="a new event")
    until(pg_client, pg_owner, path, lambda body: bool(body["data"]) and body["data"][-1]["message"] == "a new event")


def test_a_cancel_through_this_process_shows_at_once_whatever_the_notification(
        pg_client: TestClient, pg_owner: OwnerKey, monkeypatch: pytest.MonkeyPatch) -> None:
    job_id = new_job(pg_client, pg_owner)
    path = f"{JOBS}/{job_id}"
    assert get(pg_client, pg_owner, path)[0]["status"] == "queued"
    monkeypatch.setattr(Listener, "_dispatch", lambda *_: None)  # notifications arrive late, or never
    assert pg_client.post(f"{path}/cancel", headers=auth(pg_owner.key)).json()["status"] == "cancelled"
    assert get(pg_client, pg_owner, path)[0]["status"] == "cancelled"


def test_on_sqlite_every_get_reads(settings: Settings) -> None:
    owner = make_owner_key("answers-sqlite")
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        job_id = new_job(client, owner)
        assert [get(client, owner, f"{JOBS}/{job_id}")[1] >= 1 for _ in range(2)] == [True, True]
