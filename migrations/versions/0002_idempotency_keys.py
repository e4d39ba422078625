"""Idempotency keys get their own table (owner, endpoint, key → request fingerprint, resource).

Keys that jobs carried move over with an empty fingerprint: their request bodies were never
recorded, so a retry with one of them is refused (422) rather than guessed to match.

`jobs.idempotency_key` is dropped with a plain ALTER TABLE (SQLite ≥ 3.35): a batch copy of
`jobs` would drop the table, and with foreign keys on that cascades to its events and checkpoints.

Revision ID: 0002
Revises: 0001

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0002'
down_revision: Union[str, Sequence[str], None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

JOBS_ENDPOINT = 'fine_tuning.jobs'  # api.routes.jobs.ENDPOINT when this revision was written


def upgrade() -> None:
    op.create_table('idempotency_keys',
    sa.Column('owner_id', sa.String(length=40), nullable=False),
    sa.Column('endpoint', sa.String(length=64), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('resource_id', sa.String(length=40), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['owners.id'], name=op.f('fk_idempotency_keys_owner_id_owners'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('owner_id', 'endpoint', 'key', name=op.f('pk_idempotency_keys'))
    )
    op.execute(sa.text(
        "INSERT INTO idempotency_keys (owner_id, endpoint, key, fingerprint, resource_id, created_at) "
        "SELECT owner_id, :endpoint, idempotency_key, '', id, created_at FROM jobs WHERE idempotency_key IS NOT NULL"
    ).bindparams(endpoint=JOBS_ENDPOINT))
    op.drop_index(op.f('ix_jobs_owner_id_idempotency_key'), table_name='jobs')
    op.drop_column('jobs', 'idempotency_key')


def downgrade() -> None:
    op.add_column('jobs', sa.Column('idempotency_key', sa.String(length=255), nullable=True))
    op.execute(sa.text(
        "UPDATE jobs SET idempotency_key = (SELECT MIN(k.key) FROM idempotency_keys k WHERE k.endpoint = :endpoint "
        "AND k.owner_id = jobs.owner_id AND k.resource_id = jobs.id)"
    ).bindparams(endpoint=JOBS_ENDPOINT))
    op.create_index(op.f('ix_jobs_owner_id_idempotency_key'), 'jobs', ['owner_id', 'idempotency_key'], unique=True)
    op.drop_table('idempotency_keys')
