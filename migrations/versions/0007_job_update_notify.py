"""Notify every visible change of a job row, not only of its status: a job GET is answered from each
API process's memory until its job is notified (api/answers.py), so progress, attempts, a requested
cancel, the error and the result must notify too. Heartbeats and lease renewals change nothing a
client sees and stay silent. SQLite has no NOTIFY: a no-op there.

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

# Frozen here, as a revision must be. `json` has no equality operator: those columns compare as text.
VISIBLE = ['status', 'attempt', 'max_attempts', 'cancel_requested', 'started_at', 'finished_at',
           'progress::text', 'error::text', 'result::text', 'metadata::text', 'suffix']
CHANGED = ' OR '.join(f'OLD.{column} IS DISTINCT FROM NEW.{column}' for column in VISIBLE)
# Both revisions call 0005's function, which NOTIFYs `xmodal_jobs` with the job's id.
STATUS_ONLY = ('xmodal_jobs_status_notify', 'AFTER UPDATE OF status',
               'WHEN (OLD.status IS DISTINCT FROM NEW.status)')
ANY_VISIBLE = ('xmodal_jobs_update_notify', 'AFTER UPDATE', f'WHEN ({CHANGED})')


def _postgresql() -> bool:
    return op.get_bind().dialect.name == 'postgresql'


def _swap(old: tuple[str, str, str], new: tuple[str, str, str]) -> None:
    if not _postgresql():
        return
    name, event, when = new
    op.execute(f'DROP TRIGGER {old[0]} ON jobs')
    op.execute(f'CREATE TRIGGER {name} {event} ON jobs FOR EACH ROW {when} EXECUTE FUNCTION xmodal_notify_job()')


def upgrade() -> None:
    _swap(STATUS_ONLY, ANY_VISIBLE)


def downgrade() -> None:
    _swap(ANY_VISIBLE, STATUS_ONLY)
