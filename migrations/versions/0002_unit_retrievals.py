"""Retrieval counts: ``memory_units.retrievals`` (search hits, the scheduler's "hot" signal).

Existing rows start at 0 (server default), so the upgrade is one ``ADD COLUMN`` on both
SQLite and PostgreSQL, with no table rewrite on PostgreSQL 11+.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 10:00:00.000000
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('memory_units', schema=None) as batch_op:
        batch_op.add_column(sa.Column('retrievals', sa.Integer(), server_default='0',
                                      nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('memory_units', schema=None) as batch_op:
        batch_op.drop_column('retrievals')
