"""Session units cite each message whole: their spans index into the message, like every
other unit's.

They were offsets into the session transcript (the unit's text), so provenance quoted the
wrong characters (``message.content[start:end]``) for every message but the first. The
spans of existing session units are rewritten to ``[0, len(content))`` of their message;
new ones are written so (:func:`memos.derive.session.refresh_session_unit`).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 01:30:00.000000
"""
from __future__ import annotations

from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        'UPDATE provenance_spans SET start = 0, "end" = '
        '(SELECT length(m.content) FROM messages m WHERE m.pk = provenance_spans.message_pk) '
        "WHERE unit_pk IN (SELECT pk FROM memory_units WHERE granularity = 'session')")


def downgrade() -> None:
    """Nothing to undo: whole-message spans are valid under the old reading too."""
