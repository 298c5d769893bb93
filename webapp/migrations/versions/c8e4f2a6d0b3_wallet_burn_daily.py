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

BASE = 2**40  # models.DAILY_BASE
LOW = f'total % {BASE}'


def upgrade():
    op.create_table(
        'wallet_burn_daily',
        sa.Column('wallet_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('consumed_micros', sa.BigInteger(), nullable=False),
        sa.Column('consumed_high', sa.BigInteger(), server_default='0', nullable=False),
        sa.ForeignKeyConstraint(
            ['wallet_id'], ['wallets.id'], name=op.f('fk_wallet_burn_daily_wallet_id_wallets')
        ),
        sa.PrimaryKeyConstraint('wallet_id', 'day', name=op.f('pk_wallet_burn_daily')),
    )
    # Existing ledger: one pass now (usage entries, negative adjustments and corrections, by the
    # day of the entry), then every writer keeps the table up to date in its own transaction.
    # total = high · 2^40 + low with 0 <= low < 2^40 (floor division, also for a negative total).
    op.execute(
        "INSERT INTO wallet_burn_daily (wallet_id, day, consumed_micros, consumed_high) "
        f"SELECT wallet_id, day, (({LOW}) + {BASE}) % {BASE}, "
        f"(total - ((({LOW}) + {BASE}) % {BASE})) / {BASE} FROM ("
        "SELECT wallet_id, date(created_at) AS day, -sum(amount_micros) AS total "
        "FROM ledger_entries "
        "WHERE type IN ('usage', 'correction') OR (type = 'adjustment' AND amount_micros < 0) "
        "GROUP BY wallet_id, date(created_at)) AS sums "
        "WHERE total <> 0"
    )


def downgrade():
    op.drop_table('wallet_burn_daily')
