"""Where live-update notifications travel: on PostgreSQL, triggers (migration 0005) NOTIFY these
channels, so every writer is covered; an API process LISTENs once and wakes its SSE streams.
SQLite has no NOTIFY, so there `notify_conninfo` is None and streams poll."""

from __future__ import annotations

from sqlalchemy.engine import make_url

JOBS_CHANNEL = "xmodal_jobs"
"""Payload: a job id, when one of its events or metric points is inserted, its status changes or it is deleted."""
KEYS_CHANNEL = "xmodal_keys"
"""Payload: an API key's sha256, when the key is revoked or deleted."""


def notify_conninfo(database_url: str) -> str | None:
    """A libpq URL for a plain psycopg connection to the database, or None where there is no NOTIFY."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        return None
    return url.set(drivername="postgresql").render_as_string(hide_password=False)
