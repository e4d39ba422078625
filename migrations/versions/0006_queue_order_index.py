"""Queue order index: a queued job's position is a count of the queued jobs at or before it in
(created_at, id) order, which this index answers by a range scan; the window over the whole queue
that it replaces sorted every queued job on each job GET (bench/results/profile_job_get.md).

Revision ID: 0006
Revises: 0005

"""
from typing import Sequence, Union

from alembic import op


# revision identifiers, used by Alembic.
revision: str = '0006'
down_revision: Union[str, Sequence[str], None] = '0005'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_index(op.f('ix_jobs_status_created_at_id'), 'jobs', ['status', 'created_at', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_jobs_status_created_at_id'), table_name='jobs')
