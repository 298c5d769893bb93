"""webhook endpoints, deliveries and attempts; the worker's periodic jobs

Revision ID: d1e3f5a7b9c2
Revises: c8e4f2a6d0b3
Create Date: 2026-12-01 10:30:00

"""
import sqlalchemy as sa
from alembic import op

revision = 'd1e3f5a7b9c2'
down_revision = 'c8e4f2a6d0b3'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade():
    op.create_table(
        'webhook_endpoints',
        sa.Column('id', BigId, nullable=False),
        sa.Column('url', sa.String(length=2000), nullable=False),
        sa.Column('description', sa.String(length=500), nullable=False),
        sa.Column('event_types', sa.JSON(), nullable=True),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('secret', sa.String(length=100), nullable=False),
        sa.Column('previous_secret', sa.String(length=100), nullable=True),
        sa.Column('previous_secret_until', sa.DateTime(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_endpoints')),
    )
    op.create_table(
        'webhook_deliveries',
        sa.Column('id', BigId, nullable=False),
        sa.Column('endpoint_id', BigId, nullable=False),
        sa.Column('event_id', BigId, nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(), nullable=False),
        sa.Column('give_up_at', sa.DateTime(), nullable=False),
        sa.Column('lease_until', sa.DateTime(), nullable=True),
        sa.Column('leased_by', sa.String(length=100), nullable=True),
        sa.Column('delivered_at', sa.DateTime(), nullable=True),
        sa.Column('last_status_code', sa.Integer(), nullable=True),
        sa.Column('last_error', sa.String(length=500), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'delivered', 'failed')",
            name=op.f('ck_webhook_deliveries_status'),
        ),
        sa.ForeignKeyConstraint(
            ['endpoint_id'], ['webhook_endpoints.id'],
            name=op.f('fk_webhook_deliveries_endpoint_id_webhook_endpoints'),
        ),
        sa.ForeignKeyConstraint(
            ['event_id'], ['outbox_events.id'],
            name=op.f('fk_webhook_deliveries_event_id_outbox_events'),
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_deliveries')),
        sa.UniqueConstraint(
            'endpoint_id', 'event_id', name='uq_webhook_deliveries_endpoint_id'
        ),
    )
    with op.batch_alter_table('webhook_deliveries') as batch:
        batch.create_index('ix_webhook_deliveries_due', ['status', 'next_attempt_at'])
        batch.create_index('ix_webhook_deliveries_event', ['event_id'])
    op.create_table(
        'webhook_attempts',
        sa.Column('id', BigId, nullable=False),
        sa.Column('delivery_id', BigId, nullable=False),
        sa.Column('number', sa.Integer(), nullable=False),
        sa.Column('worker', sa.String(length=100), nullable=False),
        sa.Column('started_at', sa.DateTime(), nullable=False),
        sa.Column('finished_at', sa.DateTime(), nullable=True),
        sa.Column('outcome', sa.String(length=16), nullable=False),
        sa.Column('status_code', sa.Integer(), nullable=True),
        sa.Column('error', sa.String(length=500), nullable=True),
        sa.Column('response_body', sa.Text(), nullable=True),
        sa.Column('duration_ms', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ['delivery_id'], ['webhook_deliveries.id'],
            name=op.f('fk_webhook_attempts_delivery_id_webhook_deliveries'),
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_attempts')),
        sa.UniqueConstraint('delivery_id', 'number', name='uq_webhook_attempts_delivery_id'),
    )
    op.create_table(
        'worker_jobs',
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('next_run_at', sa.DateTime(), nullable=False),
        sa.Column('last_started_at', sa.DateTime(), nullable=True),
        sa.Column('last_finished_at', sa.DateTime(), nullable=True),
        sa.Column('last_error', sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_worker_jobs')),
    )


def downgrade():
    op.drop_table('worker_jobs')
    op.drop_table('webhook_attempts')
    op.drop_table('webhook_deliveries')
    op.drop_table('webhook_endpoints')
