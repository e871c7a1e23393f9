"""SQLAlchemy 2.0 rows. The schema changes only through Alembic (``migrations/``).

Tenants are separate namespaces. A cube's public ``id`` is unique within its tenant only;
its internal ``key`` (never shown) is unique across the server, and every row that belongs
to a cube references it as ``cube_key``. So two tenants can each have a cube ``demo``, and a
query that names a cube can only name it by key, found through the tenant
(:meth:`memos.store.units.UnitRepository.cube_row`). Messages and memory units have public
ids unique within their cube.

Every memory unit has an integer primary key ``pk`` (the key of the vector index) and a public
string ``id``. Versions of one memory share a ``lineage_id``; exactly one version of a lineage
is not superseded.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import numpy as np
from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


class Embedding(TypeDecorator[np.ndarray]):
    """A float32 vector: pgvector ``vector`` on PostgreSQL, raw little-endian bytes elsewhere."""

    impl = LargeBinary
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            from pgvector.sqlalchemy import Vector

            return dialect.type_descriptor(Vector())
        return dialect.type_descriptor(LargeBinary())

    def process_bind_param(self, value: np.ndarray | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        arr = np.asarray(value, dtype=np.float32).ravel()
        if dialect.name == "postgresql":
            return arr
        return arr.astype("<f4").tobytes()

    def process_result_value(self, value: Any, dialect: Dialect) -> np.ndarray | None:
        if value is None:
            return None
        if isinstance(value, (bytes, memoryview)):
            return np.frombuffer(bytes(value), dtype="<f4").astype(np.float32)
        return np.asarray(value, dtype=np.float32)


JSONType = JSON().with_variant(postgresql.JSONB(), "postgresql")


class Base(DeclarativeBase):
    pass


class CubeRow(Base):
    __tablename__ = "cubes"
    __table_args__ = (UniqueConstraint("tenant", "id", name="uq_cubes_tenant_id"),)

    #: internal, server-wide unique; children reference it. Never in a response.
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    #: public, unique within the tenant
    id: Mapped[str] = mapped_column(String(128))
    tenant: Mapped[str] = mapped_column(String(128), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)
    embedding_model: Mapped[str] = mapped_column(String(200))
    embedding_dim: Mapped[int] = mapped_column(Integer)
    #: the embedder spec (:data:`memos.types.EmbedderSpec` as JSON) that produced the cube's
    #: vectors; None for cubes older than migration 0008 (the server default embeds them)
    embedder: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    index_version: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MessageRow(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("cube_key", "id", name="uq_messages_cube_id"),
        UniqueConstraint("cube_key", "session_id", "content_sha", name="uq_messages_content"),
        # A message's place in its session; allocated by memos.store.ordering (migration 0004).
        Index("ix_messages_session", "cube_key", "session_id", "seq", unique=True),
    )

    pk: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(128))
    cube_key: Mapped[str] = mapped_column(ForeignKey("cubes.key", ondelete="CASCADE"))
    session_id: Mapped[str] = mapped_column(String(128))
    seq: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    speaker: Mapped[str | None] = mapped_column(String(200))
    content: Mapped[str] = mapped_column(Text)
    content_sha: Mapped[str] = mapped_column(String(64))
    timestamp: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: Set when the message's turn is deleted: kept (content and all) for the turn's history,
    #: never derived from again. A purge also empties ``content`` (:mod:`memos.derive.sources`).
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class UnitRow(Base):
    __tablename__ = "memory_units"
    __table_args__ = (
        UniqueConstraint("cube_key", "id", name="uq_units_cube_id"),
        Index("ix_units_cube_status", "cube_key", "status", "granularity"),
        Index("ix_units_lineage", "lineage_id", "version"),
        # Longer than ix_units_cube_status, so per-session lookups (turns, session and derived
        # units of one session) never scan every active unit of the cube instead.
        Index("ix_units_session", "cube_key", "session_id", "granularity", "status"),
    )

    pk: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64))
    cube_key: Mapped[str] = mapped_column(ForeignKey("cubes.key", ondelete="CASCADE"))
    tenant: Mapped[str] = mapped_column(String(128))
    lineage_id: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, default=1)
    kind: Mapped[str] = mapped_column(String(16))
    granularity: Mapped[str] = mapped_column(String(16))
    text: Mapped[str | None] = mapped_column(Text)
    content_sha: Mapped[str | None] = mapped_column(String(64))
    payload_sha256: Mapped[str | None] = mapped_column(String(64))
    payload_meta: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    session_id: Mapped[str | None] = mapped_column(String(128))
    speaker: Mapped[str | None] = mapped_column(String(200))
    extractor: Mapped[str] = mapped_column(String(200), default="user")
    status: Mapped[str] = mapped_column(String(16), default="active")
    status_reason: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[list[str]] = mapped_column(JSONType, default=list)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)
    confidence: Mapped[float] = mapped_column(Float, default=1.0)
    valid_from: Mapped[datetime | None] = mapped_column(UTCDateTime)
    valid_to: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    superseded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    embedding: Mapped[np.ndarray | None] = mapped_column(Embedding)
    #: Times the unit came back as a search hit; the scheduler's "hot" signal. Counted in
    #: memory and added in batches (:class:`memos.usage.RetrievalCounter`), never written
    #: on the search path.
    retrievals: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class TagRow(Base):
    __tablename__ = "unit_tags"

    unit_pk: Mapped[int] = mapped_column(ForeignKey("memory_units.pk", ondelete="CASCADE"),
                                         primary_key=True)
    tag: Mapped[str] = mapped_column(String(200), primary_key=True, index=True)


class SpanRow(Base):
    __tablename__ = "provenance_spans"

    pk: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)
    unit_pk: Mapped[int] = mapped_column(ForeignKey("memory_units.pk", ondelete="CASCADE"),
                                         index=True)
    message_pk: Mapped[int] = mapped_column(ForeignKey("messages.pk", ondelete="CASCADE"),
                                            index=True)
    start: Mapped[int] = mapped_column(Integer)
    end: Mapped[int] = mapped_column(Integer)


class LinkRow(Base):
    __tablename__ = "unit_links"
    __table_args__ = (
        UniqueConstraint("src_pk", "dst_pk", "type", name="uq_links"),
        Index("ix_links_dst", "dst_pk"),
    )

    pk: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)
    cube_key: Mapped[str] = mapped_column(ForeignKey("cubes.key", ondelete="CASCADE"),
                                          index=True)
    src_pk: Mapped[int] = mapped_column(ForeignKey("memory_units.pk", ondelete="CASCADE"))
    dst_pk: Mapped[int] = mapped_column(ForeignKey("memory_units.pk", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(32))
    weight: Mapped[float] = mapped_column(Float, default=1.0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ReembedVectorRow(Base):
    """A unit's vector from the model a re-embed job moves its cube to, kept until the job
    switches the cube over (:mod:`memos.embedders.reembed`): the job's resumable progress."""

    __tablename__ = "reembed_vectors"

    unit_pk: Mapped[int] = mapped_column(ForeignKey("memory_units.pk", ondelete="CASCADE"),
                                         primary_key=True)
    #: the target model's fingerprint (:attr:`memos.embed.Embedder.name`)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    cube_key: Mapped[str] = mapped_column(ForeignKey("cubes.key", ondelete="CASCADE"),
                                          index=True)
    embedding: Mapped[np.ndarray] = mapped_column(Embedding)


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_claim", "status", "run_after"),)

    pk: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(64))
    #: the cube's internal key; no foreign key, so a job outlives its cube and ends quietly
    cube_key: Mapped[str | None] = mapped_column(String(128), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(Text)
    run_after: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    locked_by: Mapped[str | None] = mapped_column(String(128))
    locked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


def vector_of(row: UnitRow) -> np.ndarray:
    """The row's embedding; raises for a purged row (searches select non-null rows only)."""
    if row.embedding is None:
        raise ValueError(f"memory unit {row.id} has no embedding")
    return row.embedding
