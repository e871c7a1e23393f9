"""The ``session`` unit of a conversation session: its transcript and mean turn vector.

Derived, so it is rewritten in place rather than versioned — after an ingest, and after a
turn of the session is deleted, corrected or purged (:mod:`memos.derive.sources`). Deleted
messages and turns are left out; a session with nothing left loses its unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from memos.embed import Embedder, embed_texts
from memos.store.models import CubeRow, LinkRow, MessageRow, SpanRow, TagRow, UnitRow
from memos.store.units import content_hash, new_unit

__all__ = ["SessionUnitChange", "refresh_session_unit", "turn_embedding_text"]


def turn_embedding_text(speaker: str | None, content: str) -> str:
    """What a turn's vector is computed from: the speaker's name, then the text."""
    return f"{speaker}: {content}" if speaker else content


@dataclass(frozen=True)
class SessionUnitChange:
    """What the index must do after a refresh: drop ``stale_pk``'s old vector (when the unit
    existed before), then add ``unit``'s (``None`` when the session has nothing left)."""

    unit: UnitRow | None
    stale_pk: int | None


def refresh_session_unit(session: Session, cube: CubeRow, session_id: str, *,
                         now: datetime, embedder: Embedder) -> SessionUnitChange:
    """Rewrite the session's ``session`` unit from its live messages and active turns."""
    messages = session.scalars(select(MessageRow).where(
        MessageRow.cube_key == cube.key, MessageRow.session_id == session_id,
        MessageRow.deleted_at.is_(None)).order_by(MessageRow.seq)).all()
    turns = session.execute(select(UnitRow.pk, UnitRow.embedding).where(
        UnitRow.cube_key == cube.key, UnitRow.session_id == session_id,
        UnitRow.granularity == "turn", UnitRow.status == "active")).all()
    unit = session.scalar(select(UnitRow).where(
        UnitRow.cube_key == cube.key, UnitRow.session_id == session_id,
        UnitRow.granularity == "session", UnitRow.status == "active"))
    stale_pk = unit.pk if unit is not None else None
    if unit is not None:
        session.execute(delete(SpanRow).where(SpanRow.unit_pk == unit.pk))
        session.execute(delete(LinkRow).where(LinkRow.src_pk == unit.pk,
                                              LinkRow.type == "derived_from"))
    if not messages:
        if unit is not None:
            session.execute(delete(LinkRow).where(LinkRow.dst_pk == unit.pk))
            session.execute(delete(TagRow).where(TagRow.unit_pk == unit.pk))
            session.delete(unit)
        return SessionUnitChange(unit=None, stale_pk=stale_pk)
    # Like every unit's, its spans index into the cited message: each message, whole.
    spans = [(m.pk, 0, len(m.content)) for m in messages]
    text = "\n".join(f"{m.speaker or m.role}: {m.content}" for m in messages)
    vectors = [e for _, e in turns if e is not None]
    mean = np.mean(vectors, axis=0) if vectors else embed_texts(embedder, [text])[0]
    mean = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
    times = [m.timestamp for m in messages if m.timestamp]
    if unit is None:
        unit = new_unit(cube=cube, granularity="session", text=None,
                        session_id=session_id, extractor="ingest", created_at=now)
        session.add(unit)
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
    return SessionUnitChange(unit=unit, stale_pk=stale_pk)
