"""Blob reservations: uploads in flight hold their blob, so another upload of the same bytes that
is refused cannot delete it before the file row exists (issue 12, finding 4).

Revision ID: 0004
Revises: 0003

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('blob_reservations',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_blob_reservations'))
    )
    op.create_index(op.f('ix_blob_reservations_expires_at'), 'blob_reservations', ['expires_at'], unique=False)
    op.create_index(op.f('ix_blob_reservations_sha256'), 'blob_reservations', ['sha256'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_blob_reservations_sha256'), table_name='blob_reservations')
    op.drop_index(op.f('ix_blob_reservations_expires_at'), table_name='blob_reservations')
    op.drop_table('blob_reservations')
