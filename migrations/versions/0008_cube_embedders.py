"""Per-cube embedders: ``cubes.embedder`` and the re-embed job's ``reembed_vectors``.

A cube records the embedder spec its vectors come from; existing cubes of the bundled
model (or the test-only hashing one) get its spec, any other stays null (the server's
default embeds it, as before). Switching a cube's embedder runs a ``reembed_cube`` job
that stores each unit's new vector in ``reembed_vectors`` (its resumable progress) and
moves them into ``memory_units.embedding`` in one commit.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 02:00:00.000000
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from memos.store.models import Embedding, JSONType

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


#: Fingerprints older cubes may hold whose spec is known: they keep their model when the
#: server's default changes (other cubes keep ``embedder`` null: the default embeds them).
KNOWN = {
    "all-MiniLM-L6-v2-onnx-int8@8199be6f699a395f": {"kind": "bundled", "variant": "default"},
    "hashing-64": {"kind": "hashing", "dim": 64},
}


def upgrade() -> None:
    op.add_column('cubes', sa.Column('embedder', JSONType, nullable=True))
    cubes = sa.table('cubes', sa.column('embedding_model', sa.String),
                     sa.column('embedder', JSONType))
    for model, spec in KNOWN.items():
        op.execute(cubes.update().where(cubes.c.embedding_model == model)
                   .values(embedder=spec))
    op.create_table(
        'reembed_vectors',
        sa.Column('unit_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                  sa.ForeignKey('memory_units.pk', ondelete='CASCADE'), primary_key=True),
        sa.Column('model', sa.String(200), primary_key=True),
        sa.Column('cube_key', sa.String(128), sa.ForeignKey('cubes.key', ondelete='CASCADE'),
                  nullable=False),
        sa.Column('embedding', Embedding(), nullable=False),
    )
    op.create_index('ix_reembed_vectors_cube_key', 'reembed_vectors', ['cube_key'])


def downgrade() -> None:
    op.drop_index('ix_reembed_vectors_cube_key', table_name='reembed_vectors')
    op.drop_table('reembed_vectors')
    with op.batch_alter_table('cubes') as batch:
        batch.drop_column('embedder')
