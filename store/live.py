"""Where live-update notifications travel: on PostgreSQL, triggers (migrations 0005, 0007) NOTIFY these
channels, so every writer is covered; an API process LISTENs once, wakes its SSE streams and drops
the answers it keeps for polled reads (api/answers.py).
SQLite has no NOTIFY, so there `notify_conninfo` is None and streams poll."""

from __future__ import annotations

from sqlalchemy.engine import make_url

JOBS_CHANNEL = "xmodal_jobs"
"""Payload: a job id, when one of its events or metric points is inserted, anything a client sees of
the job changes (not a heartbeat), or it is deleted."""
QUEUE_CHANNEL = "xmodal_queue"
"""No payload: some job's status changed, or a job was deleted, so queued jobs' positions and
estimated starts may have moved."""
KEYS_CHANNEL = "xmodal_keys"
"""Payload: an API key's sha256, when the key is revoked or deleted."""


def notify_conninfo(database_url: str) -> str | None:
    """A libpq URL for a plain psycopg connection to the database, or None where there is no NOTIFY."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        return None
    return url.set(drivername="postgresql").render_as_string(hide_password=False)
