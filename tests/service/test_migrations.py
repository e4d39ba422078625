"""The migrations and the models agree: after `upgrade`, autogenerate finds nothing to add."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Integer, MetaData

from migrations import alembic_config, upgrade
from store.db import make_engine
from store.models import Base
from store.settings import Settings


def _diff(url: str, metadata: MetaData = Base.metadata) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def _revision(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def test_no_diff_between_models_and_head(backend_settings: Settings) -> None:
    url = backend_settings.database_url
    upgrade(url)  # fixtures migrated already; a second run must be a no-op
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert _revision(url) == head
    assert _diff(url) == []


def test_a_changed_model_would_show_up(backend_settings: Settings) -> None:
    """Guards the test above against comparing nothing: a column the migration lacks is reported."""
    changed = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["jobs"].append_column(Column("extra_probe", Integer, nullable=True))
    assert any("extra_probe" in repr(change) for change in _diff(backend_settings.database_url, changed))
