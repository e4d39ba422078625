"""Live updates by notification (issue 14): on PostgreSQL, triggers NOTIFY `xmodal_jobs` with a
job's id when one of its events or metric points is inserted, when its status changes or when it
is deleted, and `xmodal_keys` with a key's hash when the key is revoked or deleted. Every writer is
covered (worker, CLI, another tool), and each API process's one listener wakes its SSE streams
instead of each stream polling. SQLite has no NOTIFY: its streams poll, and this is a no-op there.

Revision ID: 0005
Revises: 0004

"""
from typing import Sequence, Union

from alembic import op


# revision identifiers, used by Alembic.
revision: str = '0005'
down_revision: Union[str, Sequence[str], None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# Frozen here, as a revision must be; store/live.py names the same channels.
JOBS_CHANNEL, KEYS_CHANNEL = 'xmodal_jobs', 'xmodal_keys'

FUNCTIONS = {
    # Row triggers: PostgreSQL sends one notification per distinct payload per transaction, so a
    # batch of metric points for one job wakes its streams once.
    'xmodal_notify_job_row': f"""
        BEGIN PERFORM pg_notify('{JOBS_CHANNEL}', NEW.job_id); RETURN NULL; END""",
    'xmodal_notify_job': f"""
        BEGIN
            IF TG_OP = 'DELETE' THEN PERFORM pg_notify('{JOBS_CHANNEL}', OLD.id);
            ELSE PERFORM pg_notify('{JOBS_CHANNEL}', NEW.id);
            END IF;
            RETURN NULL;
        END""",
    'xmodal_notify_key': f"""
        BEGIN PERFORM pg_notify('{KEYS_CHANNEL}', OLD.key_hash); RETURN NULL; END""",
}
TRIGGERS = [  # (name, table, when)
    ('xmodal_job_events_notify', 'job_events', 'AFTER INSERT', 'xmodal_notify_job_row', ''),
    ('xmodal_metric_points_notify', 'metric_points', 'AFTER INSERT', 'xmodal_notify_job_row', ''),
    ('xmodal_jobs_status_notify', 'jobs', 'AFTER UPDATE OF status', 'xmodal_notify_job',
     'WHEN (OLD.status IS DISTINCT FROM NEW.status)'),
    ('xmodal_jobs_delete_notify', 'jobs', 'AFTER DELETE', 'xmodal_notify_job', ''),
    ('xmodal_api_keys_revoke_notify', 'api_keys', 'AFTER UPDATE OF revoked_at', 'xmodal_notify_key',
     'WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)'),
    ('xmodal_api_keys_delete_notify', 'api_keys', 'AFTER DELETE', 'xmodal_notify_key', ''),
]


def _postgresql() -> bool:
    return op.get_bind().dialect.name == 'postgresql'


def upgrade() -> None:
    if not _postgresql():
        return
    for name, body in FUNCTIONS.items():
        op.execute(f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $${body}$$")
    for name, table, event, function, when in TRIGGERS:
        op.execute(f"CREATE TRIGGER {name} {event} ON {table} FOR EACH ROW {when} EXECUTE FUNCTION {function}()")


def downgrade() -> None:
    if not _postgresql():
        return
    for name, table, *_ in TRIGGERS:
        op.execute(f"DROP TRIGGER {name} ON {table}")
    for name in FUNCTIONS:
        op.execute(f"DROP FUNCTION {name}()")
