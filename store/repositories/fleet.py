"""The whole deployment at a glance, across owners: what a monitoring scrape reports.

Never behind an API key: these are counts and rates, no ids, names or owners.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store.models import Job, JobStatus


@dataclass(frozen=True)
class RunningJob:
    """A running job as its worker last reported it."""

    lease_live: bool
    heartbeat_at: datetime | None
    steps_per_second: float | None


def jobs_by_status(session: Session) -> dict[JobStatus, int]:
    """Job counts by status, one GROUP BY; statuses without jobs are absent."""
    rows = session.execute(select(Job.status, func.count()).group_by(Job.status))
    return {status: count for status, count in rows}  # type: ignore[misc]


def running_jobs(session: Session, now: datetime) -> list[RunningJob]:
    """Every running job's lease, heartbeat and training rate (one row per busy worker process)."""
    rows = session.execute(select(Job.lease_expires_at, Job.heartbeat_at, Job.progress)
                           .where(Job.status == "running"))
    return [RunningJob(expires is not None and expires > now, heartbeat, _rate(progress))
            for expires, heartbeat, progress in rows]


def _rate(progress: dict[str, object] | None) -> float | None:
    rate = (progress or {}).get("steps_per_second")
    return float(rate) if isinstance(rate, int | float) else None
