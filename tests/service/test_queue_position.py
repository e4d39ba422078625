"""Queue position and estimated start: the repository on SQLite and PostgreSQL, and the job object
over the API, in a fixed number of queries however long the page."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import event, inspect
from sqlalchemy.orm import Session

from store.db import get_engine, session_scope
from store.models import Job, utcnow
from store.repositories import jobs
from tests.service.api_fixtures import client_fixture  # noqa: F401 (registers the `client` fixture)
from tests.service.api_fixtures import auth
from tests.service.conftest import OwnerKey
from tests.service.test_api_requests import create_job, file_id, job_body  # noqa: F401 (`file_id` is a fixture)
from tests.service.test_store_repositories import _job, _owners

LEASE_S = 120.0
NOW = datetime(2030, 1, 1, 12, tzinfo=UTC)


def _at(session: Session, job: Job, minutes_ago: float, **state: object) -> Job:
    """Back-date `job` (queue order is creation order) and set its state."""
    job.created_at = NOW - timedelta(minutes=minutes_ago)
    for name, value in state.items():
        setattr(job, name, value)
    session.flush()
    return job


def _finished(session: Session, owner_id: str, seconds: float) -> None:
    started = NOW - timedelta(hours=1)
    _at(session, _job(session, owner_id), 90, status="succeeded", started_at=started,
        finished_at=started + timedelta(seconds=seconds))


def _running(session: Session, owner_id: str, worker: str, beat_s_ago: float) -> None:
    _at(session, _job(session, owner_id), 80, status="running", lease_owner=worker, started_at=NOW,
        heartbeat_at=NOW - timedelta(seconds=beat_s_ago), lease_expires_at=NOW + timedelta(seconds=LEASE_S))


def test_positions_count_every_owners_queued_jobs_oldest_first(session: Session) -> None:
    alice, bob = _owners(session)
    a1 = _at(session, _job(session, alice), 30)
    b1 = _at(session, _job(session, bob), 20)
    a2 = _at(session, _job(session, alice), 10)
    cancelled = _at(session, _job(session, alice), 40, status="cancelled")
    _running(session, bob, "w1", beat_s_ago=1)
    slots = jobs.queue_slots(session, [a2.id, a1.id, cancelled.id], LEASE_S, now=NOW)
    assert {job_id: slot.position for job_id, slot in slots.items()} == {a1.id: 1, a2.id: 3}
    assert jobs.queue_slots(session, [b1.id], LEASE_S, now=NOW)[b1.id].position == 2
    assert all(slot.estimated_start is None for slot in slots.values())  # no job has finished yet
    assert jobs.queue_slots(session, [], LEASE_S) == {} == jobs.queue_slots(session, [cancelled.id], LEASE_S)


def test_estimated_start_is_jobs_ahead_times_the_median_duration_over_live_workers(session: Session) -> None:
    alice, bob = _owners(session)
    for seconds in (60, 100, 300):
        _finished(session, bob, seconds)  # median 100 s
    _at(session, _job(session, alice), 80, status="failed", started_at=NOW, finished_at=NOW)  # not timed
    _running(session, bob, "w1", beat_s_ago=5)
    _running(session, bob, "w2", beat_s_ago=LEASE_S - 1)
    _running(session, bob, "dead", beat_s_ago=LEASE_S + 1)  # lost its worker: neither ahead nor a worker
    queued = [_at(session, _job(session, alice), 30 - i) for i in range(3)]
    slots = jobs.queue_slots(session, [job.id for job in queued], LEASE_S, now=NOW)
    start = int(NOW.timestamp())
    # ahead = the queued jobs before it + 2 live running ones, on 2 live workers
    assert [slots[job.id].estimated_start for job in queued] == [start + 100, start + 150, start + 200]


def test_with_no_live_worker_the_first_job_starts_now_and_one_worker_is_assumed(session: Session) -> None:
    alice, _ = _owners(session)
    _finished(session, alice, 40)
    first, second = (_at(session, _job(session, alice), minutes) for minutes in (2, 1))
    slots = jobs.queue_slots(session, [first.id, second.id], LEASE_S, now=NOW)
    assert (slots[first.id].estimated_start, slots[second.id].estimated_start) == (
        int(NOW.timestamp()), int(NOW.timestamp()) + 40)


def test_get_with_slot_reads_what_get_and_queue_slots_read(session: Session) -> None:
    """The job GET's one-statement read (a Core row with its position) against the ORM reads it
    replaced, on every kind of job; fails if a column, the owner scoping or a position differs."""
    alice, bob = _owners(session)
    _finished(session, bob, 100)
    _running(session, bob, "w1", beat_s_ago=1)
    queued = [_at(session, _job(session, owner), 30 - i) for i, owner in enumerate((alice, bob, alice))]
    others = [_at(session, _job(session, alice), 50, status=status) for status in ("cancelled", "succeeded")]
    attributes = [column.key for column in inspect(Job).column_attrs]
    for job in [*queued, *others]:
        if job.owner_id != alice:
            assert jobs.get_with_slot(session, alice, job.id, LEASE_S, now=NOW) is None  # bob's
            continue
        found = jobs.get_with_slot(session, alice, job.id, LEASE_S, now=NOW)
        assert found is not None
        row, slot = found
        assert {name: getattr(row, name) for name in attributes} == {name: getattr(job, name) for name in attributes}
        assert slot == jobs.queue_slots(session, [job.id], LEASE_S, now=NOW).get(job.id)
    assert [jobs.get_with_slot(session, alice, job.id, LEASE_S, now=NOW)[1] for job in (queued[0], queued[2])] == [
        jobs.QueueSlot(1, int(NOW.timestamp()) + 100), jobs.QueueSlot(3, int(NOW.timestamp()) + 300)]
    assert jobs.get_with_slot(session, alice, "ftjob-none", LEASE_S) is None


@contextmanager
def counted_statements() -> Iterator[list[str]]:
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_job_object_carries_its_slot_and_a_list_costs_the_same_queries_at_any_length(
        client: TestClient, owner_key: OwnerKey, file_id: str) -> None:  # noqa: F811
    headers = auth(owner_key.key)
    created = [create_job(client, owner_key.key, **job_body(file_id)).json() for _ in range(6)]
    assert [job["queue_position"] for job in created] == [1, 2, 3, 4, 5, 6]
    assert all(job["estimated_start"] is None for job in created)  # no history yet
    with session_scope() as db:
        for seconds, job in ((30, created[0]), (90, created[1])):
            row = db.get(Job, job["id"])
            assert row is not None
            row.status, row.started_at = "succeeded", utcnow() - timedelta(seconds=seconds)
            row.finished_at = utcnow()
    cancelled = client.post(f"/v1/fine_tuning/jobs/{created[3]['id']}/cancel", headers=headers).json()
    assert cancelled["queue_position"] is None and cancelled["estimated_start"] is None
    before = int(utcnow().timestamp())
    third = client.get(f"/v1/fine_tuning/jobs/{created[2]['id']}", headers=headers).json()
    assert third["queue_position"] == 1 and before <= third["estimated_start"] <= before + 2
    sixth = client.get(f"/v1/fine_tuning/jobs/{created[5]['id']}", headers=headers).json()
    assert sixth["queue_position"] == 3 and 120 <= sixth["estimated_start"] - before <= 122  # 2 ahead × 60 s

    for job, expected in ((created[2], 2), (created[3], 1)):  # queued: row + position, then the pace
        with counted_statements() as statements:
            client.get(f"/v1/fine_tuning/jobs/{job['id']}", headers=headers).raise_for_status()
        assert len(statements) == expected, statements

    queries = []
    for limit in (1, 6):
        with counted_statements() as statements:
            page = client.get("/v1/fine_tuning/jobs", params={"limit": limit}, headers=headers).json()
        queries.append(len(statements))
    assert [job["queue_position"] for job in page["data"]] == [3, 2, None, 1, None, None]
    assert queries[0] == queries[1], queries  # positions for the whole page in one go: no query per job
