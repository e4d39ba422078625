"""Blob reservations: the blobs that uploads still in flight hold (see `models.BlobReservation`).

Reserving a blob and deleting it take turns per blob: both `lock` first, in the same transaction.
On PostgreSQL that is a transaction-scoped advisory lock keyed by the sha256. SQLite lets one
writer in at a time, and `lock` purges expired reservations, a write, so it holds the database's
write lock until the transaction ends. Either way a rejected upload's check-then-delete and another
upload's reservation cannot interleave: the check sees the reservation, or the reservation is
written after the blob is gone and that upload's own rename, which comes after it, puts it back.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, exists, func, or_, select
from sqlalchemy.orm import Session

from store.models import BlobReservation, Checkpoint, File, utcnow

RESERVATION_TTL = timedelta(hours=1)
"""Far longer than validating the largest upload takes; a reservation its process left behind
(killed mid-upload) stops holding the blob after this."""


def lock(session: Session, sha256: str) -> None:
    """Take the blob's turn until the transaction ends (see the module docstring); expired
    reservations are deleted on the way, so none piles up."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(int(sha256[:15], 16))))  # 60 bits: a bigint key
    session.execute(delete(BlobReservation).where(BlobReservation.expires_at < utcnow()))


def reserve(session: Session, sha256: str, ttl: timedelta = RESERVATION_TTL) -> str:
    """Hold blob `sha256` for an upload about to put it in place; returns the reservation's id."""
    lock(session, sha256)
    row = BlobReservation(sha256=sha256, expires_at=utcnow() + ttl)
    session.add(row)
    session.flush()
    return row.id


def release(session: Session, reservation_id: str) -> None:
    session.execute(delete(BlobReservation).where(BlobReservation.id == reservation_id))


def in_use(session: Session, sha256: str) -> bool:
    """Whether a file or checkpoint row or a live reservation holds the blob. Call under `lock`."""
    live = exists().where(BlobReservation.sha256 == sha256, BlobReservation.expires_at >= utcnow())
    held = or_(exists().where(File.sha256 == sha256), exists().where(Checkpoint.sha256 == sha256), live)
    return bool(session.scalar(select(held)))
