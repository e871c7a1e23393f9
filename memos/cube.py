"""The MemCube service: every cube of every tenant, over one store, index and embedder.

    MemCube(store=Store(url), index=FaissIndex(...), embedder=OnnxMiniLM())
        .create_cube / list_cubes / get_cube / delete_cube
        .ingest                      messages → turn units + one session unit per session
        .create_memory / get_memory / list_memories / update_memory / delete_memory
        .history / provenance
        .search / context            (ranking lives in memos/search.py)

Every method takes ``tenant`` (keyword-only): a cube of another tenant is reported as not
found, exactly like a cube that does not exist. Writes commit to SQL first (the commit is
the acknowledgement), then update the vector index, which is a cache of SQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from memos.config import Settings
from memos.derive import DERIVE_JOB, DeriveContext, Deriver
from memos.embed import Embedder, embed_texts
from memos.errors import Conflict, InvalidInput
from memos.index import VectorIndex
from memos.jobs import Job, JobQueue, run_for_cube
from memos.memory import BackboneProvider, ModelMemory
from memos.public import message_public, unit_public
from memos.retrieval.cache import RouterCache
from memos.retrieval.search import (
    Searcher,
    Timings,
    TokenCounter,
    estimate_tokens,
    filter_conditions,
)
from memos.store.blobs import BlobStore
from memos.store.lineage import queue_stale_rebuild
from memos.store.models import (
    CubeRow,
    LinkRow,
    MessageRow,
    SpanRow,
    TagRow,
    UnitRow,
    utcnow,
    vector_of,
)
from memos.store.sql import Store
from memos.store.units import UnitRepository, content_hash, new_unit
from memos.types import (
    ContextRequest,
    ContextResponse,
    CubeCreate,
    CubePublic,
    Filters,
    Granularity,
    IngestResult,
    LinkPublic,
    LinkType,
    MemoryCreate,
    MemoryPage,
    MemoryPublic,
    MemoryUpdate,
    MessagesIngest,
    ProvenancePublic,
    SearchRequest,
    SearchResponse,
    SpanPublic,
    Status,
)
from memos.usage import RetrievalCounter

__all__ = [
    "MemCube",
    "open_cube",
    "turn_embedding_text",
]

def _new_id() -> str:
    return uuid.uuid4().hex


def turn_embedding_text(speaker: str | None, content: str) -> str:
    """What a turn's vector is computed from: the speaker's name, then the text."""
    return f"{speaker}: {content}" if speaker else content


class MemCube:
    """The MemCube service. Collaborators come in through the constructor."""

    def __init__(self, *, store: Store, index: VectorIndex, embedder: Embedder,
                 max_text_chars: int = 32_000, derivers: Sequence[Deriver] = (),
                 router: RouterCache | None = None) -> None:
        self.store = store
        self.index = index
        self.router = router
        self.embedder = embedder
        self.max_text_chars = max_text_chars
        self.derivers = list(derivers)
        self.jobs = JobQueue(store)
        #: rows, writes and their index changes; the router cache follows every write
        self.units = UnitRepository(store, index, on_publish=self._route)
        #: search hits, counted in memory and flushed in batches (the scheduler's "hot")
        self.retrievals = RetrievalCounter()
        self.searcher = Searcher(units=self.units, embedder=embedder, index=index,
                                  router=router, retrievals=self.retrievals)

    # ================================================================== cubes
    def check_model(self, cube: CubeRow) -> None:
        self.units.check_embedder(cube, self.embedder)

    def _cube_public(self, session: Session, cube: CubeRow) -> CubePublic:
        units = session.scalar(select(func.count()).select_from(UnitRow).where(
            UnitRow.cube_id == cube.id, UnitRow.status == "active")) or 0
        return CubePublic(id=cube.id, name=cube.name, description=cube.description,
                          tenant=cube.tenant, embedding_model=cube.embedding_model,
                          embedding_dim=cube.embedding_dim, metadata=dict(cube.meta or {}),
                          created_at=cube.created_at, units=units,
                          pending_jobs=self.jobs.pending(cube.id))

    def create_cube(self, body: CubeCreate, *, tenant: str) -> CubePublic:
        cube_id = body.id or f"cube_{_new_id()[:16]}"
        try:
            with self.store.transaction() as session:
                if session.get(CubeRow, cube_id) is not None:
                    raise Conflict(f"cube {cube_id!r} already exists",
                                   details={"cube_id": cube_id})
                cube = CubeRow(id=cube_id, tenant=tenant, name=body.name,
                               description=body.description, meta=body.metadata,
                               embedding_model=self.embedder.name,
                               embedding_dim=self.embedder.dim, index_version=0,
                               created_at=utcnow())
                session.add(cube)
                session.flush()
                return self._cube_public(session, cube)
        except IntegrityError as exc:
            raise Conflict(f"cube {cube_id!r} already exists") from exc

    def list_cubes(self, *, tenant: str) -> list[CubePublic]:
        with self.store.transaction() as session:
            cubes = session.scalars(select(CubeRow).where(CubeRow.tenant == tenant)
                                    .order_by(CubeRow.created_at, CubeRow.id)).all()
            return [self._cube_public(session, c) for c in cubes]

    def get_cube(self, cube_id: str, *, tenant: str) -> CubePublic:
        with self.store.transaction() as session:
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            return self._cube_public(session, cube)

    def delete_cube(self, cube_id: str, *, tenant: str) -> None:
        with self.units.locked(), self.store.transaction() as session:
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            # Children first: SQLite honours ON DELETE CASCADE only with foreign_keys=ON, and
            # explicit deletes keep PostgreSQL and SQLite identical.
            unit_pks = select(UnitRow.pk).where(UnitRow.cube_id == cube_id)
            session.execute(delete(SpanRow).where(SpanRow.unit_pk.in_(unit_pks)))
            session.execute(delete(TagRow).where(TagRow.unit_pk.in_(unit_pks)))
            session.execute(delete(LinkRow).where(LinkRow.cube_id == cube_id))
            session.execute(delete(UnitRow).where(UnitRow.cube_id == cube_id))
            session.execute(delete(MessageRow).where(MessageRow.cube_id == cube_id))
            session.delete(cube)
        self.index.drop(cube_id)
        if self.router is not None:
            self.router.drop(cube_id)

    # ================================================================== helpers
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return embed_texts(self.embedder, texts)

    def _check_vector(self, vector: Sequence[float]) -> np.ndarray:
        arr = np.asarray(vector, dtype=np.float32)
        if arr.ndim != 1 or arr.shape[0] != self.embedder.dim:
            raise InvalidInput(
                f"embedding has {arr.shape[0] if arr.ndim == 1 else arr.shape} values; this "
                f"cube's model {self.embedder.name!r} has {self.embedder.dim} dimensions",
                details={"expected_dim": self.embedder.dim})
        if not np.all(np.isfinite(arr)) or not np.any(arr):
            raise InvalidInput("embedding must be finite and non-zero")
        return arr / np.linalg.norm(arr)

    def _route(self, cube: CubeRow, *, remove: Sequence[int], add: Sequence[int]) -> None:
        """Keep the router cache current; persist the associations new units formed."""
        if self.router is None:
            return
        with self.store.transaction() as session:
            if not self.router.usable(session, cube):
                return
            links = self.router.apply(session, cube, remove=remove, add=add)
            if not links:
                return
            stored = session.execute(select(LinkRow.src_pk, LinkRow.dst_pk).where(
                LinkRow.src_pk.in_({link.src for link in links}),
                LinkRow.type == "associated"))
            have = {(a, b) for a, b in stored}
            now = utcnow()
            for link in links:
                if (link.src, link.dst) not in have:
                    have.add((link.src, link.dst))
                    session.add(LinkRow(cube_id=cube.id, src_pk=link.src, dst_pk=link.dst,
                                        type="associated", weight=link.weight, created_at=now))

    # ================================================================== ingest
    def ingest(self, cube_id: str, body: MessagesIngest, *, tenant: str) -> IngestResult:
        """Store messages, a ``turn`` unit per new message and refresh the session unit.

        Idempotent: a message whose id, or whose (role, speaker, content, timestamp) within
        the session, is already stored is skipped.
        """
        for attempt in range(2):
            try:
                return self._ingest_once(cube_id, body, tenant=tenant)
            except IntegrityError:
                if attempt:  # a concurrent writer stored the same messages twice in a row
                    raise Conflict("concurrent ingest of the same messages; retry") from None
        raise AssertionError("unreachable")

    def _ingest_once(self, cube_id: str, body: MessagesIngest, *, tenant: str) -> IngestResult:
        now = utcnow()
        with self.store.transaction() as session:
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            self.check_model(cube)
            known_ids = set(session.scalars(select(MessageRow.id).where(
                MessageRow.cube_id == cube_id,
                MessageRow.id.in_([m.id for m in body.messages if m.id]))))
            known_shas = set(session.scalars(select(MessageRow.content_sha).where(
                MessageRow.cube_id == cube_id, MessageRow.session_id == body.session_id)))
        fresh = []
        for msg in body.messages:
            sha = content_hash(msg.role.value, msg.speaker, msg.content,
                       msg.timestamp.isoformat() if msg.timestamp else None)
            if (msg.id and msg.id in known_ids) or sha in known_shas:
                continue
            known_shas.add(sha)
            if msg.id:
                known_ids.add(msg.id)
            fresh.append((msg, sha))
        skipped = len(body.messages) - len(fresh)
        if not fresh:
            return IngestResult(session_id=body.session_id, messages_stored=0,
                                messages_skipped=skipped, units_created=0, message_ids=[],
                                unit_ids=[])
        # Embed outside the write transaction so the SQLite write lock is held briefly.
        vectors = self.embed([turn_embedding_text(m.speaker, m.content) for m, _ in fresh])

        with self.units.write() as (session, publish):
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            seq = session.scalar(select(func.max(MessageRow.seq)).where(
                MessageRow.cube_id == cube_id, MessageRow.session_id == body.session_id))
            seq = -1 if seq is None else seq
            messages, units = [], []
            for (msg, sha), vector in zip(fresh, vectors):
                seq += 1
                message = MessageRow(
                    id=msg.id or f"msg_{_new_id()}", cube_id=cube_id,
                    session_id=body.session_id, seq=seq, role=msg.role.value,
                    speaker=msg.speaker, content=msg.content, content_sha=sha,
                    timestamp=msg.timestamp, created_at=now)
                unit = new_unit(
                    cube_id=cube_id, tenant=tenant, granularity="turn", text=msg.content,
                    content_sha=sha, session_id=body.session_id, speaker=msg.speaker,
                    extractor="ingest", meta={"role": msg.role.value, "message_id": message.id},
                    valid_from=msg.timestamp, created_at=now, embedding=vector)
                messages.append(message)
                units.append(unit)
            session.add_all(messages)
            session.add_all(units)
            session.flush()
            for message, unit in zip(messages, units):
                session.add(SpanRow(unit_pk=unit.pk, message_pk=message.pk, start=0,
                                    end=len(message.content)))
            session_unit, stale_pk = self._refresh_session_unit(
                session, cube, body.session_id, tenant=tenant, now=now)
            self.units.bump_index_version(cube)
            if self.derivers and not body.sync:
                # Enqueued in the ingest transaction: acknowledged messages always get derived.
                self.jobs.enqueue(session, kind=DERIVE_JOB, cube_id=cube_id,
                                  payload={"session_id": body.session_id, "tenant": tenant})
            session.flush()
            new_pks = [u.pk for u in units] + [session_unit.pk]
            new_vectors = np.vstack([vectors, vector_of(session_unit)[None, :]])
            result = IngestResult(
                session_id=body.session_id, messages_stored=len(messages),
                messages_skipped=skipped, units_created=len(units),
                message_ids=[m.id for m in messages], unit_ids=[u.id for u in units])
            publish(cube, remove=[stale_pk] if stale_pk is not None else [], add=new_pks,
                    vectors=new_vectors)
        if self.derivers:
            if body.sync:
                self.derive_session(cube_id, body.session_id, tenant=tenant)
            else:
                self.jobs.wake()
        return result

    def derive_session(self, cube_id: str, session_id: str, *, tenant: str) -> None:
        """Run every deriver for one session (what the ``derive_session`` job does)."""
        ctx = DeriveContext(units=self.units, embedder=self.embedder, jobs=self.jobs)
        for deriver in self.derivers:
            deriver.derive_session(ctx, cube_id=cube_id, session_id=session_id, tenant=tenant)

    def run_derive_job(self, job: Job, progress: Callable[[float], None]) -> None:
        run_for_cube(progress, lambda: self.derive_session(
            job.cube_id or "", job.payload["session_id"], tenant=job.payload["tenant"]))

    def _refresh_session_unit(self, session: Session, cube: CubeRow, session_id: str, *,
                              tenant: str, now: datetime) -> tuple[UnitRow, int | None]:
        """Rewrite the session's ``session`` unit: transcript text, spans, mean turn vector.

        It is a derived unit, so it is refreshed in place rather than versioned; returns the
        row and, when it existed before, its pk, whose old vector the index must drop.
        """
        messages = session.scalars(select(MessageRow).where(
            MessageRow.cube_id == cube.id, MessageRow.session_id == session_id)
            .order_by(MessageRow.seq)).all()
        turns = session.execute(select(UnitRow.pk, UnitRow.embedding).where(
            UnitRow.cube_id == cube.id, UnitRow.session_id == session_id,
            UnitRow.granularity == "turn", UnitRow.status == "active")).all()
        lines, spans, offset = [], [], 0
        for m in messages:
            prefix = f"{m.speaker or m.role}: "
            start = offset + len(prefix)
            spans.append((m.pk, start, start + len(m.content)))
            line = prefix + m.content
            lines.append(line)
            offset += len(line) + 1
        text = "\n".join(lines)
        vectors = [e for _, e in turns if e is not None]
        mean = np.mean(vectors, axis=0) if vectors else self.embed([text])[0]
        mean = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
        unit = session.scalar(select(UnitRow).where(
            UnitRow.cube_id == cube.id, UnitRow.session_id == session_id,
            UnitRow.granularity == "session", UnitRow.status == "active"))
        times = [m.timestamp for m in messages if m.timestamp]
        stale_pk = None
        if unit is None:
            unit = new_unit(cube_id=cube.id, tenant=tenant, granularity="session", text=None,
                            session_id=session_id, extractor="ingest", created_at=now)
            session.add(unit)
        else:
            stale_pk = unit.pk
            session.execute(delete(SpanRow).where(SpanRow.unit_pk == unit.pk))
            session.execute(delete(LinkRow).where(LinkRow.src_pk == unit.pk,
                                                  LinkRow.type == "derived_from"))
        unit.text, unit.content_sha, unit.embedding = text, content_hash(text), mean
        unit.meta = {"messages": len(messages)}
        unit.valid_from = min(times) if times else None
        unit.valid_to = max(times) if times else None
        session.flush()
        for message_pk, start, end in spans:
            session.add(SpanRow(unit_pk=unit.pk, message_pk=message_pk, start=start, end=end))
        for turn_pk, _ in turns:
            session.add(LinkRow(cube_id=cube.id, src_pk=unit.pk, dst_pk=turn_pk,
                                type="derived_from", weight=1.0, created_at=now))
        return unit, stale_pk

    # ================================================================== memories
    def create_memory(self, cube_id: str, body: MemoryCreate, *, tenant: str) -> MemoryPublic:
        vector = (self._check_vector(body.embedding) if body.embedding is not None
                  else self.embed([body.text])[0])
        now = utcnow()
        with self.units.write() as (session, publish):
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            self.check_model(cube)
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
            raise InvalidInput(f"unknown source message ids: {missing}",
                               details={"missing_message_ids": missing})
        spans = []
        for src in body.sources:
            message = found[src.message_id]
            start = 0 if src.start is None else src.start
            end = len(message.content) if src.end is None else src.end
            if not start <= end <= len(message.content):
                raise InvalidInput(
                    f"span [{start}, {end}) is outside message {src.message_id!r} "
                    f"({len(message.content)} characters)",
                    details={"message_id": src.message_id, "length": len(message.content)})
            spans.append((message.pk, start, end))
        return spans

    def _resolve_units(self, session: Session, cube_id: str, ids: Sequence[str]) -> list[UnitRow]:
        if not ids:
            return []
        rows = session.scalars(select(UnitRow).where(UnitRow.cube_id == cube_id,
                                                     UnitRow.id.in_(set(ids)))).all()
        missing = sorted(set(ids) - {r.id for r in rows})
        if missing:
            raise InvalidInput(f"unknown derived_from memory ids: {missing}",
                               details={"missing_memory_ids": missing})
        return list(rows)

    def get_memory(self, cube_id: str, memory_id: str, *, tenant: str) -> MemoryPublic:
        with self.store.transaction() as session:
            self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            return unit_public(self.units.unit_row(session, cube_id=cube_id, unit_id=memory_id))

    def list_memories(self, cube_id: str, filters: Filters, *, tenant: str, offset: int = 0,
                      limit: int = 50) -> MemoryPage:
        if not 1 <= limit <= 500 or offset < 0:
            raise InvalidInput("limit must be in [1, 500] and offset >= 0")
        with self.store.transaction() as session:
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
        if body.status is not None and body.status not in (Status.active, Status.archived):
            raise InvalidInput("status may only be set to 'active' or 'archived'; "
                               "use DELETE to delete")
        vector = self.embed([body.text])[0] if body.text is not None else None
        now = utcnow()
        with self.units.write() as (session, publish):
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            self.check_model(cube)
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
        with self.store.transaction() as session:
            self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            rows = session.scalars(select(UnitRow).where(
                UnitRow.cube_id == cube_id, UnitRow.session_id == session_id,
                UnitRow.granularity == granularity.value, UnitRow.status != "deleted")
                .order_by(UnitRow.created_at, UnitRow.pk)).all()
            return [unit_public(r) for r in rows]

    def history(self, cube_id: str, memory_id: str, *, tenant: str) -> list[MemoryPublic]:
        with self.store.transaction() as session:
            self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            row = self.units.unit_row(session, cube_id=cube_id, unit_id=memory_id)
            versions = session.scalars(select(UnitRow).where(
                UnitRow.lineage_id == row.lineage_id, UnitRow.cube_id == cube_id)
                .order_by(UnitRow.version)).all()
            return [unit_public(v) for v in versions]

    def provenance(self, cube_id: str, memory_id: str, *, tenant: str,
                   max_depth: int = 5) -> ProvenancePublic:
        """Source messages with cited spans, the derived-from chain and the unit's links."""
        with self.store.transaction() as session:
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

    # ================================================================== search
    def search(self, cube_id: str, body: SearchRequest, *, tenant: str,
               timings: Timings | None = None) -> SearchResponse:
        """The most relevant units for a query, best first
        (see :class:`memos.retrieval.search.Searcher`)."""
        return self.searcher.search(cube_id, body, tenant=tenant, timings=timings)

    def context(self, cube_id: str, body: ContextRequest, *, tenant: str,
                count_tokens: TokenCounter = estimate_tokens) -> ContextResponse:
        """Prompt-ready memory within a token budget (as ``count_tokens`` counts), each line
        citing its unit id."""
        return self.searcher.context(cube_id, body, tenant=tenant, count_tokens=count_tokens)

    # ================================================================== model memory
    def model_memory(self, provider: BackboneProvider, blobs: BlobStore) -> ModelMemory:
        """Activation and parametric memory over this cube's parts and ``provider``'s model."""
        return ModelMemory(units=self.units, jobs=self.jobs, searcher=self.searcher,
                           provider=provider, blobs=blobs)

    # ================================================================== misc
    def counts(self) -> dict[str, Any]:
        with self.store.transaction() as session:
            units = session.scalar(select(func.count()).select_from(UnitRow)) or 0
            cubes = session.scalar(select(func.count()).select_from(CubeRow)) or 0
        return {"units": units, "cubes": cubes}



def open_cube(settings: Settings) -> MemCube:
    """Build the service a deployment describes: SQLite + FAISS under ``data_dir`` by default,
    PostgreSQL + pgvector when ``MEMOS_DATABASE_URL`` is set. Upgrades the schema first."""
    from memos.embed import HashingEmbedder, OnnxMiniLM
    from memos.index.faiss import FaissIndex
    from memos.index.pgvector import PgVectorIndex

    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(settings.database_url)
    store.upgrade()
    index: VectorIndex
    if store.is_postgres:
        index = PgVectorIndex()
    else:
        index = FaissIndex(settings.data_dir / "index", store.session_factory,
                           snapshot_every=settings.index_snapshot_every)
    embedder: Embedder
    if settings.embedder == "hashing":
        embedder = HashingEmbedder()
    elif settings.embedder == "minilm":
        embedder = OnnxMiniLM(batch_size=settings.embed_batch_size)
    else:
        raise InvalidInput(f"unknown embedder {settings.embedder!r}; use 'minilm'")
    from memos.derive.facts import FactDeriver
    from memos.derive.granularity import GranularityDeriver

    derivers: list[Deriver] = [GranularityDeriver()]
    facts = FactDeriver.from_setting(settings.extractor)
    if facts is not None:
        derivers.append(facts)
    router = RouterCache(max_units=settings.router_max_units) if settings.router_max_units \
        else None
    return MemCube(store=store, index=index, embedder=embedder,
                   max_text_chars=settings.max_text_chars, derivers=derivers, router=router)
