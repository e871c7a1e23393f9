"""Memories one by one: create with provenance, read, list, correct (a new version), delete,
and the history, provenance and per-session views of them.

Every method takes ``tenant`` (keyword-only): another tenant's cube is not found. A
correction writes version n+1 and marks version n ``superseded``; a delete tombstones every
version (``purge`` erases instead); both queue the rebuild of model memory derived from what
changed (:func:`memos.store.lineage.queue_stale_rebuild`). Deleting, correcting or purging a
turn changes its message, and what was derived from the message follows
(:mod:`memos.derive.sources`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

import numpy as np
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from memos.derive.session import turn_embedding_text
from memos.derive.sources import (
    SourceChange,
    erase_model_memory,
    erase_unit,
    follow_source_change,
)
from memos.embed import Embedder, embed_texts
from memos.errors import Conflict, InvalidInput, NotFound
from memos.jobs import JobQueue
from memos.limits import check_span
from memos.public import message_public, unit_public
from memos.retrieval.search import filter_conditions
from memos.store.blobs import BlobStore
from memos.store.lineage import queue_stale_rebuild
from memos.store.models import CubeRow, LinkRow, MessageRow, SpanRow, UnitRow, utcnow
from memos.store.units import (
    UnitRepository,
    check_model_unchanged,
    content_hash,
    new_unit,
)
from memos.types import (
    DeletionReport,
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

log = logging.getLogger(__name__)


def _new_id() -> str:
    return uuid.uuid4().hex


def _turn_messages(session: Session, versions: Sequence[UnitRow]) -> list[MessageRow]:
    """The messages the turn units among ``versions`` were ingested from."""
    turn_pks = [v.pk for v in versions if v.granularity == "turn"]
    if not turn_pks:
        return []
    return list(session.scalars(select(MessageRow).join(
        SpanRow, SpanRow.message_pk == MessageRow.pk).where(
        SpanRow.unit_pk.in_(turn_pks))).unique())


def _merge(first: SourceChange, second: SourceChange) -> SourceChange:
    """Both changes as one (the unit's own erasure, then what followed its source)."""
    second.remove[:0] = first.remove
    second.model_memory[:0] = first.model_memory
    second.blobs |= first.blobs
    second.rebuild_queued |= first.rebuild_queued
    return second


class _Refusing:
    """Stands in for a cube's embedder that cannot be used: raises its error if called."""

    def __init__(self, error: Exception) -> None:
        self.error, self.name, self.dim = error, "unavailable", 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        raise self.error


class Memories:
    """The memory units of every cube of a unit repository, one at a time."""

    def __init__(self, *, units: UnitRepository, embedder: Embedder, jobs: JobQueue,
                 blobs: BlobStore | None = None) -> None:
        self.units = units
        self.embedder = embedder
        self.jobs = jobs
        #: where a purge deletes the payload files of the model memory it erases
        self.blobs = blobs

    def _cube_embedder(self, cube_id: str, *, tenant: str) -> Embedder:
        """The embedder of the cube's vectors (:meth:`UnitRepository.check_embedder`)."""
        with self.units.store.transaction() as session:
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            return self.units.check_embedder(cube, self.embedder)

    @staticmethod
    def _check_vector(vector: Sequence[float], embedder: Embedder) -> np.ndarray:
        """The unit vector of ``vector``, normalised in float64 (scaled by its largest value
        first, so neither tiny nor huge values under- or overflow)."""
        arr = np.asarray(vector, dtype=np.float64)
        if arr.ndim != 1 or arr.shape[0] != embedder.dim:
            raise InvalidInput(
                f"embedding has {arr.shape[0] if arr.ndim == 1 else arr.shape} values; this "
                f"cube's model {embedder.name!r} has {embedder.dim} dimensions",
                details={"expected_dim": embedder.dim})
        peak = float(np.max(np.abs(arr)))
        if not np.isfinite(peak) or peak == 0:
            raise InvalidInput("embedding must be finite and non-zero")
        arr = arr / peak
        return (arr / np.linalg.norm(arr)).astype(np.float32)

    def create_memory(self, cube_id: str, body: MemoryCreate, *, tenant: str) -> MemoryPublic:
        embedder = self._cube_embedder(cube_id, tenant=tenant)
        vector = (self._check_vector(body.embedding, embedder) if body.embedding is not None
                  else embed_texts(embedder, [body.text])[0])
        now = utcnow()
        with self.units.write() as (session, publish):
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            check_model_unchanged(cube, embedder.name)
            spans = self._resolve_spans(session, cube, body)
            parents = self._resolve_units(session, cube, body.derived_from)
            row = new_unit(
                cube=cube, granularity=body.granularity.value,
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
                session.add(LinkRow(cube_key=cube.key, src_pk=row.pk, dst_pk=parent.pk,
                                    type="derived_from", weight=1.0, created_at=now))
            self.units.bump_index_version(cube)
            session.flush()
            public = unit_public(row, cube.id)
            publish(cube, add=[row.pk], vectors=vector[None, :])
        return public

    def _resolve_spans(self, session: Session, cube: CubeRow,
                       body: MemoryCreate) -> list[tuple[int, int, int]]:
        if not body.sources:
            return []
        ids = {s.message_id for s in body.sources}
        found = {m.id: m for m in session.scalars(select(MessageRow).where(
            MessageRow.cube_key == cube.key, MessageRow.id.in_(ids)))}
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

    def _resolve_units(self, session: Session, cube: CubeRow,
                       ids: Sequence[str]) -> list[UnitRow]:
        if not ids:
            return []
        rows = session.scalars(select(UnitRow).where(UnitRow.cube_key == cube.key,
                                                     UnitRow.id.in_(set(ids)))).all()
        missing = sorted(set(ids) - {r.id for r in rows})
        if missing:
            raise NotFound(f"unknown derived_from memory ids: {missing}",
                               details={"missing_memory_ids": missing})
        return list(rows)

    def get_memory(self, cube_id: str, memory_id: str, *, tenant: str) -> MemoryPublic:
        with self.units.store.transaction() as session:
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            return unit_public(self.units.unit_row(session, cube=cube, unit_id=memory_id),
                               cube.id)

    def list_memories(self, cube_id: str, filters: Filters, *, tenant: str, offset: int = 0,
                      limit: int = 50) -> MemoryPage:
        if not 1 <= limit <= 500 or offset < 0:
            raise InvalidInput("limit must be in [1, 500] and offset >= 0")
        with self.units.store.transaction() as session:
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            where = [UnitRow.cube_key == cube.key, *filter_conditions(filters)]
            total = session.scalar(select(func.count()).select_from(UnitRow).where(*where)) or 0
            # The page's keys first, then its rows: sorting and skipping (created_at, pk)
            # pairs, not whole rows with their vectors, keeps a deep page (offset 99,000 of
            # 100,000) fast.
            page = (select(UnitRow.pk).where(*where).order_by(UnitRow.created_at, UnitRow.pk)
                    .offset(offset).limit(limit))
            rows = session.scalars(select(UnitRow).where(UnitRow.pk.in_(page))
                                   .order_by(UnitRow.created_at, UnitRow.pk)).all()
            return MemoryPage(items=[unit_public(r, cube.id) for r in rows], total=total,
                              offset=offset,
                              limit=limit)

    def update_memory(self, cube_id: str, memory_id: str, body: MemoryUpdate, *,
                      tenant: str) -> MemoryPublic:
        """Write a new version; the old one is kept, marked superseded, in the history."""
        changes = body.model_dump(exclude_unset=True, exclude={"reason"})
        if not changes:
            raise InvalidInput("nothing to update: give at least one field")
        with self.units.store.transaction() as session:
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            embedder = self.units.check_embedder(cube, self.embedder)
            turn = self.units.unit_row(session, cube=cube, unit_id=memory_id) \
                if body.text is not None else None
            speaker = turn.speaker if turn is not None and turn.granularity == "turn" else None
        vector = embed_texts(embedder, [turn_embedding_text(speaker, body.text)])[0] \
            if body.text is not None else None
        now = utcnow()
        with self.units.write() as (session, publish):
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            check_model_unchanged(cube, embedder.name)
            old = self.units.unit_row(session, cube=cube, unit_id=memory_id)
            if old.status == "superseded":
                current = session.scalar(select(UnitRow.id).where(
                    UnitRow.cube_key == cube.key, UnitRow.lineage_id == old.lineage_id,
                    UnitRow.superseded_at.is_(None)))
                raise Conflict(f"memory {memory_id!r} was superseded; update the current "
                               f"version {current!r}", details={"current_id": current})
            if old.kind != "plaintext":
                raise InvalidInput(f"{old.kind} memories are rebuilt, not edited")
            new_id = _new_id()
            row = new_unit(
                unit_id=new_id, cube=cube, lineage_id=old.lineage_id,
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
            corrected = _turn_messages(session, [old]) \
                if body.text is not None and body.text != old.text else []
            for message in corrected:  # a corrected turn corrects the record it came from
                message.content = body.text or ""
            for span in session.scalars(select(SpanRow).where(SpanRow.unit_pk == old.pk)):
                end = len(body.text or "") if corrected else span.end
                session.add(SpanRow(unit_pk=row.pk, message_pk=span.message_pk,
                                    start=span.start, end=end))
            for link in session.scalars(select(LinkRow).where(LinkRow.src_pk == old.pk,
                                                              LinkRow.type == "derived_from")):
                session.add(LinkRow(cube_key=cube.key, src_pk=row.pk, dst_pk=link.dst_pk,
                                    type="derived_from", weight=link.weight, created_at=now))
            session.add(LinkRow(cube_key=cube.key, src_pk=row.pk, dst_pk=old.pk,
                                type="supersedes", weight=1.0, created_at=now))
            self.units.bump_index_version(cube)
            session.flush()
            public = unit_public(row, cube.id)
            if row.status == "active" and row.embedding is not None:
                publish(cube, remove=[old.pk], add=[row.pk], vectors=row.embedding[None, :])
            else:
                publish(cube, remove=[old.pk])
            queued = queue_stale_rebuild(session, self.jobs, cube=cube, changed=[old.pk])
            if corrected:
                change = follow_source_change(
                    session, cube=cube, messages=corrected,
                    change_kind="corrected", units_changed=[old.pk], embedder=embedder,
                    jobs=self.jobs, now=now)
                publish(cube, remove=change.remove, add=[pk for pk, _ in change.add],
                        vectors=change.vectors())
        if queued or corrected:
            self.jobs.wake()
        return public

    def delete_memory(self, cube_id: str, memory_id: str, *, tenant: str,
                      purge: bool = False) -> DeletionReport:
        """Tombstone the memory (every version of it) and what derives from it alone.

        A turn's message stops being a source (:func:`memos.derive.sources.follow_source_change`).
        ``purge`` erases instead: text, vector, metadata and spans of every version, the
        message content, derived units and model memory built from them, then the index
        snapshot and SQL files are rewritten so no copy stays on disk.
        """
        now = utcnow()
        with self.units.write() as (session, publish):
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            # A deletion must succeed even when the cube's model cannot load: it embeds
            # nothing unless a session is left with messages but no turn vectors.
            try:
                embedder: Embedder = self.units.check_embedder(cube, self.embedder)
            except Conflict as exc:
                embedder = _Refusing(exc)
            row = self.units.unit_row(session, cube=cube, unit_id=memory_id)
            versions = session.scalars(select(UnitRow).where(
                UnitRow.lineage_id == row.lineage_id, UnitRow.cube_key == cube.key)).all()
            pks = [v.pk for v in versions]
            messages = _turn_messages(session, versions)
            change = SourceChange()
            if purge:
                erase_model_memory(session, pks, now, change)
            for version in versions:
                if version.status != "superseded":
                    version.status, version.deleted_at = "deleted", now
                    version.status_reason = "deleted"
                if purge:
                    sha = erase_unit(session, version, now)
                    if sha:
                        change.blobs.add(sha)
            session.flush()
            if messages:
                change = _merge(change, follow_source_change(
                    session, cube=cube, messages=messages,
                    change_kind="purged" if purge else "deleted", units_changed=pks,
                    embedder=embedder, jobs=self.jobs, now=now))
            elif not purge:
                change.rebuild_queued = queue_stale_rebuild(session, self.jobs, cube=cube,
                                                            changed=pks)
            self.units.bump_index_version(cube)
            publish(cube, remove=[*pks, *change.remove], add=[pk for pk, _ in change.add],
                    vectors=change.vectors(), erase=purge)
        erased_from = []
        if purge:
            erased_from = ["sql", "vector_index"]
            if self.delete_blobs(change.blobs):
                erased_from.append("blobs")
        if messages or change.rebuild_queued:
            self.jobs.wake()
        return DeletionReport(
            memory_id=memory_id, purged=purge, versions=len(versions),
            messages=[m.id for m in messages], retired=change.retired,
            restored=change.restored, sessions=change.sessions,
            model_memory=change.model_memory, erased_from=erased_from)

    def delete_blobs(self, shas: set[str]) -> bool:
        """Delete the payload files no unit refers to any more; whether any was deleted."""
        if not shas:
            return False
        if self.blobs is None:  # a cube built without one: its payloads are someone else's
            log.warning("model memory was erased but this service has no blob store; "
                        "%d payload file(s) left to their owner", len(shas))
            return False
        with self.units.store.transaction() as session:
            kept = set(session.scalars(select(UnitRow.payload_sha256).where(
                UnitRow.payload_sha256.in_(shas))))
        for sha in shas - kept:
            self.blobs.delete(sha)
        return bool(shas - kept)

    def session_memories(self, cube_id: str, session_id: str, *, tenant: str,
                         granularity: Granularity = Granularity.fact) -> list[MemoryPublic]:
        """Memories derived from one session (default: extracted facts), in creation order.

        Every status but ``deleted`` is returned — active, superseded (replaced later) and
        quarantined (refused by the faithfulness gate, with the reason) — so an evaluator
        sees exactly what extraction produced.
        """
        with self.units.store.transaction() as session:
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            rows = session.scalars(select(UnitRow).where(
                UnitRow.cube_key == cube.key, UnitRow.session_id == session_id,
                UnitRow.granularity == granularity.value, UnitRow.status != "deleted")
                .order_by(UnitRow.created_at, UnitRow.pk)).all()
            return [unit_public(r, cube.id) for r in rows]

    def history(self, cube_id: str, memory_id: str, *, tenant: str) -> list[MemoryPublic]:
        with self.units.store.transaction() as session:
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            row = self.units.unit_row(session, cube=cube, unit_id=memory_id)
            versions = session.scalars(select(UnitRow).where(
                UnitRow.lineage_id == row.lineage_id, UnitRow.cube_key == cube.key)
                .order_by(UnitRow.version)).all()
            return [unit_public(v, cube.id) for v in versions]

    def provenance(self, cube_id: str, memory_id: str, *, tenant: str,
                   max_depth: int = 5) -> ProvenancePublic:
        """Source messages with cited spans, the derived-from chain and the unit's links."""
        with self.units.store.transaction() as session:
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            row = self.units.unit_row(session, cube=cube, unit_id=memory_id)
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
            return ProvenancePublic(unit=unit_public(row, cube.id), extractor=row.extractor,
                                    sources=sources,
                                    derived_from=[unit_public(p, cube.id) for p in chain],
                                    links=links)
