"""Initial schema: cubes, messages, memory units, spans, links, tags, jobs, API keys.

On PostgreSQL the pgvector extension is enabled and an HNSW index (inner product) is built
for 384-dimensional embeddings (the default embedder); other dimensions are searched exactly.

Revision ID: 0001
Revises:
Create Date: 2026-11-22 19:04:22.676048
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

import memos.store.models

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.create_table('api_keys',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('tenant', sa.String(length=128), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=True),
    sa.Column('key_sha256', sa.String(length=64), nullable=False),
    sa.Column('created_at', memos.store.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', memos.store.models.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key_sha256')
    )
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_keys_tenant'), ['tenant'], unique=False)

    op.create_table('cubes',
    sa.Column('id', sa.String(length=128), nullable=False),
    sa.Column('tenant', sa.String(length=128), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=True),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('metadata', sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), 'postgresql'), nullable=False),
    sa.Column('embedding_model', sa.String(length=200), nullable=False),
    sa.Column('embedding_dim', sa.Integer(), nullable=False),
    sa.Column('index_version', sa.BigInteger(), nullable=False),
    sa.Column('created_at', memos.store.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('cubes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_cubes_tenant'), ['tenant'], unique=False)

    op.create_table('jobs',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('cube_id', sa.String(length=128), nullable=True),
    sa.Column('payload', sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), 'postgresql'), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('progress', sa.Float(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('run_after', memos.store.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('locked_by', sa.String(length=128), nullable=True),
    sa.Column('locked_at', memos.store.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', memos.store.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', memos.store.models.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('pk')
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_claim', ['status', 'run_after'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_cube_id'), ['cube_id'], unique=False)

    op.create_table('memory_units',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('cube_id', sa.String(length=128), nullable=False),
    sa.Column('tenant', sa.String(length=128), nullable=False),
    sa.Column('lineage_id', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('granularity', sa.String(length=16), nullable=False),
    sa.Column('text', sa.Text(), nullable=True),
    sa.Column('content_sha', sa.String(length=64), nullable=True),
    sa.Column('payload_sha256', sa.String(length=64), nullable=True),
    sa.Column('payload_meta', sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), 'postgresql'), nullable=True),
    sa.Column('session_id', sa.String(length=128), nullable=True),
    sa.Column('speaker', sa.String(length=200), nullable=True),
    sa.Column('extractor', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('status_reason', sa.Text(), nullable=True),
    sa.Column('tags', sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), 'postgresql'), nullable=False),
    sa.Column('metadata', sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), 'postgresql'), nullable=False),
    sa.Column('confidence', sa.Float(), nullable=False),
    sa.Column('valid_from', memos.store.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('valid_to', memos.store.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', memos.store.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('superseded_at', memos.store.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('deleted_at', memos.store.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('embedding', memos.store.models.Embedding(), nullable=True),
    sa.ForeignKeyConstraint(['cube_id'], ['cubes.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('pk'),
    sa.UniqueConstraint('id')
    )
    with op.batch_alter_table('memory_units', schema=None) as batch_op:
        batch_op.create_index('ix_units_cube_status', ['cube_id', 'status', 'granularity'], unique=False)
        batch_op.create_index('ix_units_lineage', ['lineage_id', 'version'], unique=False)
        batch_op.create_index('ix_units_session', ['cube_id', 'session_id'], unique=False)

    op.create_table('messages',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('id', sa.String(length=128), nullable=False),
    sa.Column('cube_id', sa.String(length=128), nullable=False),
    sa.Column('session_id', sa.String(length=128), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('speaker', sa.String(length=200), nullable=True),
    sa.Column('content', sa.Text(), nullable=False),
    sa.Column('content_sha', sa.String(length=64), nullable=False),
    sa.Column('timestamp', memos.store.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', memos.store.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['cube_id'], ['cubes.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('pk'),
    sa.UniqueConstraint('cube_id', 'id', name='uq_messages_cube_id'),
    sa.UniqueConstraint('cube_id', 'session_id', 'content_sha', name='uq_messages_content')
    )
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.create_index('ix_messages_session', ['cube_id', 'session_id', 'seq'], unique=False)

    op.create_table('provenance_spans',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('unit_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('message_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('start', sa.Integer(), nullable=False),
    sa.Column('end', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['message_pk'], ['messages.pk'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['unit_pk'], ['memory_units.pk'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('pk')
    )
    with op.batch_alter_table('provenance_spans', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_provenance_spans_message_pk'), ['message_pk'], unique=False)
        batch_op.create_index(batch_op.f('ix_provenance_spans_unit_pk'), ['unit_pk'], unique=False)

    op.create_table('unit_links',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('cube_id', sa.String(length=128), nullable=False),
    sa.Column('src_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('dst_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('weight', sa.Float(), nullable=False),
    sa.Column('created_at', memos.store.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['cube_id'], ['cubes.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['dst_pk'], ['memory_units.pk'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['src_pk'], ['memory_units.pk'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('pk'),
    sa.UniqueConstraint('src_pk', 'dst_pk', 'type', name='uq_links')
    )
    with op.batch_alter_table('unit_links', schema=None) as batch_op:
        batch_op.create_index('ix_links_dst', ['dst_pk'], unique=False)
        batch_op.create_index(batch_op.f('ix_unit_links_cube_id'), ['cube_id'], unique=False)

    op.create_table('unit_tags',
    sa.Column('unit_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('tag', sa.String(length=200), nullable=False),
    sa.ForeignKeyConstraint(['unit_pk'], ['memory_units.pk'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('unit_pk', 'tag')
    )
    with op.batch_alter_table('unit_tags', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_unit_tags_tag'), ['tag'], unique=False)

    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE INDEX ix_units_embedding_hnsw_384 ON memory_units "
            "USING hnsw ((embedding::vector(384)) vector_ip_ops) "
            "WHERE vector_dims(embedding) = 384 AND status = 'active'")



def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_units_embedding_hnsw_384")
    with op.batch_alter_table('unit_tags', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_unit_tags_tag'))

    op.drop_table('unit_tags')
    with op.batch_alter_table('unit_links', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_unit_links_cube_id'))
        batch_op.drop_index('ix_links_dst')

    op.drop_table('unit_links')
    with op.batch_alter_table('provenance_spans', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_provenance_spans_unit_pk'))
        batch_op.drop_index(batch_op.f('ix_provenance_spans_message_pk'))

    op.drop_table('provenance_spans')
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index('ix_messages_session')

    op.drop_table('messages')
    with op.batch_alter_table('memory_units', schema=None) as batch_op:
        batch_op.drop_index('ix_units_session')
        batch_op.drop_index('ix_units_lineage')
        batch_op.drop_index('ix_units_cube_status')

    op.drop_table('memory_units')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_jobs_cube_id'))
        batch_op.drop_index('ix_jobs_claim')

    op.drop_table('jobs')
    with op.batch_alter_table('cubes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cubes_tenant'))

    op.drop_table('cubes')
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_keys_tenant'))

    op.drop_table('api_keys')
