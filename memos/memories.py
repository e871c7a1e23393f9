"""Memories one by one: create with provenance, read, list, correct (a new version), delete,
and the history, provenance and per-session views of them.

Every method takes ``tenant`` (keyword-only): another tenant's cube is not found. A
correction writes version n+1 and marks version n ``superseded``; a delete tombstones every
version (``purge`` also erases text and vector); both queue the rebuild of model memory
derived from what changed (:func:`memos.store.lineage.queue_stale_rebuild`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import numpy as np
from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from memos.embed import Embedder, embed_texts
from memos.errors import Conflict, InvalidInput, NotFound
from memos.jobs import JobQueue
from memos.limits import check_span
from memos.public import message_public, unit_public
from memos.retrieval.search import filter_conditions
from memos.store.lineage import queue_stale_rebuild
from memos.store.models import LinkRow, MessageRow, SpanRow, UnitRow, utcnow
from memos.store.units import UnitRepository, content_hash, new_unit
from memos.types import (
    Filters,
    Granularity,
    LinkPublic,
    LinkType,
    MemoryCreate,
    MemoryPage,
    MemoryPublic,
    MemoryUpdate,
    ProvenancePublic,
    SpanPublic,
    Status,
)

__all__ = ["Memories"]


def _new_id() -> str:
    return uuid.uuid4().hex


class Memories:
    """The memory units of every cube of a unit repository, one at a time."""

    def __init__(self, *, units: UnitRepository, embedder: Embedder, jobs: JobQueue) -> None:
        self.units = units
        self.embedder = embedder
        self.jobs = jobs

    def _check_vector(self, vector: Sequence[float]) -> np.ndarray:
        """The unit vector of ``vector``, normalised in float64 (scaled by its largest value
        first, so neither tiny nor huge values under- or overflow)."""
        arr = np.asarray(vector, dtype=np.float64)
        if arr.ndim != 1 or arr.shape[0] != self.embedder.dim:
            raise InvalidInput(
                f"embedding has {arr.shape[0] if arr.ndim == 1 else arr.shape} values; this "
                f"cube's model {self.embedder.name!r} has {self.embedder.dim} dimensions",
                details={"expected_dim": self.embedder.dim})
        peak = float(np.max(np.abs(arr)))
        if not np.isfinite(peak) or peak == 0:
            raise InvalidInput("embedding must be finite and non-zero")
        arr = arr / peak
        return (arr / np.linalg.norm(arr)).astype(np.float32)

    def create_memory(self, cube_id: str, body: MemoryCreate, *, tenant: str) -> MemoryPublic:
        vector = (self._check_vector(body.embedding) if body.embedding is not None
                  else embed_texts(self.embedder, [body.text])[0])
        now = utcnow()
        with self.units.write() as (session, publish):
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            self.units.check_embedder(cube, self.embedder)
            spans = self._resolve_spans(session, cube_id, body)
            parents = self._resolve_units(session, cube_id, body.derived_from)
            row = new_unit(
                cube_id=cube_id, tenant=tenant, granularity=body.granularity.value,
                text=body.text, session_id=body.session_id, speaker=body.speaker,
                extractor=body.extractor, tags=list(dict.fromkeys(body.tags)),
                meta=body.metadata, confidence=body.confidence, valid_from=body.valid_from,
                valid_to=body.valid_to, created_at=now, embedding=vector)
            session.add(row)
            session.flush()
            self.units.set_tags(session, row, row.tags)
            for message_pk, start, end in spans:
                session.add(SpanRow(unit_pk=row.pk, message_pk=message_pk, start=start, end=end))
            for parent in parents:
                session.add(LinkRow(cube_id=cube_id, src_pk=row.pk, dst_pk=parent.pk,
                                    type="derived_from", weight=1.0, created_at=now))
            self.units.bump_index_version(cube)
            session.flush()
            public = unit_public(row)
            publish(cube, add=[row.pk], vectors=vector[None, :])
        return public

    def _resolve_spans(self, session: Session, cube_id: str,
                       body: MemoryCreate) -> list[tuple[int, int, int]]:
        if not body.sources:
            return []
        ids = {s.message_id for s in body.sources}
        found = {m.id: m for m in session.scalars(select(MessageRow).where(
            MessageRow.cube_id == cube_id, MessageRow.id.in_(ids)))}
        missing = sorted(ids - found.keys())
        if missing:
            raise NotFound(f"unknown source message ids: {missing}",
                               details={"missing_message_ids": missing})
        spans = []
        for src in body.sources:
            message = found[src.message_id]
            start = 0 if src.start is None else src.start
            end = len(message.content) if src.end is None else src.end
            check_span(src.message_id, start, end, length=len(message.content))
            spans.append((message.pk, start, end))
        return spans

    def _resolve_units(self, session: Session, cube_id: str, ids: Sequence[str]) -> list[UnitRow]:
        if not ids:
            return []
        rows = session.scalars(select(UnitRow).where(UnitRow.cube_id == cube_id,
                                                     UnitRow.id.in_(set(ids)))).all()
        missing = sorted(set(ids) - {r.id for r in rows})
        if missing:
            raise NotFound(f"unknown derived_from memory ids: {missing}",
                               details={"missing_memory_ids": missing})
        return list(rows)

    def get_memory(self, cube_id: str, memory_id: str, *, tenant: str) -> MemoryPublic:
        with self.units.store.transaction() as session:
            self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            return unit_public(self.units.unit_row(session, cube_id=cube_id, unit_id=memory_id))

    def list_memories(self, cube_id: str, filters: Filters, *, tenant: str, offset: int = 0,
                      limit: int = 50) -> MemoryPage:
        if not 1 <= limit <= 500 or offset < 0:
            raise InvalidInput("limit must be in [1, 500] and offset >= 0")
        with self.units.store.transaction() as session:
            self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            where = [UnitRow.cube_id == cube_id, *filter_conditions(filters)]
            total = session.scalar(select(func.count()).select_from(UnitRow).where(*where)) or 0
            rows = session.scalars(select(UnitRow).where(*where)
                                   .order_by(UnitRow.created_at, UnitRow.pk)
                                   .offset(offset).limit(limit)).all()
            return MemoryPage(items=[unit_public(r) for r in rows], total=total, offset=offset,
                              limit=limit)

    def update_memory(self, cube_id: str, memory_id: str, body: MemoryUpdate, *,
                      tenant: str) -> MemoryPublic:
        """Write a new version; the old one is kept, marked superseded, in the history."""
        changes = body.model_dump(exclude_unset=True, exclude={"reason"})
        if not changes:
            raise InvalidInput("nothing to update: give at least one field")
        vector = embed_texts(self.embedder, [body.text])[0] if body.text is not None else None
        now = utcnow()
        with self.units.write() as (session, publish):
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            self.units.check_embedder(cube, self.embedder)
            old = self.units.unit_row(session, cube_id=cube_id, unit_id=memory_id)
            if old.status == "superseded":
                current = session.scalar(select(UnitRow.id).where(
                    UnitRow.lineage_id == old.lineage_id, UnitRow.superseded_at.is_(None)))
                raise Conflict(f"memory {memory_id!r} was superseded; update the current "
                               f"version {current!r}", details={"current_id": current})
            if old.kind != "plaintext":
                raise InvalidInput(f"{old.kind} memories are rebuilt, not edited")
            new_id = _new_id()
            row = new_unit(
                unit_id=new_id, cube_id=cube_id, tenant=old.tenant, lineage_id=old.lineage_id,
                version=old.version + 1, kind=old.kind, granularity=old.granularity,
                text=body.text if body.text is not None else old.text,
                content_sha=content_hash(body.text) if body.text is not None else old.content_sha,
                session_id=old.session_id, speaker=old.speaker, extractor="user",
                status=(body.status or Status(old.status)).value,
                status_reason=body.reason,
                tags=body.tags if body.tags is not None else list(old.tags or []),
                meta=body.metadata if body.metadata is not None else dict(old.meta or {}),
                confidence=body.confidence if body.confidence is not None else old.confidence,
                valid_from=body.valid_from if "valid_from" in changes else old.valid_from,
                valid_to=body.valid_to if "valid_to" in changes else old.valid_to,
                created_at=now, embedding=vector if vector is not None else old.embedding)
            old.status, old.superseded_at = "superseded", now
            old.status_reason = body.reason or f"superseded by {new_id}"
            session.add(row)
            session.flush()
            self.units.set_tags(session, row, row.tags)
            for span in session.scalars(select(SpanRow).where(SpanRow.unit_pk == old.pk)):
                session.add(SpanRow(unit_pk=row.pk, message_pk=span.message_pk,
                                    start=span.start, end=span.end))
            for link in session.scalars(select(LinkRow).where(LinkRow.src_pk == old.pk,
                                                              LinkRow.type == "derived_from")):
                session.add(LinkRow(cube_id=cube_id, src_pk=row.pk, dst_pk=link.dst_pk,
                                    type="derived_from", weight=link.weight, created_at=now))
            session.add(LinkRow(cube_id=cube_id, src_pk=row.pk, dst_pk=old.pk,
                                type="supersedes", weight=1.0, created_at=now))
            self.units.bump_index_version(cube)
            session.flush()
            public = unit_public(row)
            if row.status == "active" and row.embedding is not None:
                publish(cube, remove=[old.pk], add=[row.pk], vectors=row.embedding[None, :])
            else:
                publish(cube, remove=[old.pk])
            queued = queue_stale_rebuild(session, self.jobs, cube_id=cube_id, tenant=tenant,
                                         changed=[old.pk])
        if queued:
            self.jobs.wake()
        return public

    def delete_memory(self, cube_id: str, memory_id: str, *, tenant: str,
                      purge: bool = False) -> None:
        """Tombstone the memory (every version of it); ``purge`` also erases text and vector."""
        now = utcnow()
        with self.units.write() as (session, publish):
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            row = self.units.unit_row(session, cube_id=cube_id, unit_id=memory_id)
            versions = session.scalars(select(UnitRow).where(
                UnitRow.lineage_id == row.lineage_id, UnitRow.cube_id == cube_id)).all()
            pks = [v.pk for v in versions]
            for version in versions:
                if version.status != "superseded":
                    version.status, version.deleted_at = "deleted", now
                    version.status_reason = "deleted"
                if purge:
                    version.text, version.embedding, version.content_sha = None, None, None
                    version.status, version.status_reason = "deleted", "purged"
                    version.deleted_at = version.deleted_at or now
            if purge:
                session.execute(delete(SpanRow).where(SpanRow.unit_pk.in_(pks)))
            self.units.bump_index_version(cube)
            publish(cube, remove=pks)
            queued = queue_stale_rebuild(session, self.jobs, cube_id=cube_id, tenant=tenant,
                                         changed=pks)
        if queued:
            self.jobs.wake()

    def session_memories(self, cube_id: str, session_id: str, *, tenant: str,
                         granularity: Granularity = Granularity.fact) -> list[MemoryPublic]:
        """Memories derived from one session (default: extracted facts), in creation order.

        Every status but ``deleted`` is returned — active, superseded (replaced later) and
        quarantined (refused by the faithfulness gate, with the reason) — so an evaluator
        sees exactly what extraction produced.
        """
        with self.units.store.transaction() as session:
            self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            rows = session.scalars(select(UnitRow).where(
                UnitRow.cube_id == cube_id, UnitRow.session_id == session_id,
                UnitRow.granularity == granularity.value, UnitRow.status != "deleted")
                .order_by(UnitRow.created_at, UnitRow.pk)).all()
            return [unit_public(r) for r in rows]

    def history(self, cube_id: str, memory_id: str, *, tenant: str) -> list[MemoryPublic]:
        with self.units.store.transaction() as session:
            self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            row = self.units.unit_row(session, cube_id=cube_id, unit_id=memory_id)
            versions = session.scalars(select(UnitRow).where(
                UnitRow.lineage_id == row.lineage_id, UnitRow.cube_id == cube_id)
                .order_by(UnitRow.version)).all()
            return [unit_public(v) for v in versions]

    def provenance(self, cube_id: str, memory_id: str, *, tenant: str,
                   max_depth: int = 5) -> ProvenancePublic:
        """Source messages with cited spans, the derived-from chain and the unit's links."""
        with self.units.store.transaction() as session:
            self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            row = self.units.unit_row(session, cube_id=cube_id, unit_id=memory_id)
            spans = session.execute(select(SpanRow, MessageRow).join(
                MessageRow, MessageRow.pk == SpanRow.message_pk).where(
                SpanRow.unit_pk == row.pk).order_by(MessageRow.session_id, MessageRow.seq)).all()
            sources = [SpanPublic(message=message_public(m), start=s.start, end=s.end,
                                  quote=m.content[s.start:s.end]) for s, m in spans]
            chain: list[UnitRow] = []
            frontier, seen = [row.pk], {row.pk}
            for _ in range(max_depth):
                parents = session.scalars(select(UnitRow).join(
                    LinkRow, LinkRow.dst_pk == UnitRow.pk).where(
                    LinkRow.src_pk.in_(frontier), LinkRow.type == "derived_from")).all()
                parents = [p for p in parents if p.pk not in seen]
                if not parents:
                    break
                seen.update(p.pk for p in parents)
                chain.extend(parents)
                frontier = [p.pk for p in parents]
            link_rows = session.execute(select(LinkRow).where(
                or_(LinkRow.src_pk == row.pk, LinkRow.dst_pk == row.pk))).scalars().all()
            pk_to_id = dict(session.execute(select(UnitRow.pk, UnitRow.id).where(
                UnitRow.pk.in_({x for lr in link_rows for x in (lr.src_pk, lr.dst_pk)}))).all())
            links = [LinkPublic(source_id=pk_to_id[lr.src_pk], target_id=pk_to_id[lr.dst_pk],
                                type=LinkType(lr.type), weight=lr.weight) for lr in link_rows]
            return ProvenancePublic(unit=unit_public(row), extractor=row.extractor, sources=sources,
                                    derived_from=[unit_public(p) for p in chain], links=links)
