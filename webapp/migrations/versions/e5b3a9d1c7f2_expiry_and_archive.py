"""api_keys.expires_at (optional key expiry); features and credit_systems .archived_at

Revision ID: e5b3a9d1c7f2
Revises: d4a81f0c2b57
Create Date: 2026-12-01 04:30:00

"""
import sqlalchemy as sa
from alembic import op

revision = 'e5b3a9d1c7f2'
down_revision = 'd4a81f0c2b57'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('api_keys') as batch:
        batch.add_column(sa.Column('expires_at', sa.DateTime(), nullable=True))
    for table in ('features', 'credit_systems'):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column('archived_at', sa.DateTime(), nullable=True))


def downgrade():
    for table in ('features', 'credit_systems'):
        with op.batch_alter_table(table) as batch:
            batch.drop_column('archived_at')
    with op.batch_alter_table('api_keys') as batch:
        batch.drop_column('expires_at')
