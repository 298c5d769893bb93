"""credit_monthly: the monthly credit rollup of the finance roll-forward, backfilled from the ledger

Revision ID: c8e2f4a6b0d3
Revises: c4e6a8b0d2f3
Create Date: 2026-12-01 10:30:00

"""
import datetime

import sqlalchemy as sa
from alembic import op

revision = 'c8e2f4a6b0d3'
down_revision = 'c4e6a8b0d2f3'
branch_labels = None
depends_on = None

CREDIT_SHARDS = 16
CREDIT_BASE = 2**40

# What each ledger entry adds to the rollup (services/credits/rollup.py, as of this migration):
# an entry naming its grant (topup, positive adjustment, expiry, void) with its own amount, the
# others (usage, negative adjustment, correction) through their allocations.
_ENTRIES = """
SELECT w.credit_system_id, {month}, CASE e.type WHEN 'topup' THEN 'issued'
  WHEN 'expiry' THEN 'expired' WHEN 'void' THEN 'voided' ELSE 'adjusted' END,
  g.kind, coalesce(g.currency, ''), coalesce(g.unit_price, ''), e.customer_id % {shards},
  {sum}(CASE WHEN e.type IN ('expiry', 'void') THEN -e.amount_micros ELSE e.amount_micros END)
FROM ledger_entries e
JOIN wallets w ON w.id = e.wallet_id
JOIN credit_grants g ON g.id = e.grant_id
WHERE e.type IN ('topup', 'expiry', 'void') OR (e.type = 'adjustment' AND e.amount_micros > 0)
GROUP BY 1, 2, 3, 4, 5, 6, 7
"""
_ALLOCATIONS = """
SELECT w.credit_system_id, {month}, CASE e.type WHEN 'usage' THEN 'consumed'
  WHEN 'adjustment' THEN 'adjusted' ELSE 'corrected' END,
  g.kind, coalesce(g.currency, ''), coalesce(g.unit_price, ''), e.customer_id % {shards},
  {sum}(CASE WHEN e.type = 'usage' THEN a.amount_micros ELSE -a.amount_micros END)
FROM credit_allocations a
JOIN ledger_entries e ON e.id = a.ledger_entry_id
JOIN wallets w ON w.id = e.wallet_id
JOIN credit_grants g ON g.id = a.grant_id
GROUP BY 1, 2, 3, 4, 5, 6, 7
"""


def upgrade():
    op.create_table(
        'credit_monthly',
        sa.Column('credit_system_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                  nullable=False),
        sa.Column('month', sa.Date(), nullable=False),
        sa.Column('category', sa.String(length=16), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('currency', sa.String(length=3), nullable=False),
        sa.Column('unit_price', sa.String(length=40), nullable=False),
        sa.Column('shard', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('amount_micros', sa.BigInteger(), nullable=False),
        sa.Column('amount_high', sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "category IN ('issued', 'consumed', 'expired', 'voided', 'adjusted', 'corrected')",
            name=op.f('ck_credit_monthly_category'),
        ),
        sa.CheckConstraint(
            "kind IN ('purchased', 'granted')", name=op.f('ck_credit_monthly_kind')
        ),
        sa.ForeignKeyConstraint(
            ['credit_system_id'],
            ['credit_systems.id'],
            name=op.f('fk_credit_monthly_credit_system_id_credit_systems'),
        ),
        sa.PrimaryKeyConstraint(
            'credit_system_id', 'month', 'category', 'kind', 'currency', 'unit_price', 'shard',
            name=op.f('pk_credit_monthly'),
        ),
    )
    # The history: every existing entry, summed exactly (PostgreSQL's sum(bigint) is NUMERIC;
    # on SQLite the app's engine registers exact_sum, whose sum() fails past 2^63).
    conn = op.get_bind()
    if conn.dialect.name == 'sqlite':
        month, total = "strftime('%Y-%m-01', e.created_at)", 'exact_sum'
    else:
        month, total = "date_trunc('month', e.created_at)::date", 'sum'
    sums = {}
    for query in (_ENTRIES, _ALLOCATIONS):
        sql = query.format(month=month, shards=CREDIT_SHARDS, sum=total)
        for *key, amount in conn.execute(sa.text(sql)):
            key[1] = str(key[1])  # a date on PostgreSQL, text on SQLite
            key = tuple(key)
            sums[key] = sums.get(key, 0) + int(amount)
    rows = []
    for (sid, first, category, kind, currency, price, shard), amount in sorted(sums.items()):
        if amount:
            high, low = divmod(amount, CREDIT_BASE)
            rows.append({
                'credit_system_id': sid, 'month': _date(first), 'category': category, 'kind': kind, 'currency': currency,
                'unit_price': price, 'shard': shard, 'amount_micros': low, 'amount_high': high,
            })
    if rows:
        table = sa.table(
            'credit_monthly',
            sa.column('credit_system_id'), sa.column('month', sa.Date()),
            sa.column('category'), sa.column('kind'), sa.column('currency'),
            sa.column('unit_price'), sa.column('shard'), sa.column('amount_micros'),
            sa.column('amount_high'),
        )
        conn.execute(table.insert(), rows)


def _date(text):
    return datetime.date.fromisoformat(text[:10])


def downgrade():
    op.drop_table('credit_monthly')
