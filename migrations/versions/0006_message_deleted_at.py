"""Messages record when their turn was deleted: ``messages.deleted_at``.

Deleting (or purging) a turn used to tombstone only its unit; the message stayed a source,
so the session transcript, summaries, keywords and facts kept being derived from it. A
deleted message is now kept for the turn's history but skipped by every deriver.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 00:00:00.000000
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from memos.store.models import UTCDateTime

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('messages', sa.Column('deleted_at', UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('messages') as batch:
        batch.drop_column('deleted_at')
