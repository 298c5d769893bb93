"""alerts: a credit system's default low-balance threshold, the event log's order

Revision ID: c4e6a8b0d2f3
Revises: c8e2f4a6b0d1
Create Date: 2026-12-01 10:05:00

"""
import sqlalchemy as sa
from alembic import op

revision = 'c4e6a8b0d2f3'
down_revision = 'c8e2f4a6b0d1'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('credit_systems') as batch:
        batch.add_column(sa.Column('low_balance_threshold_micros', sa.BigInteger(), nullable=True))
    with op.batch_alter_table('outbox_events') as batch:
        batch.add_column(
            sa.Column('tx_order', sa.BigInteger(), server_default='0', nullable=False)
        )
        batch.create_index('ix_outbox_events_log', ['tx_order', 'id'], unique=False)
    if op.get_bind().dialect.name == 'postgresql':
        # Rows written before this revision are committed and older than any transaction still
        # in flight: the lowest order a transaction id can have (the log shows them first).
        op.execute("UPDATE outbox_events SET tx_order = 1 WHERE tx_order = 0")


def downgrade():
    with op.batch_alter_table('outbox_events') as batch:
        batch.drop_index('ix_outbox_events_log')
        batch.drop_column('tx_order')
    with op.batch_alter_table('credit_systems') as batch:
        batch.drop_column('low_balance_threshold_micros')
