"""Repositories on SQLite and PostgreSQL: owner isolation, paging, job lifecycle transitions."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from store.db import session_scope
from store.models import Job, utcnow
from store.repositories import checkpoints, events, files, idempotency, jobs, keys, metrics, quotas
from store.repositories.metrics import NewPoint


def _file(session: Session, owner_id: str, name: str = "train.npz") -> str:
    return files.create(session, owner_id=owner_id, filename=name, purpose="fine-tune", bytes=10,
                        sha256="a" * 64, status="processed", info={"samples": 4}).id


def _job(session: Session, owner_id: str, **kw: object) -> Job:
    file_id = _file(session, owner_id)
    return jobs.create(session, owner_id=owner_id, model="tiny-bert", method="orca", config={"method": "orca"},
                       training_file_id=file_id, **kw)  # type: ignore[arg-type]


def _owners(session: Session) -> tuple[str, str]:
    return keys.get_or_create_owner(session, "alice").id, keys.get_or_create_owner(session, "bob").id


def test_keys_authenticate_and_revoke(session: Session) -> None:
    plaintext = keys.create_key(session, "alice")
    assert plaintext.startswith("xm-") and len(plaintext) > 40
    owner = keys.authenticate(session, plaintext)
    assert owner is not None and owner.name == "alice"
    assert keys.authenticate(session, plaintext + "x") is None
    second = keys.create_key(session, "alice")
    assert keys.authenticate(session, second).id == owner.id  # type: ignore[union-attr]
    revoked = keys.revoke(session, plaintext[:12])
    assert revoked.revoked_at is not None
    assert keys.authenticate(session, plaintext) is None
    assert keys.authenticate(session, second) is not None
    with pytest.raises(keys.KeyNotFound, match="no key matches"):
        keys.revoke(session, "key-nope")


def test_files_are_scoped_to_their_owner_and_soft_deleted(session: Session) -> None:
    alice, bob = _owners(session)
    file_id = _file(session, alice)
    assert files.get(session, alice, file_id) is not None
    assert files.get(session, bob, file_id) is None
    assert files.delete(session, bob, file_id) is None
    assert files.list_files(session, bob).items == []
    assert files.delete(session, alice, file_id) is not None
    assert files.get(session, alice, file_id) is None
    assert files.list_files(session, alice).items == []
    assert files.blob_of(session, file_id) == "a" * 64  # the worker still finds a job's data


def test_job_list_pages_newest_first_with_cursor(session: Session) -> None:
    alice, bob = _owners(session)
    created = [_job(session, alice).id for _ in range(5)]
    _job(session, bob)
    first = jobs.list_jobs(session, alice, limit=2)
    assert [j.id for j in first.items] == created[::-1][:2] and first.has_more
    second = jobs.list_jobs(session, alice, after=first.items[-1].id, limit=2)
    third = jobs.list_jobs(session, alice, after=second.items[-1].id, limit=2)
    seen = [j.id for j in first.items + second.items + third.items]
    assert seen == created[::-1] and not third.has_more
    assert jobs.list_jobs(session, bob, after=created[0]).items == []  # another owner's cursor
    assert jobs.list_jobs(session, alice, status="running").items == []


def test_idempotency_keys_are_per_owner_and_endpoint_and_expire(session: Session) -> None:
    alice, bob = _owners(session)
    job = _job(session, alice)
    digest = idempotency.fingerprint({"b": [1, 2], "a": "é"})
    assert digest == idempotency.fingerprint({"a": "é", "b": [1, 2]}) != idempotency.fingerprint({"a": "e", "b": [1, 2]})
    idempotency.record(session, owner_id=alice, endpoint="jobs", key="k1", fingerprint=digest, resource_id=job.id)
    found = idempotency.find(session, alice, "jobs", "k1", ttl_seconds=60)
    assert found is not None and (found.resource_id, found.fingerprint) == (job.id, digest)
    assert idempotency.find(session, bob, "jobs", "k1", 60) is None
    assert idempotency.find(session, alice, "files", "k1", 60) is None
    idempotency.record(session, owner_id=bob, endpoint="jobs", key="k1", fingerprint=digest, resource_id="x")
    found.created_at = utcnow() - timedelta(seconds=61)
    session.flush()
    assert idempotency.find(session, alice, "jobs", "k1", ttl_seconds=60) is None  # expired: deleted on the way
    idempotency.record(session, owner_id=alice, endpoint="jobs", key="k1", fingerprint="f", resource_id=job.id)
    assert idempotency.find(session, alice, "jobs", "k1", 60).fingerprint == "f"  # type: ignore[union-attr]
    assert idempotency.find(session, bob, "jobs", "k1", 60) is not None


def test_quotas_count_unfinished_jobs_and_live_file_bytes(session: Session) -> None:
    alice, bob = _owners(session)
    queued, running, done = (_job(session, alice) for _ in range(3))
    jobs.claim(session, running.id, "w1", lease_seconds=60)
    jobs.claim(session, done.id, "w1", lease_seconds=60)
    jobs.finish(session, done.id, "w1", "succeeded")
    quotas.lock(session, alice)
    assert quotas.active_jobs(session, alice) == 2 and quotas.active_jobs(session, bob) == 0
    assert quotas.stored_bytes(session, alice) == 30  # each job made a 10-byte file; blobs shared, bytes counted
    files.delete(session, alice, queued.training_file_id)
    assert quotas.stored_bytes(session, alice) == 20 and quotas.stored_bytes(session, bob) == 0


def test_claim_heartbeat_finish(session: Session) -> None:
    alice, _ = _owners(session)
    job = _job(session, alice)
    claimed = jobs.claim(session, job.id, "w1", lease_seconds=60)
    assert claimed is not None and claimed.status == "running" and claimed.attempt == 1
    assert claimed.lease_owner == "w1" and claimed.started_at is not None
    assert claimed.lease_expires_at > utcnow()  # type: ignore[operator]
    assert jobs.claim(session, job.id, "w2", lease_seconds=60) is None
    assert jobs.heartbeat(session, job.id, "w1", 60)
    assert not jobs.heartbeat(session, job.id, "w2", 60)
    assert jobs.set_progress(session, job.id, "w1", {"stage": "refine", "step": 1, "total_steps": 4})
    assert not jobs.finish(session, job.id, "w2", "succeeded")
    assert jobs.finish(session, job.id, "w1", "succeeded", result={"summary": {}})
    done = jobs.get(session, alice, job.id)
    assert done is not None and done.status == "succeeded" and done.finished_at is not None
    assert done.lease_owner is None and done.progress["step"] == 1  # type: ignore[index]
    assert jobs.claim(session, job.id, "w3", lease_seconds=60) is None
    with pytest.raises(ValueError):
        jobs.finish(session, job.id, "w1", "running")


def test_expired_lease_can_be_stolen_and_old_holder_loses_it(session: Session) -> None:
    alice, _ = _owners(session)
    job = _job(session, alice)
    assert jobs.claim(session, job.id, "w1", lease_seconds=-1) is not None  # already expired
    stolen = jobs.claim(session, job.id, "w2", lease_seconds=60)
    assert stolen is not None and stolen.attempt == 2 and stolen.lease_owner == "w2"
    assert not jobs.heartbeat(session, job.id, "w1", 60)


def test_cancel_queued_is_immediate_and_running_sets_the_flag(session: Session) -> None:
    alice, bob = _owners(session)
    queued, running, done = _job(session, alice), _job(session, alice), _job(session, alice)
    jobs.claim(session, running.id, "w", 60)
    jobs.claim(session, done.id, "w", 60)
    jobs.finish(session, done.id, "w", "succeeded")
    assert jobs.request_cancel(session, bob, queued.id) is None
    assert jobs.request_cancel(session, alice, queued.id).status == "cancelled"  # type: ignore[union-attr]
    assert jobs.claim(session, queued.id, "w", 60) is None
    after = jobs.request_cancel(session, alice, running.id)
    assert after is not None and after.status == "running" and after.cancel_requested
    assert jobs.is_cancel_requested(session, running.id)
    assert jobs.request_cancel(session, alice, done.id).status == "succeeded"  # type: ignore[union-attr]


def test_requeue_expired_requeues_then_fails_after_max_attempts(session: Session) -> None:
    alice, _ = _owners(session)
    job = _job(session, alice, max_attempts=2)
    jobs.claim(session, job.id, "w1", lease_seconds=-1)
    sweep = jobs.requeue_expired(session)
    assert sweep.requeued == [job.id]
    again = jobs.get(session, alice, job.id)
    assert again.status == "queued" and again.attempt == 1 and again.lease_owner is None  # type: ignore[union-attr]
    assert jobs.claim(session, job.id, "w2", lease_seconds=-1).attempt == 2  # type: ignore[union-attr]
    sweep = jobs.requeue_expired(session, utcnow() + timedelta(seconds=1))
    assert sweep.failed == [job.id]
    failed = jobs.get(session, alice, job.id)
    assert failed.status == "failed" and failed.error["code"] == "max_attempts"  # type: ignore[index,union-attr]
    messages = [e.message for e in events.list_events(session, alice, job.id).items]
    assert any("re-queued" in m for m in messages) and any("giving up" in m for m in messages)


def test_requeue_expired_cancels_when_cancel_was_requested(session: Session) -> None:
    alice, _ = _owners(session)
    job = _job(session, alice)
    jobs.claim(session, job.id, "w1", lease_seconds=-1)
    jobs.request_cancel(session, alice, job.id)
    assert jobs.requeue_expired(session).cancelled == [job.id]
    assert jobs.get(session, alice, job.id).status == "cancelled"  # type: ignore[union-attr]


def test_events_metrics_checkpoints_are_scoped_through_the_job(session: Session) -> None:
    alice, bob = _owners(session)
    job = _job(session, alice)
    ids = [events.append(session, job.id, stage="setup", message=f"e{i}", data={"i": i}).id for i in range(3)]
    page = events.list_events(session, alice, job.id, limit=2)
    assert [e.id for e in page.items] == ids[:2] and page.has_more
    rest = events.list_events(session, alice, job.id, after=ids[1])
    assert [e.message for e in rest.items] == ["e2"] and not rest.has_more
    assert events.list_events(session, bob, job.id).items == []

    metrics.append_many(session, job.id, [NewPoint("loss", 1.0 / (s + 1), s, "train", 0) for s in range(10)]
                        + [NewPoint("accuracy", 0.5, 9, "validation", 0)])
    losses = metrics.list_metrics(session, alice, job.id, key="loss", min_step=3, max_step=5)
    assert [p.step for p in losses.items] == [3, 4, 5]
    assert len(metrics.list_metrics(session, alice, job.id, split="validation").items) == 1
    assert metrics.list_metrics(session, bob, job.id).items == []

    first = checkpoints.create(session, job.id, step=5, epoch=0, stage="refine", sha256="b" * 64, bytes=3)
    last = checkpoints.create(session, job.id, step=10, epoch=1, stage="refine", sha256="c" * 64, bytes=3, final=True)
    assert checkpoints.latest(session, job.id).id == last.id  # type: ignore[union-attr]
    assert [c.id for c in checkpoints.list_checkpoints(session, alice, job.id)] == [last.id, first.id]
    assert checkpoints.get(session, alice, job.id, first.id) is not None
    assert checkpoints.get(session, bob, job.id, first.id) is None
    assert checkpoints.list_checkpoints(session, bob, job.id) == []


def test_concurrent_claims_have_one_winner(backend_settings: object) -> None:
    """Many threads, each with its own connection, claim one job: exactly one gets it."""
    with session_scope() as s:
        alice, _ = _owners(s)
        job_id = _job(s, alice).id
    barrier = threading.Barrier(8)
    winners: list[str] = []

    def contend(worker: str) -> None:
        barrier.wait()
        with session_scope() as s:
            if jobs.claim(s, job_id, worker, 60) is not None:
                winners.append(worker)

    threads = [threading.Thread(target=contend, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    with session_scope() as s:
        job = s.get(Job, job_id)
        assert job is not None and job.lease_owner == winners[0] and job.attempt == 1
