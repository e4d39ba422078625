"""Shared fixtures for service tests: isolated settings, real databases, a broker, an API key.

`settings`: a temp data dir with a migrated SQLite database and the filesystem broker (always).
`pg_settings`: the same data dir on a fresh PostgreSQL database made once per test session and
emptied before each test (XMODAL_TEST_POSTGRES, default 127.0.0.1:5432). `backend_settings` runs a
test on both. `redis_url`: a dedicated Redis db number. A server that cannot be reached or refuses the
login skips its tests, and fails them under `make test` (tests/services.py).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from store.db import dispose_engines, session_scope
from store.models import Base
from store.settings import Settings, get_settings, reset_settings
from tests.services import unavailable

POSTGRES_SERVER = os.environ.get("XMODAL_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("XMODAL_TEST_REDIS", "redis://127.0.0.1:6379/13")


@dataclass(frozen=True)
class OwnerKey:
    owner_id: str
    owner_name: str
    key: str  # plaintext bearer token


def _configure(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name in list(os.environ):
        if name.startswith("XMODAL_") and not name.startswith("XMODAL_TEST_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(f"XMODAL_{name.upper()}", value)
    reset_settings()
    dispose_engines()
    return get_settings()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "var"
    path.mkdir()
    return path


@pytest.fixture
def settings(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Temp data dir, migrated SQLite file, filesystem broker, all via XMODAL_* variables."""
    from migrations import upgrade

    configured = _configure(monkeypatch, data_dir=str(data_dir))
    upgrade(configured.database_url)
    yield configured
    dispose_engines()
    reset_settings()


@pytest.fixture(scope="session")
def postgres_database_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session, dropped afterwards."""
    from migrations import upgrade

    name = f"xmodal_test_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_engine(f"{POSTGRES_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # no server, or a refused login: the PostgreSQL path cannot run here
        admin.dispose()
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        unavailable(f"PostgreSQL not available at {POSTGRES_SERVER}: {reason}")
    url = f"{POSTGRES_SERVER}/{name}"
    upgrade(url)
    yield url
    dispose_engines()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def pg_settings(data_dir: Path, postgres_database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Like `settings`, on the session's PostgreSQL database, emptied first."""
    engine = create_engine(postgres_database_url)
    with engine.begin() as conn:
        tables = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    configured = _configure(monkeypatch, data_dir=str(data_dir), database_url=postgres_database_url)
    yield configured
    dispose_engines()
    reset_settings()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_settings(request: pytest.FixtureRequest) -> Settings:
    """Runs the test once on SQLite and once on PostgreSQL."""
    return request.getfixturevalue("settings" if request.param == "sqlite" else "pg_settings")


@pytest.fixture
def session(backend_settings: Settings) -> Iterator[Session]:
    """A session on each backend; committed at the end of the test body."""
    with session_scope() as db_session:
        yield db_session


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis URL on a db number kept for tests, flushed before and after."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.flushdb()
    except redis.exceptions.ConnectionError as exc:  # a refused password is a ConnectionError too
        client.close()
        unavailable(f"Redis not available at {REDIS_URL}: {exc}")
    yield REDIS_URL
    client.flushdb()
    client.close()


def make_owner_key(name: str = "alice") -> OwnerKey:
    """Create an owner with one API key in the configured database."""
    from store.repositories import keys

    with session_scope() as db_session:
        plaintext = keys.create_key(db_session, name)
        owner = keys.authenticate(db_session, plaintext)
        assert owner is not None
        return OwnerKey(owner.id, name, plaintext)


@pytest.fixture
def owner_key(settings: Settings) -> OwnerKey:
    """Owner `alice` and her API key in the SQLite `settings` database."""
    return make_owner_key("alice")
