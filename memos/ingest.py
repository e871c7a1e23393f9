"""Ingest: a conversation session's messages become ``turn`` units and one ``session`` unit.

:class:`Ingester` stores the new messages of a session (idempotently: a message whose id,
or whose role, speaker, content and timestamp within the session, is already stored is
skipped), a ``turn`` unit per message (its vector from
:func:`memos.derive.session.turn_embedding_text`) and
refreshes the session's ``session`` unit, in one write; with ``enqueue_derive`` the
``derive_session`` job is queued in the same transaction, so acknowledged messages always
get derived. Embedding happens before the write, so the SQLite write lock is held briefly.
"""

from __future__ import annotations

import uuid

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from memos.derive import DERIVE_JOB
from memos.derive.session import refresh_session_unit, turn_embedding_text
from memos.embed import Embedder, embed_texts
from memos.errors import Conflict
from memos.jobs import JobQueue
from memos.store.models import MessageRow, SpanRow, utcnow, vector_of
from memos.store.ordering import next_seq
from memos.store.units import (
    UnitRepository,
    check_model_unchanged,
    content_hash,
    new_unit,
)
from memos.types import IngestResult, MessagesIngest

__all__ = ["Ingester"]


def _new_id() -> str:
    return uuid.uuid4().hex


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
            embedder = self.units.check_embedder(cube, self.embedder)
            model = cube.embedding_model
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
        vectors = embed_texts(embedder,
                              [turn_embedding_text(m.speaker, m.content) for m, _ in fresh])

        with self.units.write() as (session, publish):
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            check_model_unchanged(cube, model)
            first = next_seq(session, cube_key=cube.key, session_id=body.session_id)
            messages, units = [], []
            for seq, ((msg, sha), vector) in enumerate(zip(fresh, vectors), start=first):
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
            refreshed = refresh_session_unit(session, cube, body.session_id, now=now,
                                             embedder=embedder)
            session_unit, stale_pk = refreshed.unit, refreshed.stale_pk
            assert session_unit is not None  # the session has the messages just added
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
