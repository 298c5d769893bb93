"""wallet_burn_daily: credits each wallet consumed per UTC day (runway's burn rate)

Revision ID: c8e4f2a6d0b3
Revises: a3c5e7f9b1d4
Create Date: 2026-12-01 10:20:00

"""
import sqlalchemy as sa
from alembic import op

revision = 'c8e4f2a6d0b3'
down_revision = 'a3c5e7f9b1d4'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'wallet_burn_daily',
        sa.Column('wallet_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('consumed_micros', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ['wallet_id'], ['wallets.id'], name=op.f('fk_wallet_burn_daily_wallet_id_wallets')
        ),
        sa.PrimaryKeyConstraint('wallet_id', 'day', name=op.f('pk_wallet_burn_daily')),
    )
    # Existing ledger: one pass now (usage entries and negative adjustments, by the day of the
    # entry), then every writer keeps the table up to date in its own transaction.
    op.execute(
        "INSERT INTO wallet_burn_daily (wallet_id, day, consumed_micros) "
        "SELECT wallet_id, date(created_at), -sum(amount_micros) FROM ledger_entries "
        "WHERE type = 'usage' OR (type = 'adjustment' AND amount_micros < 0) "
        "OR type = 'correction' "
        "GROUP BY wallet_id, date(created_at) "
        "HAVING sum(amount_micros) <> 0"
    )


def downgrade():
    op.drop_table('wallet_burn_daily')
