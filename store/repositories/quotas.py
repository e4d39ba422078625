"""What an owner uses, for the per-owner limits: jobs not yet finished, bytes of live files.

A limit check is read-then-insert, so `lock` first: on PostgreSQL two concurrent creates by one
owner then take turns and cannot both slip under a limit. SQLite has no row locks; there the
limits are exact for one request at a time and may be overshot by concurrent ones.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store.models import TERMINAL_STATUSES, File, Job, Owner


def lock(session: Session, owner_id: str) -> None:
    """Hold the owner's row until the transaction ends."""
    session.execute(select(Owner.id).where(Owner.id == owner_id).with_for_update())


def active_jobs(session: Session, owner_id: str) -> int:
    """Queued and running jobs: the ones a worker has yet to finish."""
    stmt = select(func.count()).select_from(Job).where(Job.owner_id == owner_id, Job.status.not_in(TERMINAL_STATUSES))
    return int(session.scalar(stmt) or 0)


def stored_bytes(session: Session, owner_id: str) -> int:
    """Bytes of the owner's live (not deleted) files, each counted in full even when blobs are shared."""
    stmt = select(func.coalesce(func.sum(File.bytes), 0)).where(File.owner_id == owner_id, File.deleted_at.is_(None))
    return int(session.scalar(stmt) or 0)
