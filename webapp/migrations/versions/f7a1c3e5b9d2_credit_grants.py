"""credit grants and allocations; ledger entries name their grant; expiry and void entries

Existing data: each topup becomes a grant (no expiry) and each positive adjustment a `granted`
grant; usage and negative adjustments are replayed in ledger order against the grants in the
spending order of domain.md, each becoming allocations. Migrated grants are effective from the
earliest of their topup and the wallet's first charged event, so that every replayed deduction
was eligible at its event's time (the old wallet had no such rule).

Revision ID: f7a1c3e5b9d2
Revises: e5b3a9d1c7f2
Create Date: 2026-12-01 06:40:00

"""
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = 'f7a1c3e5b9d2'
down_revision = 'e5b3a9d1c7f2'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
PRIORITY = {'granted': 100, 'purchased': 200}
BATCH = 5000


def upgrade():
    op.create_table(
        'credit_grants',
        sa.Column('id', BigId, nullable=False),
        sa.Column('wallet_id', BigId, nullable=False),
        sa.Column('customer_id', BigId, nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('amount_micros', sa.BigInteger(), nullable=False),
        sa.Column('remaining_micros', sa.BigInteger(), nullable=False),
        sa.Column('priority', sa.Integer(), nullable=False),
        sa.Column('effective_at', sa.DateTime(), nullable=False),
        sa.Column('expires_at', sa.DateTime(), nullable=True),
        sa.Column('reference', sa.String(length=200), nullable=True),
        sa.Column('note', sa.Text(), nullable=True),
        sa.Column('unit_price', sa.String(length=40), nullable=True),
        sa.Column('currency', sa.String(length=3), nullable=True),
        sa.Column('actor', sa.String(length=300), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('expired_at', sa.DateTime(), nullable=True),
        sa.Column('expired_micros', sa.BigInteger(), nullable=False),
        sa.Column('voided_at', sa.DateTime(), nullable=True),
        sa.Column('voided_micros', sa.BigInteger(), nullable=False),
        sa.CheckConstraint("kind IN ('purchased', 'granted')", name=op.f('ck_credit_grants_kind')),
        sa.CheckConstraint('amount_micros > 0', name=op.f('ck_credit_grants_amount_positive')),
        sa.CheckConstraint(
            'remaining_micros >= 0 AND remaining_micros <= amount_micros',
            name=op.f('ck_credit_grants_remaining'),
        ),
        sa.CheckConstraint(
            'expires_at IS NULL OR expires_at > effective_at',
            name=op.f('ck_credit_grants_expiry_after'),
        ),
        sa.CheckConstraint(
            'expired_micros >= 0 AND voided_micros >= 0', name=op.f('ck_credit_grants_removed')
        ),
        sa.ForeignKeyConstraint(
            ['customer_id'], ['customers.id'], name=op.f('fk_credit_grants_customer_id_customers')
        ),
        sa.ForeignKeyConstraint(
            ['wallet_id'], ['wallets.id'], name=op.f('fk_credit_grants_wallet_id_wallets')
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_credit_grants')),
    )
    with op.batch_alter_table('credit_grants') as batch:
        batch.create_index('ix_credit_grants_customer', ['customer_id', 'id'], unique=False)
        batch.create_index('ix_credit_grants_expiry', ['expires_at'], unique=False)
        batch.create_index('ix_credit_grants_wallet', ['wallet_id', 'id'], unique=False)

    with op.batch_alter_table('wallets') as batch:
        batch.add_column(
            sa.Column('version', sa.BigInteger(), server_default='0', nullable=False)
        )
    with op.batch_alter_table('ledger_entries') as batch:
        batch.add_column(sa.Column('grant_id', BigId, nullable=True))
        batch.create_index(batch.f('ix_ledger_entries_grant_id'), ['grant_id'], unique=False)
        batch.create_foreign_key(
            batch.f('fk_ledger_entries_grant_id_credit_grants'), 'credit_grants', ['grant_id'], ['id']
        )
        batch.drop_constraint(batch.f('ck_ledger_entries_type'), type_='check')
        batch.create_check_constraint(
            batch.f('ck_ledger_entries_type'),
            "type IN ('topup', 'usage', 'adjustment', 'expiry', 'void')",
        )

    op.create_table(
        'credit_allocations',
        sa.Column('id', BigId, nullable=False),
        sa.Column('ledger_entry_id', BigId, nullable=False),
        sa.Column('grant_id', BigId, nullable=False),
        sa.Column('amount_micros', sa.BigInteger(), nullable=False),
        sa.CheckConstraint('amount_micros > 0', name=op.f('ck_credit_allocations_amount_positive')),
        sa.ForeignKeyConstraint(
            ['grant_id'], ['credit_grants.id'],
            name=op.f('fk_credit_allocations_grant_id_credit_grants'),
        ),
        sa.ForeignKeyConstraint(
            ['ledger_entry_id'], ['ledger_entries.id'],
            name=op.f('fk_credit_allocations_ledger_entry_id_ledger_entries'),
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_credit_allocations')),
    )
    with op.batch_alter_table('credit_allocations') as batch:
        batch.create_index('ix_credit_allocations_entry', ['ledger_entry_id'], unique=False)
        batch.create_index('ix_credit_allocations_grant', ['grant_id', 'id'], unique=False)

    _migrate_wallets(op.get_bind())


def _migrate_wallets(conn):
    """Replay every wallet's ledger into grants and allocations (see the module docstring)."""
    ledger = sa.table(
        'ledger_entries', sa.column('id'), sa.column('wallet_id'), sa.column('customer_id'),
        sa.column('type'), sa.column('kind'), sa.column('amount_micros'),
        sa.column('reference'), sa.column('note'), sa.column('actor'), sa.column('created_at'),
        sa.column('usage_event_id'), sa.column('grant_id'),
    )
    events = sa.table('usage_events', sa.column('id'), sa.column('timestamp'))
    grants = sa.table(
        'credit_grants', sa.column('id'), sa.column('wallet_id'), sa.column('customer_id'),
        sa.column('kind'), sa.column('amount_micros'), sa.column('remaining_micros'),
        sa.column('priority'), sa.column('effective_at'), sa.column('expires_at'),
        sa.column('reference'), sa.column('note'), sa.column('actor'), sa.column('created_at'),
        sa.column('expired_micros'), sa.column('voided_micros'),
    )
    allocations = sa.table(
        'credit_allocations', sa.column('ledger_entry_id'), sa.column('grant_id'),
        sa.column('amount_micros'),
    )
    first_event = dict(
        conn.execute(
            sa.select(ledger.c.wallet_id, sa.func.min(events.c.timestamp))
            .join(events, events.c.id == ledger.c.usage_event_id)
            .group_by(ledger.c.wallet_id)
        ).all()
    )
    next_id = (conn.execute(sa.select(sa.func.max(grants.c.id))).scalar() or 0) + 1
    grant_rows, links, alloc_rows = [], [], []
    live = {}  # wallet id -> its grants in spending order: (priority, kind order, effective, id)
    amounts, remaining = {}, {}  # grant id -> amount, remaining

    def flush():
        # Grants first (with their full amount; the final remaining is set at the end), so that
        # the allocations' foreign keys hold.
        if grant_rows:
            conn.execute(grants.insert(), grant_rows)
            grant_rows.clear()
        if links:
            conn.execute(
                ledger.update()
                .where(ledger.c.id == sa.bindparam('eid'))
                .values(grant_id=sa.bindparam('gid')),
                links,
            )
            links.clear()
        if alloc_rows:
            conn.execute(allocations.insert(), alloc_rows)
            alloc_rows.clear()

    after = (-1, -1)
    while True:
        rows = conn.execute(
            sa.select(
                ledger.c.id, ledger.c.wallet_id, ledger.c.customer_id, ledger.c.type,
                ledger.c.kind, ledger.c.amount_micros, ledger.c.reference, ledger.c.note,
                ledger.c.actor, ledger.c.created_at,
            )
            .where(sa.tuple_(ledger.c.wallet_id, ledger.c.id) > sa.tuple_(*after))
            .order_by(ledger.c.wallet_id, ledger.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            break
        after = (rows[-1][1], rows[-1][0])
        for eid, wid, cid, type_, kind, amount, reference, note, actor, created in rows:
            pool = live.setdefault(wid, [])
            if amount > 0:  # a topup or a positive adjustment: a grant of its own
                kind = (kind or 'purchased') if type_ == 'topup' else 'granted'
                start = first_event.get(wid)
                effective = created if start is None or created <= start else start
                gid = next_id
                next_id += 1
                grant_rows.append({
                    'id': gid, 'wallet_id': wid, 'customer_id': cid, 'kind': kind,
                    'amount_micros': amount, 'remaining_micros': amount,
                    'priority': PRIORITY[kind], 'effective_at': effective, 'expires_at': None,
                    'reference': reference, 'note': note, 'actor': actor,
                    'created_at': created, 'expired_micros': 0, 'voided_micros': 0,
                })
                amounts[gid] = remaining[gid] = amount
                pool.append((PRIORITY[kind], 0 if kind == 'granted' else 1, effective, gid))
                pool.sort()
                links.append({'eid': eid, 'gid': gid})
            else:  # usage or a negative adjustment: allocations in spending order
                left = -amount
                for *_, gid in pool:
                    if not left:
                        break
                    take = min(left, remaining[gid])
                    if take:
                        remaining[gid] -= take
                        left -= take
                        alloc_rows.append(
                            {'ledger_entry_id': eid, 'grant_id': gid, 'amount_micros': take}
                        )
                if left:
                    raise RuntimeError(f'ledger entry {eid}: the wallet held less than it spent')
                pool[:] = [g for g in pool if remaining[g[3]]]
        flush()
    spent = [{'gid': gid, 'left': left} for gid, left in remaining.items() if left != amounts[gid]]
    if spent:
        conn.execute(
            grants.update()
            .where(grants.c.id == sa.bindparam('gid'))
            .values(remaining_micros=sa.bindparam('left')),
            spent,
        )


def downgrade():
    # Before grants a wallet could not lose credits to an expiry or a void: such entries have no
    # older form, and dropping them would break every balance after them.
    removed = op.get_bind().execute(
        sa.text("SELECT count(*) FROM ledger_entries WHERE type IN ('expiry', 'void')")
    ).scalar()
    if removed:
        raise RuntimeError(
            f'{removed} expiry or void ledger entries exist: they cannot be expressed without '
            'credit grants, so this downgrade would lose money. Restore a backup instead.'
        )
    op.drop_table('credit_allocations')
    with op.batch_alter_table('ledger_entries') as batch:
        batch.drop_constraint(batch.f('ck_ledger_entries_type'), type_='check')
        batch.create_check_constraint(
            batch.f('ck_ledger_entries_type'), "type IN ('topup', 'usage', 'adjustment')"
        )
        batch.drop_constraint(batch.f('fk_ledger_entries_grant_id_credit_grants'), type_='foreignkey')
        batch.drop_index(batch.f('ix_ledger_entries_grant_id'))
        batch.drop_column('grant_id')
    op.drop_table('credit_grants')
    with op.batch_alter_table('wallets') as batch:
        batch.drop_column('version')
