"""Notify every visible change of a job row, not only of its status, and every change of the queue:
a job GET is answered from each API process's memory until its job is notified (api/answers.py),
so progress, attempts, a requested cancel, the error and the result must notify the job's channel
too; and a queued job's position and estimated start move when any job's status changes or a job
is deleted, which `xmodal_queue` announces (no payload: every queued job's answer is read again).
Heartbeats and lease renewals change nothing a client sees and stay silent. SQLite has no NOTIFY:
a no-op there.

Revision ID: 0007
Revises: 0006

"""
from typing import Sequence, Union

from alembic import op


# revision identifiers, used by Alembic.
revision: str = '0007'
down_revision: Union[str, Sequence[str], None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# Frozen here, as a revision must be; store/live.py names the same channels. `json` has no equality
# operator: those columns compare as text.
QUEUE_CHANNEL = 'xmodal_queue'
VISIBLE = ['status', 'attempt', 'max_attempts', 'cancel_requested', 'started_at', 'finished_at',
           'progress::text', 'error::text', 'result::text', 'metadata::text', 'suffix']
CHANGED = ' OR '.join(f'OLD.{column} IS DISTINCT FROM NEW.{column}' for column in VISIBLE)
STATUS_CHANGED = 'WHEN (OLD.status IS DISTINCT FROM NEW.status)'
# PostgreSQL sends one notification per distinct payload per transaction: a batch of status changes
# is one queue notification.
QUEUE_FUNCTION = ('xmodal_notify_queue', f"BEGIN PERFORM pg_notify('{QUEUE_CHANNEL}', ''); RETURN NULL; END")
# (name, event, when, function); 0005's xmodal_notify_job NOTIFYs `xmodal_jobs` with the job's id.
STATUS_ONLY = [('xmodal_jobs_status_notify', 'AFTER UPDATE OF status', STATUS_CHANGED, 'xmodal_notify_job')]
ANY_VISIBLE = [('xmodal_jobs_update_notify', 'AFTER UPDATE', f'WHEN ({CHANGED})', 'xmodal_notify_job'),
               ('xmodal_jobs_queue_notify', 'AFTER UPDATE OF status', STATUS_CHANGED, 'xmodal_notify_queue'),
               ('xmodal_jobs_delete_queue_notify', 'AFTER DELETE', '', 'xmodal_notify_queue')]


def _postgresql() -> bool:
    return op.get_bind().dialect.name == 'postgresql'


def _swap(old: list[tuple[str, str, str, str]], new: list[tuple[str, str, str, str]]) -> None:
    for name, *_ in old:
        op.execute(f'DROP TRIGGER {name} ON jobs')
    for name, event, when, function in new:
        op.execute(f'CREATE TRIGGER {name} {event} ON jobs FOR EACH ROW {when} EXECUTE FUNCTION {function}()')


def upgrade() -> None:
    if not _postgresql():
        return
    name, body = QUEUE_FUNCTION
    op.execute(f'CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $${body}$$')
    _swap(STATUS_ONLY, ANY_VISIBLE)


def downgrade() -> None:
    if not _postgresql():
        return
    _swap(ANY_VISIBLE, STATUS_ONLY)
    op.execute(f'DROP FUNCTION {QUEUE_FUNCTION[0]}()')
