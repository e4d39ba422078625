"""Alembic migrations for the store's schema; `xmodal db upgrade` calls `upgrade()`.

Configured in code (no alembic.ini needed at run time) so the installed package migrates any
database from anywhere. For authoring: `alembic -c migrations/alembic.ini revision --autogenerate`.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

SCRIPT_LOCATION = Path(__file__).resolve().parent


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database at `database_url` to `revision` (default: the newest schema)."""
    command.upgrade(alembic_config(database_url), revision)
