"""The deriver that keeps each session's ``summary`` and ``keyword`` units current.

After ingest (as the ``derive_session`` job, or inline with ``sync``), the session's turns
are condensed into an extractive summary (MMR over turn vectors) and distinctive keywords
(TF-IDF against the cube's other sessions). Derived units are refreshed rather than
versioned: the previous summary/keyword units of the session are replaced. Each links to
its source turns (``summarizes`` for the summary, ``derived_from`` for keywords) and cites
their messages as provenance spans.
"""

from __future__ import annotations

import threading
import uuid

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from memos.derive import DeriveContext
from memos.granularity.units import TermStats, derive_units
from memos.lexical import Analyzer
from memos.retrieval.cache import index_text
from memos.store.models import LinkRow, SpanRow, UnitRow, utcnow, vector_of
from memos.store.units import content_hash, new_unit

DERIVED = ("summary", "keyword")


class GranularityDeriver:
    name = "granularity"

    def __init__(self, *, summary_turns: int = 4, keywords: int = 12) -> None:
        self.summary_turns = summary_turns
        self.keywords = keywords
        self.analyzer = Analyzer()
        # Per cube: the document frequencies over its sessions and the session-text hash each
        # was counted from, so a job re-reads only sessions whose text changed.
        self._stats: dict[str, tuple[TermStats, dict[str, str | None]]] = {}
        self._lock = threading.RLock()

    def _term_stats(self, session: Session, cube_key: str) -> TermStats:
        """The :class:`TermStats` of the cube whose internal key is ``cube_key``, brought up
        to date with its session units (call with ``self._lock`` held)."""
        current: dict[str, str | None] = {
            key: sha for key, sha in session.execute(select(
                UnitRow.session_id, UnitRow.content_sha).where(
                UnitRow.cube_key == cube_key, UnitRow.granularity == "session",
                UnitRow.status == "active", UnitRow.session_id.is_not(None)))
            if key is not None}
        stats, counted = self._stats.setdefault(cube_key, (TermStats(), {}))
        for key in set(counted) - set(current):
            stats.remove(key)
            del counted[key]
        changed = [k for k, sha in current.items() if counted.get(k) != sha]
        for start in range(0, len(changed), 500):
            for name, text, sha in session.execute(select(
                    UnitRow.session_id, UnitRow.text, UnitRow.content_sha).where(
                    UnitRow.cube_key == cube_key, UnitRow.granularity == "session",
                    UnitRow.status == "active",
                    UnitRow.session_id.in_(changed[start:start + 500]))):
                if name is not None:
                    stats.add(name, self.analyzer.tokens(text or ""))
                    counted[name] = sha
        return stats

    def derive_session(self, ctx: DeriveContext, *, cube_id: str, session_id: str,
                       tenant: str) -> None:
        with ctx.units.store.transaction() as session:
            cube = ctx.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            key = cube.key
            turns = session.scalars(select(UnitRow).where(
                *_turn_conditions(key, session_id)).order_by(UnitRow.pk)).all()
            if not turns:
                return
            spans = session.execute(select(SpanRow.unit_pk, SpanRow.message_pk).where(
                SpanRow.unit_pk.in_([t.pk for t in turns]))).all()
            with self._lock:
                # the router's statistics when current (kept on every write), else counted
                stats = ctx.term_stats(cube)
                if stats is None:
                    stats = self._term_stats(session, key)
                drafts = [d for d in derive_units(
                    [t.pk for t in turns], [index_text(t) for t in turns],
                    np.stack([vector_of(t) for t in turns]),
                    stats=stats, session_key=session_id,
                    summary_turns=self.summary_turns, keywords=self.keywords,
                    analyzer=self.analyzer) if d.granularity in DERIVED and d.text.strip()]
        missing = [d.text for d in drafts if d.vector is None]
        embedded = iter(ctx.embed(missing)) if missing else iter(())
        vectors = [d.vector if d.vector is not None else next(embedded) for d in drafts]
        message_of = dict(spans)
        now = utcnow()
        read = [(t.pk, t.content_sha) for t in turns]
        with ctx.units.write() as (session, publish):
            cube_row = ctx.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            if _active_turns(session, cube_row.key, session_id) != read:
                # A turn was deleted, corrected or purged since it was read: never write what
                # derives from the old state (the change queued this session's next job).
                return
            old = session.scalars(select(UnitRow).where(
                UnitRow.cube_key == cube_row.key, UnitRow.session_id == session_id,
                UnitRow.granularity.in_(DERIVED), UnitRow.kind == "plaintext")).all()
            if sorted((o.granularity, o.text) for o in old if o.status == "active") == sorted(
                    (d.granularity, d.text) for d in drafts):
                return  # unchanged: replaying a session writes nothing
            old_pks = [o.pk for o in old]
            if old_pks:
                session.execute(delete(SpanRow).where(SpanRow.unit_pk.in_(old_pks)))
                session.execute(delete(LinkRow).where(
                    (LinkRow.src_pk.in_(old_pks)) | (LinkRow.dst_pk.in_(old_pks))))
                session.execute(delete(UnitRow).where(UnitRow.pk.in_(old_pks)))
            new_pks = []
            for draft, vector in zip(drafts, vectors):
                unit_id = uuid.uuid4().hex
                row = new_unit(
                    unit_id=unit_id, cube=cube_row, lineage_id=unit_id, version=1,
                    kind="plaintext", granularity=draft.granularity, text=draft.text,
                    content_sha=content_hash(draft.text), session_id=session_id,
                    extractor=draft.extractor, status="active", tags=[],
                    meta=dict(draft.meta), confidence=1.0, created_at=now,
                    valid_from=min((t.valid_from for t in turns if t.valid_from), default=None),
                    embedding=np.asarray(vector, dtype=np.float32))
                session.add(row)
                session.flush()
                new_pks.append(row.pk)
                link_type = "summarizes" if draft.granularity == "summary" else "derived_from"
                for source in draft.sources:
                    session.add(LinkRow(cube_key=cube_row.key, src_pk=row.pk, dst_pk=source,
                                        type=link_type, weight=1.0, created_at=now))
                    if draft.granularity == "summary" and source in message_of:
                        session.add(SpanRow(unit_pk=row.pk, message_pk=message_of[source],
                                            start=0, end=len(next(
                                                t.text or "" for t in turns if t.pk == source))))
            ctx.units.bump_index_version(cube_row)
            publish(cube_row, remove=old_pks, add=new_pks,
                    vectors=np.stack([np.asarray(v, dtype=np.float32) for v in vectors]))


def _turn_conditions(cube_key: str, session_id: str) -> list[ColumnElement[bool]]:
    return [UnitRow.cube_key == cube_key, UnitRow.session_id == session_id,
            UnitRow.granularity == "turn", UnitRow.status == "active",
            UnitRow.embedding.is_not(None)]


def _active_turns(session: Session, cube_key: str,
                  session_id: str) -> list[tuple[int, str | None]]:
    """(pk, content hash) of the session's active turns, in pk order."""
    return [(pk, sha) for pk, sha in session.execute(select(UnitRow.pk, UnitRow.content_sha)
                                                     .where(*_turn_conditions(cube_key, session_id))
                                                     .order_by(UnitRow.pk))]
