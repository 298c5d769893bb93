"""usage_daily: a high part, so that a row holds any sum of its customers' usage exactly

Revision ID: d4a81f0c2b57
Revises: b7d2e91c4a10
Create Date: 2026-12-01 02:40:00

"""
import sqlalchemy as sa
from alembic import op

revision = 'd4a81f0c2b57'
down_revision = 'b7d2e91c4a10'
branch_labels = None
depends_on = None

DAILY_BASE = 2**40
DAILY_SHARDS = 64


def upgrade():
    with op.batch_alter_table('usage_daily') as batch:
        batch.add_column(
            sa.Column('amount_high', sa.BigInteger(), server_default='0', nullable=False)
        )
    # Rows become amount_high * 2^40 + amount_micros with 0 <= amount_micros < 2^40. A row that
    # overflowed before (a float on SQLite) is summed again from its events, in Python.
    conn = op.get_bind()
    rows = conn.execute(
        sa.text("SELECT feature_id, day, shard, amount_micros FROM usage_daily")
    ).all()
    for feature_id, day, shard, amount in rows:
        if isinstance(amount, float):
            amount = sum(
                conn.execute(
                    sa.text(
                        "SELECT amount_micros FROM usage_events WHERE feature_id = :f "
                        f"AND date(timestamp) = :d AND customer_id % {DAILY_SHARDS} = :s"
                    ),
                    {"f": feature_id, "d": day, "s": shard},
                ).scalars()
            )
        high, low = divmod(int(amount), DAILY_BASE)
        conn.execute(
            sa.text(
                "UPDATE usage_daily SET amount_high = :h, amount_micros = :l "
                "WHERE feature_id = :f AND day = :d AND shard = :s"
            ),
            {"h": high, "l": low, "f": feature_id, "d": day, "s": shard},
        )


def downgrade():
    with op.batch_alter_table('usage_daily') as batch:
        batch.drop_column('amount_high')
