"""Derived data follows its source: what a delete, correction or purge of a turn changes.

A turn's message is the source of its session's ``session``, ``summary`` and ``keyword``
units and of every unit citing it through a provenance span (extracted facts, memories
created with ``sources``). :func:`follow_source_change` runs inside the write that deleted,
corrected or purged the turn, so search never sees the old state:

- the ``session`` unit is rewritten from the session's live messages;
- the ``summary`` and ``keyword`` units are removed; the ``derive_session`` job, queued in
  the same transaction, derives them again (and, after a correction, extracts facts from
  the corrected text);
- a unit citing the message keeps living only if it still cites a live message; otherwise
  it is retired (``deleted``, the reason naming the source), and when it had superseded a
  previous version, that version is current again;
- KV caches and adapters built from what was retired are rebuilt
  (:func:`memos.store.lineage.queue_stale_rebuild`).

A purge erases instead of tombstoning (:func:`erase_unit`): the message's content, the
retired units' text, vector, metadata, tags, spans and links, and the activation and
parametric units built from them (their blob files are deleted after the commit). The write
publishes with ``erase=True`` so the vector index and the SQL files keep no copy
(:meth:`memos.store.units.UnitRepository.write`).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import numpy as np
from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from memos.derive import DERIVE_JOB
from memos.derive.session import refresh_session_unit
from memos.embed import Embedder
from memos.jobs import JobQueue
from memos.store.lineage import queue_stale_rebuild
from memos.store.models import CubeRow, LinkRow, MessageRow, SpanRow, TagRow, UnitRow

__all__ = ["Change", "SourceChange", "erase_unit", "erase_model_memory",
           "follow_source_change", "retired_by_correction"]

Change = Literal["deleted", "corrected", "purged"]

#: Units with a session-wide source: refreshed or re-derived, never retired one by one.
SESSION_DERIVED = ("session", "summary", "keyword")
#: ``meta`` key of a unit retired because its source changed (the change's name).
RETIRED_BY = "retired_by"


def retired_by_correction(row: UnitRow) -> bool:
    """Whether the unit was retired because its source message was corrected."""
    return row.status == "deleted" and (row.meta or {}).get(RETIRED_BY) == "corrected"


@dataclass
class SourceChange:
    """What a source change did: index changes to publish and what to report."""

    remove: list[int] = field(default_factory=list)
    add: list[tuple[int, np.ndarray]] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    sessions: list[str] = field(default_factory=list)
    model_memory: list[str] = field(default_factory=list)
    blobs: set[str] = field(default_factory=set)
    rebuild_queued: bool = False

    def vectors(self) -> np.ndarray | None:
        return np.stack([v for _, v in self.add]) if self.add else None


def erase_unit(session: Session, row: UnitRow, now: datetime) -> str | None:
    """Purge one unit row in place: text, vector, hashes, metadata, tags, payload, spans and
    links go; a ``deleted`` tombstone saying ``purged`` stays. Returns the payload blob's
    sha256, which the caller deletes after the commit."""
    sha = row.payload_sha256
    row.text, row.embedding, row.content_sha = None, None, None
    row.meta, row.tags, row.payload_meta, row.payload_sha256 = {}, [], None, None
    row.status, row.status_reason = "deleted", "purged"
    row.deleted_at = row.deleted_at or now
    session.execute(delete(TagRow).where(TagRow.unit_pk == row.pk))
    session.execute(delete(SpanRow).where(SpanRow.unit_pk == row.pk))
    session.execute(delete(LinkRow).where(or_(LinkRow.src_pk == row.pk,
                                              LinkRow.dst_pk == row.pk)))
    return sha


def erase_model_memory(session: Session, pks: Collection[int], now: datetime,
                       change: SourceChange) -> None:
    """Purge every activation and parametric unit built from the units ``pks`` (call before
    their links are erased)."""
    if not pks:
        return
    rows = session.scalars(select(UnitRow).join(LinkRow, LinkRow.src_pk == UnitRow.pk).where(
        LinkRow.dst_pk.in_(list(pks)), LinkRow.type == "derived_from",
        UnitRow.kind.in_(["activation", "parametric"]))).unique().all()
    for row in rows:
        change.model_memory.append(row.id)
        sha = erase_unit(session, row, now)
        if sha:
            change.blobs.add(sha)


def follow_source_change(session: Session, *, cube: CubeRow,
                         messages: Sequence[MessageRow], change_kind: Change,
                         units_changed: Sequence[int], embedder: Embedder, jobs: JobQueue,
                         now: datetime) -> SourceChange:
    """Re-derive or retire what derives from ``messages``, inside the caller's write.

    The caller has already tombstoned (or erased, or superseded with a corrected version)
    the turn units ``units_changed`` and, for a correction, rewritten the message content.
    """
    change = SourceChange()
    message_pks = [m.pk for m in messages]
    for message in messages:
        if change_kind != "corrected":
            message.deleted_at = message.deleted_at or now
        if change_kind == "purged":
            # The dedupe hash would confirm a guess of the text: a purge forgets it too.
            message.content, message.content_sha = "", f"purged:{uuid.uuid4().hex}"
    session.flush()
    sources = {m.pk: m.id for m in messages}

    citing = session.scalars(select(UnitRow).join(SpanRow, SpanRow.unit_pk == UnitRow.pk).where(
        SpanRow.message_pk.in_(message_pks), UnitRow.cube_key == cube.key,
        UnitRow.granularity.not_in(("turn", *SESSION_DERIVED)))).unique().all()
    retire = [row for row in citing if not _cites_live_message(session, row, message_pks)]
    retired_pks = {row.pk for row in retire}
    previous = {row.pk: _superseded_by(session, row) for row in retire
                if row.status == "active"}

    session_ids = sorted({m.session_id for m in messages})
    derived = session.scalars(select(UnitRow).where(
        UnitRow.cube_key == cube.key, UnitRow.session_id.in_(session_ids),
        UnitRow.granularity.in_(("summary", "keyword")), UnitRow.kind == "plaintext")).all()
    gone = [*units_changed, *retired_pks, *(d.pk for d in derived)]
    if change_kind == "purged":
        erase_model_memory(session, gone, now, change)
    else:
        change.rebuild_queued = queue_stale_rebuild(session, jobs, cube=cube, changed=gone)

    for row in citing:
        if row.pk not in retired_pks and change_kind == "purged":
            session.execute(delete(SpanRow).where(SpanRow.unit_pk == row.pk,
                                                  SpanRow.message_pk.in_(message_pks)))
    for row in retire:
        if row.status == "active":
            change.remove.append(row.pk)
        change.retired.append(row.id)
        if change_kind == "purged":
            erase_unit(session, row, now)
        else:
            cited = ", ".join(sorted({sources[s.message_pk] for s in session.scalars(
                select(SpanRow).where(SpanRow.unit_pk == row.pk,
                                      SpanRow.message_pk.in_(message_pks)))}))
            row.status, row.deleted_at = "deleted", row.deleted_at or now
            row.status_reason = f"source message {cited} was {change_kind}"
            row.meta = {**(row.meta or {}), RETIRED_BY: change_kind}
    for earlier in previous.values():
        if earlier is None or earlier.pk in retired_pks or earlier.status != "superseded":
            continue
        earlier.status, earlier.superseded_at, earlier.valid_to = "active", None, None
        earlier.status_reason = "current again: the version that replaced it lost its source"
        change.restored.append(earlier.id)
        if earlier.embedding is not None:
            change.add.append((earlier.pk, earlier.embedding))

    for row in derived:
        if row.status == "active":
            change.remove.append(row.pk)
        session.execute(delete(SpanRow).where(SpanRow.unit_pk == row.pk))
        session.execute(delete(TagRow).where(TagRow.unit_pk == row.pk))
        session.execute(delete(LinkRow).where(or_(LinkRow.src_pk == row.pk,
                                                  LinkRow.dst_pk == row.pk)))
        session.delete(row)
    session.flush()
    for session_id in session_ids:
        refreshed = refresh_session_unit(session, cube, session_id, now=now,
                                         embedder=embedder)
        if refreshed.stale_pk is not None:
            change.remove.append(refreshed.stale_pk)
        if refreshed.unit is not None and refreshed.unit.embedding is not None:
            change.add.append((refreshed.unit.pk, refreshed.unit.embedding))
        jobs.enqueue(session, kind=DERIVE_JOB, cube_key=cube.key,
                     payload={"session_id": session_id, "tenant": cube.tenant})
        change.sessions.append(session_id)
    session.flush()
    return change


def _cites_live_message(session: Session, row: UnitRow, changed: Sequence[int]) -> bool:
    """Whether the unit cites a message other than ``changed`` that is not deleted."""
    return session.scalar(select(SpanRow.pk).join(
        MessageRow, MessageRow.pk == SpanRow.message_pk).where(
        SpanRow.unit_pk == row.pk, SpanRow.message_pk.not_in(list(changed)),
        MessageRow.deleted_at.is_(None)).limit(1)) is not None


def _superseded_by(session: Session, row: UnitRow) -> UnitRow | None:
    """The version ``row`` superseded (its ``supersedes`` link), if any."""
    return session.scalar(select(UnitRow).join(LinkRow, LinkRow.dst_pk == UnitRow.pk).where(
        LinkRow.src_pk == row.pk, LinkRow.type == "supersedes").limit(1))
