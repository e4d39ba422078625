"""Fine-tuning jobs and their lifecycle.

Every state change is one conditional UPDATE whose WHERE clause states the transition it allows,
so two workers (or a worker and a cancelling user) racing on the same row cannot both win:
the loser's UPDATE matches no row. Lease times come from the worker's clock, so hosts sharing a
database keep their clocks in sync (NTP); the lease length dwarfs ordinary skew.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from statistics import median
from typing import Any

from sqlalchemy import Connection, Row, Update, and_, bindparam, case, distinct, func, inspect, or_, select, tuple_, update
from sqlalchemy.orm import Session, aliased

from store.models import Job, utcnow
from store.repositories import events
from store.repositories.scoping import Page, newest_first_page, owned, select_owned


def create(session: Session, *, owner_id: str, model: str, method: str, config: dict[str, Any],
           training_file_id: str, validation_file_id: str | None = None, seed: int | None = None,
           suffix: str | None = None, metadata: dict[str, Any] | None = None, max_attempts: int = 3,
           experiment_id: str | None = None) -> Job:
    job = Job(owner_id=owner_id, model=model, method=method, config=config, training_file_id=training_file_id,
              validation_file_id=validation_file_id, seed=seed, suffix=suffix, metadata_=metadata,
              max_attempts=max_attempts, status="queued", attempt=0, experiment_id=experiment_id)
    session.add(job)
    session.flush()
    return job


def get(session: Session, owner_id: str, job_id: str) -> Job | None:
    return session.scalar(select_owned(Job, owner_id).where(Job.id == job_id))


OWNED_JOB_ID = owned(select(Job.id), Job, bindparam("owner_id")).where(Job.id == bindparam("job_id"))


def is_owned(db: Session | Connection, owner_id: str, job_id: str) -> bool:
    """Whether `owner_id` can see the job: the check before listing its children, without loading it."""
    return db.execute(OWNED_JOB_ID, {"owner_id": owner_id, "job_id": job_id}).first() is not None


def list_jobs(session: Session, owner_id: str, *, after: str | None = None, limit: int = 20,
              status: str | None = None) -> Page[Job]:
    stmt = select_owned(Job, owner_id)
    if status is not None:
        stmt = stmt.where(Job.status == status)
    return newest_first_page(session, stmt, Job, after, limit)


@dataclass(frozen=True)
class QueueSlot:
    """Where a queued job stands: `position` 1 starts next; `estimated_start` is unix seconds, or
    None while no job has finished to time the queue by."""

    position: int
    estimated_start: int | None


RECENT_JOBS = 20
"""How many of the latest succeeded jobs time the queue."""


def _position(created_at: Any, job_id: Any) -> Any:
    """A queued job's position, correlated to the outer query's `created_at` and `job_id` columns: the
    queued jobs at or before it in (created_at, id) order, a range scan of the (status, created_at, id)
    index rather than a window over the whole queue."""
    ahead = Job.__table__.alias("ahead")
    return (select(func.count()).select_from(ahead)
            .where(ahead.c.status == "queued", tuple_(ahead.c.created_at, ahead.c.id) <= tuple_(created_at, job_id))
            .scalar_subquery())


def _positions_statement() -> Any:
    return (select(Job.id, _position(Job.created_at, Job.id))
            .where(Job.id.in_(bindparam("job_ids", expanding=True)), Job.status == "queued"))


def _pace_statement() -> Any:
    live = aliased(Job)
    live_jobs = select(live.id).where(live.status == "running", live.heartbeat_at >= bindparam("live_since"))
    running = live_jobs.with_only_columns(func.count()).scalar_subquery()
    workers = live_jobs.with_only_columns(func.count(distinct(live.lease_owner))).scalar_subquery()
    return (select(Job.started_at, Job.finished_at, running, workers)
            .where(Job.status == "succeeded", Job.started_at.is_not(None))
            .order_by(Job.finished_at.desc()).limit(RECENT_JOBS))


def _job_with_position_statement() -> Any:
    """One owned job's columns (as a Core row whose names are the model's attributes) and, when it is
    queued, its position: a job GET's one statement."""
    table = Job.__table__
    columns = [table.c[column.name].label(key) for key, column in inspect(Job).columns.items()]
    position = case((table.c.status == "queued", _position(table.c.created_at, table.c.id)))
    return owned(select(*columns, position.label("queue_position")), Job,
                 bindparam("owner_id")).where(table.c.id == bindparam("job_id"))


# Built once, with bound parameters: building these subqueries and aliases on every job GET was
# most of its CPU (bench/results/profile_job_get.md); SQLAlchemy caches their compiled SQL.
POSITIONS, PACE, JOB_WITH_POSITION = _positions_statement(), _pace_statement(), _job_with_position_statement()


def get_with_slot(db: Session | Connection, owner_id: str, job_id: str, lease_seconds: float,
                  now: datetime | None = None) -> tuple[Row[Any], QueueSlot | None] | None:
    """An owned job as a read-only row (the model's attribute names) with its queue slot, or None:
    one statement for a job that is not queued, two for one that is, and no ORM objects: the job GET
    that every client polls (bench/results/api_get_paths.md)."""
    row = db.execute(JOB_WITH_POSITION, {"owner_id": owner_id, "job_id": job_id}).one_or_none()
    if row is None:
        return None
    slots = slots_of(db, {row.id: row.queue_position} if row.queue_position else {}, lease_seconds, now)
    return row, slots.get(row.id)


def queue_slots(session: Session, job_ids: Collection[str], lease_seconds: float,
                now: datetime | None = None) -> dict[str, QueueSlot]:
    """The slot of each of `job_ids` that is queued (the rest are left out), in two queries however
    many ids: positions count the whole deployment's queued jobs, oldest first, as workers take them."""
    if not job_ids:
        return {}
    positions = dict(session.execute(POSITIONS, {"job_ids": list(job_ids)}).all())
    return slots_of(session, positions, lease_seconds, now)


def slots_of(db: Session | Connection, positions: dict[str, int], lease_seconds: float,
             now: datetime | None = None) -> dict[str, QueueSlot]:
    """Queue slots for jobs at known `positions`, timed by the recent pace (one more query)."""
    if not positions:
        return {}
    now = now or utcnow()
    pace = _queue_pace(db, live_since=now - timedelta(seconds=lease_seconds))
    return {job_id: QueueSlot(position, None if pace is None else _start(now, position, *pace))
            for job_id, position in positions.items()}


def _queue_pace(db: Session | Connection, live_since: datetime) -> tuple[float, int, int] | None:
    """(median seconds of a recent succeeded job, live running jobs, live workers), or None with no
    history. Live workers are the distinct lease owners that heartbeat within a lease period (idle
    workers hold no lease, so at least 1 is assumed); the counts ride along with the durations."""
    rows = db.execute(PACE, {"live_since": live_since}).all()
    if not rows:
        return None
    seconds = median((finished - started).total_seconds() for started, finished, _, _ in rows)
    return seconds, rows[0][2], max(1, rows[0][3])


def _start(now: datetime, position: int, seconds_per_job: float, running: int, workers: int) -> int:
    """Every job ahead (queued before it, or running) takes the median time on one of the workers."""
    ahead = position - 1 + running
    return int(now.timestamp() + ahead * seconds_per_job / workers)


def request_cancel(session: Session, owner_id: str, job_id: str) -> Job | None:
    """A queued job is cancelled at once; a running one gets `cancel_requested` and its worker
    stops at the next step. Finished jobs are left as they are. None: no such job for this owner."""
    if get(session, owner_id, job_id) is None:
        return None
    now = utcnow()
    cancelled = _apply(session, update(Job).where(Job.id == job_id, Job.status == "queued")
                       .values(status="cancelled", cancel_requested=True, finished_at=now))
    if not cancelled:
        _apply(session, update(Job).where(Job.id == job_id, Job.status == "running").values(cancel_requested=True))
    return get(session, owner_id, job_id)


def claim(session: Session, job_id: str, worker_id: str, lease_seconds: float) -> Job | None:
    """Take the job for `worker_id`: queued → running, or steal a running job whose lease expired.

    Returns the claimed job (attempt incremented), or None when it is not claimable: another worker
    holds it, it finished, it was cancelled, or it used up its attempts.
    """
    now = utcnow()
    claimable = and_(
        Job.id == job_id,
        Job.cancel_requested.is_(False),
        Job.attempt < Job.max_attempts,
        or_(Job.status == "queued", and_(Job.status == "running", Job.lease_expires_at < now)),
    )
    won = _apply(session, update(Job).where(claimable).values(
        status="running", attempt=Job.attempt + 1, lease_owner=worker_id,
        lease_expires_at=now + timedelta(seconds=lease_seconds), heartbeat_at=now,
        started_at=func.coalesce(Job.started_at, now), error=None,
    ))
    return session.get(Job, job_id) if won else None


def _held(job_id: str, worker_id: str) -> Any:
    return and_(Job.id == job_id, Job.status == "running", Job.lease_owner == worker_id)


def heartbeat(session: Session, job_id: str, worker_id: str, lease_seconds: float) -> bool:
    """Extend the lease; False means the worker lost it (expired and re-queued or stolen)."""
    now = utcnow()
    return _apply(session, update(Job).where(_held(job_id, worker_id)).values(
        heartbeat_at=now, lease_expires_at=now + timedelta(seconds=lease_seconds)))


def is_cancel_requested(session: Session, job_id: str) -> bool:
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def set_progress(session: Session, job_id: str, worker_id: str, progress: dict[str, Any]) -> bool:
    return _apply(session, update(Job).where(_held(job_id, worker_id)).values(progress=progress))


def finish(session: Session, job_id: str, worker_id: str, status: str, *,
           error: dict[str, Any] | None = None, result: dict[str, Any] | None = None) -> bool:
    """End a job the worker holds: succeeded, failed or cancelled. False if the lease was lost."""
    if status not in ("succeeded", "failed", "cancelled"):
        raise ValueError(f"finish() needs a terminal status, not {status!r}")
    return _apply(session, update(Job).where(_held(job_id, worker_id)).values(
        status=status, error=error, result=result, finished_at=utcnow(),
        lease_owner=None, lease_expires_at=None))


@dataclass
class Sweep:
    """What one pass over expired leases did."""

    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)


def requeue_expired(session: Session, now: datetime | None = None) -> Sweep:
    """Recover jobs whose worker died: re-queue them (the next claim resumes from the latest
    checkpoint), or fail them once their attempts are used up, or cancel them if that was asked."""
    now = now or utcnow()
    sweep = Sweep()
    expired = session.scalars(select(Job).where(Job.status == "running", Job.lease_expires_at < now)).all()
    for job in expired:
        still_expired = and_(Job.id == job.id, Job.status == "running", Job.lease_expires_at < now)
        released = dict(lease_owner=None, lease_expires_at=None)
        if job.cancel_requested:
            if _apply(session, update(Job).where(still_expired).values(status="cancelled", finished_at=now, **released)):
                sweep.cancelled.append(job.id)
        elif job.attempt >= job.max_attempts:
            error = {"code": "max_attempts", "param": None,
                     "message": f"the worker running this job stopped responding {job.attempt} time(s), the most "
                                f"this job allows (max_attempts={job.max_attempts}); giving up"}
            if _apply(session, update(Job).where(still_expired).values(
                    status="failed", error=error, finished_at=now, **released)):
                sweep.failed.append(job.id)
                events.append(session, job.id, stage="setup", level="error", message=error["message"])
        elif _apply(session, update(Job).where(still_expired).values(status="queued", **released)):
            sweep.requeued.append(job.id)
            events.append(session, job.id, stage="setup", level="warning",
                          message=f"worker lost during attempt {job.attempt}; job re-queued")
    return sweep


def release(session: Session, job_id: str, worker_id: str) -> bool:
    """Hand a held job back to the queue (the worker is shutting down). The attempt is given back
    too: a deliberate stop is not a failure, so restarts of the fleet never use up a job's attempts."""
    return _apply(session, update(Job).where(_held(job_id, worker_id)).values(
        status="queued", attempt=Job.attempt - 1, lease_owner=None, lease_expires_at=None))


def queued_ids(session: Session, queued_before: datetime) -> list[str]:
    """Jobs that have waited in `queued` since before `queued_before` (re-send candidates)."""
    return list(session.scalars(select(Job.id).where(Job.status == "queued", Job.created_at < queued_before)))


def _apply(session: Session, stmt: Update) -> bool:
    """Run a conditional single-row UPDATE; True when it matched (the transition happened)."""
    result = session.execute(stmt.execution_options(synchronize_session=False))
    matched = result.rowcount == 1  # type: ignore[attr-defined]
    if matched:
        session.expire_all()  # loaded rows are stale now; reload on next access
    return matched
