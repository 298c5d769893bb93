"""plans: plans, plan entitlements, included credits, customer overrides, issuances; customers'
plan and scheduled change; entitlements' source and scheduled reset period

Revision ID: b8e4d2a6c1f3
Revises: d1e3f5a7b9c2
Create Date: 2026-12-01 10:00:03.916796

"""
import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision = 'b8e4d2a6c1f3'
down_revision = 'd1e3f5a7b9c2'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade():
    op.create_table('plans',
    sa.Column('id', BigId, nullable=False),
    sa.Column('key', sa.String(length=100), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('prorate_included_credits', sa.Boolean(), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.CheckConstraint("status IN ('active', 'archived')", name=op.f('ck_plans_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_plans')),
    sa.UniqueConstraint('key', name=op.f('uq_plans_key'))
    )
    op.create_table('plan_credits',
    sa.Column('id', BigId, nullable=False),
    sa.Column('plan_id', BigId, nullable=False),
    sa.Column('credit_system_id', BigId, nullable=False),
    sa.Column('amount_micros', sa.BigInteger(), nullable=False),
    sa.Column('period', sa.String(length=8), nullable=False),
    sa.CheckConstraint("period IN ('month', 'year')", name=op.f('ck_plan_credits_period')),
    sa.CheckConstraint('amount_micros > 0', name=op.f('ck_plan_credits_amount_positive')),
    sa.ForeignKeyConstraint(['credit_system_id'], ['credit_systems.id'], name=op.f('fk_plan_credits_credit_system_id_credit_systems')),
    sa.ForeignKeyConstraint(['plan_id'], ['plans.id'], name=op.f('fk_plan_credits_plan_id_plans')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_plan_credits')),
    sa.UniqueConstraint('plan_id', 'credit_system_id', name=op.f('uq_plan_credits_plan_id_credit_system_id'))
    )
    with op.batch_alter_table('plan_credits', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_plan_credits_credit_system_id'), ['credit_system_id'], unique=False)

    op.create_table('plan_entitlements',
    sa.Column('id', BigId, nullable=False),
    sa.Column('plan_id', BigId, nullable=False),
    sa.Column('feature_id', BigId, nullable=False),
    sa.Column('allowance_micros', sa.BigInteger(), nullable=True),
    sa.Column('reset_period', sa.String(length=8), nullable=False),
    sa.Column('overage', sa.String(length=8), nullable=False),
    sa.CheckConstraint("overage IN ('block', 'allow')", name=op.f('ck_plan_entitlements_overage')),
    sa.CheckConstraint("reset_period IN ('never', 'day', 'week', 'month', 'year')", name=op.f('ck_plan_entitlements_reset_period')),
    sa.CheckConstraint('allowance_micros IS NULL OR allowance_micros >= 0', name=op.f('ck_plan_entitlements_allowance')),
    sa.ForeignKeyConstraint(['feature_id'], ['features.id'], name=op.f('fk_plan_entitlements_feature_id_features')),
    sa.ForeignKeyConstraint(['plan_id'], ['plans.id'], name=op.f('fk_plan_entitlements_plan_id_plans')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_plan_entitlements')),
    sa.UniqueConstraint('plan_id', 'feature_id', name=op.f('uq_plan_entitlements_plan_id_feature_id'))
    )
    with op.batch_alter_table('plan_entitlements', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_plan_entitlements_feature_id'), ['feature_id'], unique=False)

    op.create_table('customer_overrides',
    sa.Column('id', BigId, nullable=False),
    sa.Column('customer_id', BigId, nullable=False),
    sa.Column('feature_id', BigId, nullable=False),
    sa.Column('allowance_set', sa.Boolean(), nullable=False),
    sa.Column('allowance_micros', sa.BigInteger(), nullable=True),
    sa.Column('reset_period', sa.String(length=8), nullable=True),
    sa.Column('overage', sa.String(length=8), nullable=True),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.CheckConstraint("overage IS NULL OR overage IN ('block', 'allow')", name=op.f('ck_customer_overrides_overage')),
    sa.CheckConstraint("reset_period IS NULL OR reset_period IN ('never', 'day', 'week', 'month', 'year')", name=op.f('ck_customer_overrides_reset_period')),
    sa.CheckConstraint('allowance_micros IS NULL OR allowance_micros >= 0', name=op.f('ck_customer_overrides_allowance')),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_customer_overrides_customer_id_customers')),
    sa.ForeignKeyConstraint(['feature_id'], ['features.id'], name=op.f('fk_customer_overrides_feature_id_features')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_customer_overrides')),
    sa.UniqueConstraint('customer_id', 'feature_id', name=op.f('uq_customer_overrides_customer_id_feature_id'))
    )
    with op.batch_alter_table('customer_overrides', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_customer_overrides_feature_id'), ['feature_id'], unique=False)

    op.create_table('plan_credit_issuances',
    sa.Column('id', BigId, nullable=False),
    sa.Column('customer_id', BigId, nullable=False),
    sa.Column('plan_id', BigId, nullable=False),
    sa.Column('credit_system_id', BigId, nullable=False),
    sa.Column('period_start', sa.DateTime(), nullable=False),
    sa.Column('grant_id', BigId, nullable=False),
    sa.Column('amount_micros', sa.BigInteger(), nullable=False),
    sa.Column('issued_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['credit_system_id'], ['credit_systems.id'], name=op.f('fk_plan_credit_issuances_credit_system_id_credit_systems')),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_plan_credit_issuances_customer_id_customers')),
    sa.ForeignKeyConstraint(['grant_id'], ['credit_grants.id'], name=op.f('fk_plan_credit_issuances_grant_id_credit_grants')),
    sa.ForeignKeyConstraint(['plan_id'], ['plans.id'], name=op.f('fk_plan_credit_issuances_plan_id_plans')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_plan_credit_issuances')),
    sa.UniqueConstraint('customer_id', 'plan_id', 'credit_system_id', 'period_start', name='uq_plan_credit_issuances_key')
    )
    with op.batch_alter_table('plan_credit_issuances', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_plan_credit_issuances_grant_id'), ['grant_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_plan_credit_issuances_plan_id'), ['plan_id'], unique=False)

    # Plain ADD COLUMN (no table copy): on SQLite a batch copy of `customers` would have to drop
    # a table that every other table references; REFERENCES on an added column is allowed there
    # (its default is NULL), but only inline, so SQLite gets the statement written out.
    for column in ('plan_id', 'pending_plan_id'):
        name = f'fk_customers_{column}_plans'
        if op.get_bind().dialect.name == 'sqlite':
            op.execute(
                f'ALTER TABLE customers ADD COLUMN {column} INTEGER '
                f'CONSTRAINT {name} REFERENCES plans (id)'
            )
        else:
            op.add_column('customers', sa.Column(column, BigId, nullable=True))
            op.create_foreign_key(name, 'customers', 'plans', [column], ['id'])
    op.add_column('customers', sa.Column('plan_assigned_at', sa.DateTime(), nullable=True))
    op.add_column('customers', sa.Column(
        'plan_revision', sa.Integer(), server_default='0', nullable=False
    ))
    op.add_column('customers', sa.Column('pending_plan_at', sa.DateTime(), nullable=True))
    op.create_index('ix_customers_pending_plan_at', 'customers', ['pending_plan_at'], unique=False)
    op.create_index('ix_customers_plan_id', 'customers', ['plan_id'], unique=False)
    with op.batch_alter_table('entitlements', schema=None) as batch_op:
        batch_op.add_column(sa.Column('source', sa.String(length=8), server_default='customer', nullable=False))
        batch_op.add_column(sa.Column('overridden', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('pending_reset_period', sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column('pending_reset_at', sa.DateTime(), nullable=True))
        batch_op.create_index(batch_op.f('ix_entitlements_pending_reset_at'), ['pending_reset_at'], unique=False)



def downgrade():
    with op.batch_alter_table('entitlements', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_entitlements_pending_reset_at'))
        batch_op.drop_column('pending_reset_at')
        batch_op.drop_column('pending_reset_period')
        batch_op.drop_column('overridden')
        batch_op.drop_column('source')

    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_customers_plan_id_plans'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('fk_customers_pending_plan_id_plans'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_customers_plan_id'))
        batch_op.drop_index(batch_op.f('ix_customers_pending_plan_at'))
        batch_op.drop_column('pending_plan_at')
        batch_op.drop_column('pending_plan_id')
        batch_op.drop_column('plan_revision')
        batch_op.drop_column('plan_assigned_at')
        batch_op.drop_column('plan_id')

    with op.batch_alter_table('plan_credit_issuances', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_plan_credit_issuances_plan_id'))
        batch_op.drop_index(batch_op.f('ix_plan_credit_issuances_grant_id'))

    op.drop_table('plan_credit_issuances')
    with op.batch_alter_table('customer_overrides', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_customer_overrides_feature_id'))

    op.drop_table('customer_overrides')
    with op.batch_alter_table('plan_entitlements', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_plan_entitlements_feature_id'))

    op.drop_table('plan_entitlements')
    with op.batch_alter_table('plan_credits', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_plan_credits_credit_system_id'))

    op.drop_table('plan_credits')
    op.drop_table('plans')
