"""Ingest: a conversation session's messages become ``turn`` units and one ``session`` unit.

:class:`Ingester` stores the new messages of a session (idempotently: a message whose id,
or whose role, speaker, content and timestamp within the session, is already stored is
skipped), a ``turn`` unit per message (its vector from :func:`turn_embedding_text`) and
refreshes the session's ``session`` unit, in one write; with ``enqueue_derive`` the
``derive_session`` job is queued in the same transaction, so acknowledged messages always
get derived. Embedding happens before the write, so the SQLite write lock is held briefly.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from memos.derive import DERIVE_JOB
from memos.embed import Embedder, embed_texts
from memos.errors import Conflict
from memos.jobs import JobQueue
from memos.store.models import CubeRow, LinkRow, MessageRow, SpanRow, UnitRow, utcnow, vector_of
from memos.store.units import UnitRepository, content_hash, new_unit
from memos.types import IngestResult, MessagesIngest

__all__ = ["Ingester", "turn_embedding_text"]


def _new_id() -> str:
    return uuid.uuid4().hex


def turn_embedding_text(speaker: str | None, content: str) -> str:
    """What a turn's vector is computed from: the speaker's name, then the text."""
    return f"{speaker}: {content}" if speaker else content


class Ingester:
    """Stores conversation sessions in the cubes of a unit repository."""

    def __init__(self, *, units: UnitRepository, embedder: Embedder, jobs: JobQueue) -> None:
        self.units = units
        self.embedder = embedder
        self.jobs = jobs

    def ingest(self, cube_id: str, body: MessagesIngest, *, tenant: str,
               enqueue_derive: bool) -> IngestResult:
        """Store messages, a ``turn`` unit per new message and refresh the session unit.

        Idempotent: a message whose id, or whose (role, speaker, content, timestamp) within
        the session, is already stored is skipped.
        """
        for attempt in range(2):
            try:
                return self._ingest_once(cube_id, body, tenant=tenant,
                                         enqueue_derive=enqueue_derive)
            except IntegrityError:
                if attempt:  # a concurrent writer stored the same messages twice in a row
                    raise Conflict("concurrent ingest of the same messages; retry") from None
        raise AssertionError("unreachable")

    def _ingest_once(self, cube_id: str, body: MessagesIngest, *, tenant: str,
                     enqueue_derive: bool) -> IngestResult:
        now = utcnow()
        with self.units.store.transaction() as session:
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            self.units.check_embedder(cube, self.embedder)
            known_ids = set(session.scalars(select(MessageRow.id).where(
                MessageRow.cube_key == cube.key,
                MessageRow.id.in_([m.id for m in body.messages if m.id]))))
            known_shas = set(session.scalars(select(MessageRow.content_sha).where(
                MessageRow.cube_key == cube.key, MessageRow.session_id == body.session_id)))
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
        vectors = embed_texts(self.embedder,
                              [turn_embedding_text(m.speaker, m.content) for m, _ in fresh])

        with self.units.write() as (session, publish):
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            seq = session.scalar(select(func.max(MessageRow.seq)).where(
                MessageRow.cube_key == cube.key, MessageRow.session_id == body.session_id))
            seq = -1 if seq is None else seq
            messages, units = [], []
            for (msg, sha), vector in zip(fresh, vectors):
                seq += 1
                message = MessageRow(
                    id=msg.id or f"msg_{_new_id()}", cube_key=cube.key,
                    session_id=body.session_id, seq=seq, role=msg.role.value,
                    speaker=msg.speaker, content=msg.content, content_sha=sha,
                    timestamp=msg.timestamp, created_at=now)
                unit = new_unit(
                    cube=cube, granularity="turn", text=msg.content,
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
                session, cube, body.session_id, now=now)
            self.units.bump_index_version(cube)
            if enqueue_derive:
                # Enqueued in the ingest transaction: acknowledged messages always get derived.
                self.jobs.enqueue(session, kind=DERIVE_JOB, cube_key=cube.key,
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
        return result


    def _refresh_session_unit(self, session: Session, cube: CubeRow, session_id: str, *,
                              now: datetime) -> tuple[UnitRow, int | None]:
        """Rewrite the session's ``session`` unit: transcript text, spans, mean turn vector.

        It is a derived unit, so it is refreshed in place rather than versioned; returns the
        row and, when it existed before, its pk, whose old vector the index must drop.
        """
        messages = session.scalars(select(MessageRow).where(
            MessageRow.cube_key == cube.key, MessageRow.session_id == session_id)
            .order_by(MessageRow.seq)).all()
        turns = session.execute(select(UnitRow.pk, UnitRow.embedding).where(
            UnitRow.cube_key == cube.key, UnitRow.session_id == session_id,
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
        mean = np.mean(vectors, axis=0) if vectors else embed_texts(self.embedder, [text])[0]
        mean = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
        unit = session.scalar(select(UnitRow).where(
            UnitRow.cube_key == cube.key, UnitRow.session_id == session_id,
            UnitRow.granularity == "session", UnitRow.status == "active"))
        times = [m.timestamp for m in messages if m.timestamp]
        stale_pk = None
        if unit is None:
            unit = new_unit(cube=cube, granularity="session", text=None,
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
            session.add(LinkRow(cube_key=cube.key, src_pk=unit.pk, dst_pk=turn_pk,
                                type="derived_from", weight=1.0, created_at=now))
        return unit, stale_pk
