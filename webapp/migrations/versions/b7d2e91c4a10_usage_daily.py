"""usage_daily: usage per feature per day (sharded), for the dashboard chart

Revision ID: b7d2e91c4a10
Revises: cf63dc137016
Create Date: 2026-11-26 02:10:00

"""
import sqlalchemy as sa
from alembic import op

revision = 'b7d2e91c4a10'
down_revision = 'cf63dc137016'
branch_labels = None
depends_on = None

DAILY_SHARDS = 64


def upgrade():
    op.create_table('usage_daily',
    sa.Column('feature_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('shard', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('amount_micros', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['feature_id'], ['features.id'], name=op.f('fk_usage_daily_feature_id_features')),
    sa.PrimaryKeyConstraint('feature_id', 'day', 'shard', name=op.f('pk_usage_daily'))
    )
    # Existing events: one pass now, then the write path keeps the table up to date.
    op.execute(
        "INSERT INTO usage_daily (feature_id, day, shard, amount_micros) "
        f"SELECT feature_id, date(timestamp), customer_id % {DAILY_SHARDS}, sum(amount_micros) "
        "FROM usage_events "
        f"GROUP BY feature_id, date(timestamp), customer_id % {DAILY_SHARDS}"
    )


def downgrade():
    op.drop_table('usage_daily')
