"""Engines and sessions. One engine per URL per process; SQLite is tuned for a worker and an API
writing at the same time (WAL, busy timeout, foreign keys on).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from store.settings import Settings, get_settings

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Every connection a process opens is kept (no overflow): with 10 kept + 30 overflow, bench/api.py's
# 13,200 requests made PostgreSQL start 1,379 sessions (a backend process each); kept, 104. How many
# one process keeps is `db_pool_size` (20): with 40, two API processes under bench/load.py's 200
# pollers held 80 of PostgreSQL's 100 and the worker's next connections were refused ("too many
# clients already", answered as 503s). Connections are opened on demand, never ahead; a thread that
# finds them all in use waits for one (the API's 40 threads share 20).
POOL_TIMEOUT_S = 30.0  # then the API answers 503 server_busy
TRANSIENT_ERRORS = (OperationalError, InterfaceError, DisconnectionError)
"""The database being away (refused or dropped connection, a SQLite file locked past the busy
timeout) rather than a bug: callers answer 503 or retry."""

_engines: dict[str, Engine] = {}


DEFAULT_POOL_SIZE: int = Settings.model_fields["db_pool_size"].default


def make_engine(url: str, pool_size: int = DEFAULT_POOL_SIZE) -> Engine:
    """A new engine for `url`; a SQLite file's folder is created so a fresh `./var` just works. It
    reads no settings (migrations and tests make engines before any are configured); `get_engine`
    passes the configured pool size."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_size=pool_size, max_overflow=0, pool_timeout=POOL_TIMEOUT_S)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
    event.listen(engine, "connect", _tune_sqlite)
    return engine


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def get_engine(url: str | None = None) -> Engine:
    """The process-wide engine for `url` (default: the settings' database)."""
    settings = get_settings()
    url = url or settings.database_url
    if url not in _engines:
        _engines[url] = make_engine(url, settings.db_pool_size)
    return _engines[url]


def get_reader(url: str | None = None) -> Engine:
    """The engine for `url` in autocommit mode, sharing its pool: for single-statement reads that
    need no transaction, so a request skips BEGIN and the ROLLBACK when its connection goes back."""
    return get_engine(url).execution_options(isolation_level="AUTOCOMMIT")


def dispose_engines(close: bool = True) -> None:
    """Drop every cached engine. A forked worker child calls this with close=False so it never
    touches connections that belong to its parent."""
    for engine in _engines.values():
        engine.dispose(close=close)
    _engines.clear()


SessionLocal = sessionmaker(expire_on_commit=False)
"""Unbound session factory: `SessionLocal(bind=get_engine())`; session_scope() does this for you."""


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits when the block succeeds and rolls back when it raises."""
    session = SessionLocal(bind=get_engine(url))
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
