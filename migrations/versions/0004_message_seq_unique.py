"""A message's place in its session is unique: ``(cube_id, session_id, seq)``.

Before this, two processes ingesting into one PostgreSQL session could both read the same
``max(seq)`` and store messages under the same numbers (250 of 4,000 in a three-process
run), so a session's order was ambiguous. Ingest now allocates ``seq`` under a per-session
lock (:mod:`memos.store.ordering`); this index makes a duplicate impossible whatever writes.

A database that already holds duplicates is repaired first: each session that has one is
renumbered 0, 1, 2, … in ``(seq, pk)`` order — the order it was read in until now, with
the tie broken by insertion order — so no message moves relative to a message it did not
tie with. Sessions without duplicates keep their numbers.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 23:50:00.000000
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

_messages = sa.table('messages', sa.column('pk'), sa.column('cube_id'),
                     sa.column('session_id'), sa.column('seq'))


def _renumber_sessions_with_duplicates(connection: sa.Connection) -> None:
    m = _messages.c
    tied = (sa.select(m.cube_id, m.session_id)
            .group_by(m.cube_id, m.session_id, m.seq).having(sa.func.count() > 1)
            .distinct())
    for cube_id, session_id in connection.execute(tied).all():
        pks = connection.scalars(
            sa.select(m.pk).where(m.cube_id == cube_id, m.session_id == session_id)
            .order_by(m.seq, m.pk)).all()
        connection.execute(
            sa.update(_messages).where(m.pk == sa.bindparam('row_pk'))
            .values(seq=sa.bindparam('new_seq')),
            [{'row_pk': pk, 'new_seq': seq} for seq, pk in enumerate(pks)])


def upgrade() -> None:
    _renumber_sessions_with_duplicates(op.get_bind())
    op.drop_index('ix_messages_session', table_name='messages')
    op.create_index('ix_messages_session', 'messages', ['cube_id', 'session_id', 'seq'],
                    unique=True)


def downgrade() -> None:
    op.drop_index('ix_messages_session', table_name='messages')
    op.create_index('ix_messages_session', 'messages', ['cube_id', 'session_id', 'seq'])
