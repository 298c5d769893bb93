"""outbox events (alerts and changes, written with the write that caused them)

Revision ID: a3c5e7f9b1d4
Revises: f7a1c3e5b9d2
Create Date: 2026-12-01 10:00:00

"""
import sqlalchemy as sa
from alembic import op

revision = 'a3c5e7f9b1d4'
down_revision = 'f7a1c3e5b9d2'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade():
    op.create_table(
        'outbox_events',
        sa.Column('id', BigId, nullable=False),
        sa.Column('type', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('customer_key', sa.String(length=200), nullable=True),
        sa.Column('data', sa.JSON(), nullable=False),
        sa.Column('dedupe_key', sa.String(length=300), nullable=True),
        sa.Column('dispatched_at', sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox_events')),
        sa.UniqueConstraint('dedupe_key', name='uq_outbox_events_dedupe_key'),
    )
    with op.batch_alter_table('outbox_events') as batch:
        batch.create_index('ix_outbox_events_type', ['type', 'id'], unique=False)
        batch.create_index('ix_outbox_events_customer', ['customer_key', 'id'], unique=False)
        batch.create_index('ix_outbox_events_dispatched', ['dispatched_at', 'id'], unique=False)


def downgrade():
    op.drop_table('outbox_events')
