"""The database schema as typed SQLAlchemy models; `Base.metadata` drives the Alembic migrations.

Public ids carry a type prefix (`ftjob-…`) like the OpenAI API; events and metric points use
integer ids because they serve as ordered paging cursors.
"""

from __future__ import annotations

import secrets
import string
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, MetaData, String, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL_STATUSES: tuple[JobStatus, ...] = ("succeeded", "failed", "cancelled")
FileStatus = Literal["processed", "error"]

_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_id(prefix: str) -> str:
    """`prefix-` + 24 random base36 characters (~124 bits): unguessable, URL-safe."""
    return f"{prefix}-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend: SQLite keeps no zone, so store naive UTC and re-attach
    it on the way out; comparisons in SQL stay correct because every stored value is UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use store.models.utcnow()")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# 64-bit cursors on PostgreSQL; SQLite only auto-increments a column declared exactly INTEGER.
CURSOR_ID = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), str: String(255)}


class Owner(Base):
    """Whoever holds API keys; every file and job belongs to one."""

    __tablename__ = "owners"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("own"))
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """Only the sha256 of a key is stored; `prefix` lets a person tell keys apart."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("key"))
    owner_id: Mapped[str] = mapped_column(String(40), ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(12))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class File(Base):
    __tablename__ = "files"
    __table_args__ = (Index(None, "owner_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("file"))
    owner_id: Mapped[str] = mapped_column(String(40), ForeignKey("owners.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    info: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)


class Job(Base):
    """A fine-tuning job. The row is the truth; a queue message only wakes a worker to claim it."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index(None, "owner_id", "created_at"),
        Index(None, "status", "lease_expires_at"),
        Index(None, "status", "created_at", "id"),  # queue positions (migration 0006)
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ftjob"))
    owner_id: Mapped[str] = mapped_column(String(40), ForeignKey("owners.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    model: Mapped[str] = mapped_column(String(512))
    method: Mapped[str] = mapped_column(String(32))
    config: Mapped[dict[str, Any]] = mapped_column()
    training_file_id: Mapped[str] = mapped_column(String(40), ForeignKey("files.id"))
    validation_file_id: Mapped[str | None] = mapped_column(String(40), ForeignKey("files.id"), default=None)
    seed: Mapped[int | None] = mapped_column(Integer, default=None)
    suffix: Mapped[str | None] = mapped_column(String(64), default=None)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", default=None)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    lease_owner: Mapped[str | None] = mapped_column(String(200), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    progress: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    error: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    result: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    experiment_id: Mapped[str | None] = mapped_column(
        String(40), ForeignKey("experiments.id"), index=True, default=None)


class Experiment(Base):
    """A grid of jobs on one dataset (the ORCA ablation as one request). Its status and results are
    read off its jobs, so nothing here can fall out of step with them."""

    __tablename__ = "experiments"
    __table_args__ = (Index(None, "owner_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("exp"))
    owner_id: Mapped[str] = mapped_column(String(40), ForeignKey("owners.id", ondelete="CASCADE"))
    name: Mapped[str | None] = mapped_column(String(64), default=None)
    model: Mapped[str] = mapped_column(String(512))
    training_file_id: Mapped[str] = mapped_column(String(40), ForeignKey("files.id"))
    validation_file_id: Mapped[str | None] = mapped_column(String(40), ForeignKey("files.id"), default=None)
    method: Mapped[dict[str, Any]] = mapped_column()
    grid: Mapped[dict[str, Any]] = mapped_column()
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class IdempotencyKey(Base):
    """What a create request with an `Idempotency-Key` made, so a retry returns it instead of a twin.

    `fingerprint` is the sha256 of the request's canonical form: the same key with another request
    is refused rather than answered with an object the client did not ask for.
    """

    __tablename__ = "idempotency_keys"

    owner_id: Mapped[str] = mapped_column(String(40), ForeignKey("owners.id", ondelete="CASCADE"), primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BlobReservation(Base):
    """An upload whose blob is in place (or about to be) but whose file row is not written yet.

    Blobs are shared by content, so a rejected upload may delete its blob only when nothing else
    holds it: no file or checkpoint row and no live reservation. Written before the blob is renamed
    into place and removed once the file row exists or the upload is refused; a reservation whose
    process died expires at `expires_at`.
    """

    __tablename__ = "blob_reservations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("bres"))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class JobEvent(Base):
    __tablename__ = "job_events"
    __table_args__ = (Index(None, "job_id", "id"),)

    id: Mapped[int] = mapped_column(CURSOR_ID, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(40), ForeignKey("jobs.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    level: Mapped[str] = mapped_column(String(16), default="info")
    stage: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(default=None)


class MetricPoint(Base):
    __tablename__ = "metric_points"
    __table_args__ = (Index(None, "job_id", "key", "step"),)

    id: Mapped[int] = mapped_column(CURSOR_ID, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(40), ForeignKey("jobs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(128))
    value: Mapped[float] = mapped_column(Float)
    step: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int | None] = mapped_column(Integer, default=None)
    split: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Checkpoint(Base):
    """A checkpoint directory stored as an uncompressed tar blob; `sha256` is the tar's (the ETag)."""

    __tablename__ = "checkpoints"
    __table_args__ = (Index(None, "job_id", "step"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ftckpt"))
    job_id: Mapped[str] = mapped_column(String(40), ForeignKey("jobs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int | None] = mapped_column(Integer, default=None)
    stage: Mapped[str] = mapped_column(String(32))
    metrics: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    sha256: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(BigInteger)
    final: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
