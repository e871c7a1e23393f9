"""Per-session unit lookups use one index: ``ix_units_session`` gains granularity and status.

With only ``(cube_id, session_id)``, SQLite answered "the active turns of session S" through
``ix_units_cube_status (cube_id, status, granularity)``, which scans every active turn of the
cube: 33 ms per lookup at 24k units, several lookups per ingested session, so ingest slowed
as the cube grew. The longer index wins the plan (0.15 ms) and still serves
``(cube_id, session_id)`` lookups as a prefix.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 12:00:00.000000
"""
from __future__ import annotations

from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_units_session', table_name='memory_units')
    op.create_index('ix_units_session', 'memory_units',
                    ['cube_id', 'session_id', 'granularity', 'status'])


def downgrade() -> None:
    op.drop_index('ix_units_session', table_name='memory_units')
    op.create_index('ix_units_session', 'memory_units', ['cube_id', 'session_id'])
