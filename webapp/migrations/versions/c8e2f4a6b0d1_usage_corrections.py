"""usage corrections: the usage_corrections table, the `correction` ledger type, and
allocations that may be negative (a correction's refund returns credits to its grants)

Revision ID: c8e2f4a6b0d1
Revises: b8e4d2a6c1f3
Create Date: 2026-12-01 10:15:00

"""
import sqlalchemy as sa
from alembic import op

revision = 'c8e2f4a6b0d1'
down_revision = 'b8e4d2a6c1f3'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def _change_ledger_type_check(types):
    """SQLite rebuilds ledger_entries to change its CHECK, dropping the old table: the rows of
    credit_allocations that point at it are set aside meanwhile (dropping a parent table with
    child rows fails its foreign keys; PostgreSQL alters the constraint in place)."""
    sqlite = op.get_bind().dialect.name == 'sqlite'
    if sqlite:
        op.execute('CREATE TEMP TABLE _allocations_stash AS SELECT * FROM credit_allocations')
        op.execute('DELETE FROM credit_allocations')
    with op.batch_alter_table('ledger_entries') as batch:
        batch.drop_constraint(batch.f('ck_ledger_entries_type'), type_='check')
        batch.create_check_constraint(
            batch.f('ck_ledger_entries_type'),
            'type IN (' + ', '.join(f"'{t}'" for t in types) + ')',
        )
    if sqlite:
        op.execute(
            'INSERT INTO credit_allocations (id, ledger_entry_id, grant_id, amount_micros) '
            'SELECT id, ledger_entry_id, grant_id, amount_micros FROM _allocations_stash'
        )
        op.execute('DROP TABLE _allocations_stash')


def upgrade():
    _change_ledger_type_check(('topup', 'usage', 'adjustment', 'expiry', 'void', 'correction'))
    with op.batch_alter_table('credit_allocations') as batch:
        batch.drop_constraint(batch.f('ck_credit_allocations_amount_positive'), type_='check')
        batch.create_check_constraint(
            batch.f('ck_credit_allocations_amount_not_zero'), 'amount_micros <> 0'
        )
    op.create_table(
        'usage_corrections',
        sa.Column('id', BigId, nullable=False),
        sa.Column('usage_event_id', BigId, nullable=False),
        sa.Column('customer_id', BigId, nullable=False),
        sa.Column('delta_micros', sa.BigInteger(), nullable=False),
        sa.Column('effective_after_micros', sa.BigInteger(), nullable=False),
        sa.Column('credits_micros', sa.BigInteger(), nullable=True),
        sa.Column('ledger_entry_id', BigId, nullable=True),
        sa.Column('used_after_micros', sa.BigInteger(), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('idempotency_key', sa.String(length=200), nullable=True),
        sa.Column('fingerprint', sa.String(length=64), nullable=False),
        sa.Column('actor', sa.String(length=300), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.CheckConstraint('delta_micros <> 0', name=op.f('ck_usage_corrections_delta_not_zero')),
        sa.ForeignKeyConstraint(
            ['customer_id'], ['customers.id'],
            name=op.f('fk_usage_corrections_customer_id_customers'),
        ),
        sa.ForeignKeyConstraint(
            ['ledger_entry_id'], ['ledger_entries.id'],
            name=op.f('fk_usage_corrections_ledger_entry_id_ledger_entries'),
        ),
        sa.ForeignKeyConstraint(
            ['usage_event_id'], ['usage_events.id'],
            name=op.f('fk_usage_corrections_usage_event_id_usage_events'),
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_usage_corrections')),
        sa.UniqueConstraint(
            'customer_id', 'idempotency_key',
            name=op.f('uq_usage_corrections_customer_id_idempotency_key'),
        ),
    )
    with op.batch_alter_table('usage_corrections') as batch:
        batch.create_index('ix_usage_corrections_event', ['usage_event_id', 'id'], unique=False)


def downgrade():
    conn = op.get_bind()
    if conn.execute(sa.text("SELECT count(*) FROM usage_corrections")).scalar():
        raise RuntimeError(
            "usage_corrections holds corrections: a downgrade would lose them (and their "
            "`correction` ledger entries); refusing."
        )
    op.drop_table('usage_corrections')
    with op.batch_alter_table('credit_allocations') as batch:
        batch.drop_constraint(batch.f('ck_credit_allocations_amount_not_zero'), type_='check')
        batch.create_check_constraint(
            batch.f('ck_credit_allocations_amount_positive'), 'amount_micros > 0'
        )
    _change_ledger_type_check(('topup', 'usage', 'adjustment', 'expiry', 'void'))
