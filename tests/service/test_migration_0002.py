"""Migration 0002 on data: jobs' idempotency keys move to their own table and back, and dropping
the column leaves the jobs' events alone (a SQLite table copy would have cascaded into them)."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from sqlalchemy import text

from migrations import alembic_config, upgrade
from store.db import make_engine
from store.settings import Settings

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def _seed_0001(url: str) -> None:
    """An owner, a file, a job with a key, one without, and an event, in the 0001 schema."""
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO owners (id, name, created_at) VALUES ('own-1', 'alice', :now)"), {"now": NOW})
        conn.execute(text("INSERT INTO files (id, owner_id, filename, purpose, bytes, sha256, status, created_at) "
                          "VALUES ('file-1', 'own-1', 'a.npz', 'fine-tune', 1, :sha, 'processed', :now)"),
                     {"sha": "a" * 64, "now": NOW})
        for job_id, key in (("ftjob-1", "k1"), ("ftjob-2", None)):
            conn.execute(text(
                "INSERT INTO jobs (id, owner_id, status, model, method, config, training_file_id, attempt, "
                "max_attempts, cancel_requested, idempotency_key, created_at) VALUES (:id, 'own-1', 'queued', "
                "'tiny-bert', 'orca', '{}', 'file-1', 0, 3, false, :key, :now)"), {"id": job_id, "key": key, "now": NOW})
        conn.execute(text("INSERT INTO job_events (job_id, created_at, level, stage, message) "
                          "VALUES ('ftjob-1', :now, 'info', 'setup', 'hello')"), {"now": NOW})
    engine.dispose()


def _rows(url: str, sql: str) -> list[tuple[object, ...]]:
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = [tuple(row) for row in conn.execute(text(sql))]
    engine.dispose()
    return rows


def test_keys_move_to_their_table_and_back(backend_settings: Settings) -> None:
    url = backend_settings.database_url
    command.downgrade(alembic_config(url), "0001")
    try:
        _seed_0001(url)
        upgrade(url)
        assert _rows(url, "SELECT owner_id, endpoint, key, fingerprint, resource_id FROM idempotency_keys") == [
            ("own-1", "fine_tuning.jobs", "k1", "", "ftjob-1")]  # no recorded body: a retry with it is refused
        assert _rows(url, "SELECT message FROM job_events") == [("hello",)]
        assert len(_rows(url, "SELECT id FROM jobs")) == 2
        command.downgrade(alembic_config(url), "0001")
        assert _rows(url, "SELECT id, idempotency_key FROM jobs ORDER BY id") == [("ftjob-1", "k1"), ("ftjob-2", None)]
        assert _rows(url, "SELECT message FROM job_events") == [("hello",)]
    finally:
        upgrade(url)
