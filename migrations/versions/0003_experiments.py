"""Experiments: a grid of jobs on one dataset; `jobs.experiment_id` says which experiment made a job.

The column is added and dropped with plain ALTER TABLE on every backend, its foreign key written
inline on SQLite: a batch copy of `jobs` would drop the table, and with foreign keys on that
cascades to its events and checkpoints (as in 0002).

Revision ID: 0003
Revises: 0002

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0003'
down_revision: Union[str, Sequence[str], None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

FK_NAME = 'fk_jobs_experiment_id_experiments'


def upgrade() -> None:
    op.create_table('experiments',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('owner_id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=True),
    sa.Column('model', sa.String(length=512), nullable=False),
    sa.Column('training_file_id', sa.String(length=40), nullable=False),
    sa.Column('validation_file_id', sa.String(length=40), nullable=True),
    sa.Column('method', sa.JSON(), nullable=False),
    sa.Column('grid', sa.JSON(), nullable=False),
    sa.Column('metadata', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['owners.id'], name=op.f('fk_experiments_owner_id_owners'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['training_file_id'], ['files.id'], name=op.f('fk_experiments_training_file_id_files')),
    sa.ForeignKeyConstraint(['validation_file_id'], ['files.id'], name=op.f('fk_experiments_validation_file_id_files')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_experiments'))
    )
    op.create_index(op.f('ix_experiments_owner_id_created_at'), 'experiments', ['owner_id', 'created_at'], unique=False)
    if op.get_bind().dialect.name == 'sqlite':
        op.execute(f'ALTER TABLE jobs ADD COLUMN experiment_id VARCHAR(40) '
                   f'CONSTRAINT {FK_NAME} REFERENCES experiments (id)')
    else:
        op.add_column('jobs', sa.Column('experiment_id', sa.String(length=40), nullable=True))
        op.create_foreign_key(op.f(FK_NAME), 'jobs', 'experiments', ['experiment_id'], ['id'])
    op.create_index(op.f('ix_jobs_experiment_id'), 'jobs', ['experiment_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_jobs_experiment_id'), table_name='jobs')
    if op.get_bind().dialect.name != 'sqlite':  # SQLite drops an inline foreign key with its column
        op.drop_constraint(op.f(FK_NAME), 'jobs', type_='foreignkey')
    op.execute('ALTER TABLE jobs DROP COLUMN experiment_id')
    op.drop_index(op.f('ix_experiments_owner_id_created_at'), table_name='experiments')
    op.drop_table('experiments')
