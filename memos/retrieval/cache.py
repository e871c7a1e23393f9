"""Multi-granularity retrieval for the cube: a per-cube :class:`GranularIndex` cache.

The cache is rebuilt from SQL (active units, their vectors and the persisted
``associated`` links) whenever it is missing or older than the cube's ``index_version``,
and kept current by :meth:`RouterCache.apply` after each committed write of this process.
New units are associated with earlier ones by the GMM rule as they arrive; those links are
returned so the cube persists them (visible through the provenance API).

Cubes above ``max_units`` turns are searched by the vector index alone: the router's
per-query cost grows with the cube, and it is built for a user's or agent's conversation
memory (LoCoMo conversations are ~600 turns), not a corpus.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timezone

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from memos.granularity.gmm import Link
from memos.granularity.units import TermStats
from memos.retrieval.granular_index import GranularIndex, IndexUnit, SearchResult
from memos.store.models import CubeRow, LinkRow, SpanRow, UnitRow

#: Granularities the router indexes (``cluster`` units are its own output, never input).
ROUTED = ("turn", "session", "summary", "keyword", "fact")


def index_text(row: UnitRow) -> str:
    """What the router reads for a unit: turns carry their speaker (questions name people)."""
    if row.granularity == "turn" and row.speaker:
        return f"{row.speaker}: {row.text}"
    return row.text or ""


@dataclass
class _Entry:
    index: GranularIndex
    stats: TermStats
    version: int


class RouterCache:
    def __init__(self, *, max_units: int = 5000) -> None:
        self.max_units = max_units
        self._entries: dict[str, _Entry] = {}
        self._usable: dict[str, tuple[int, bool]] = {}
        self._lock = threading.RLock()

    def usable(self, session: Session, cube: CubeRow) -> bool:
        """Whether the cube is small enough for router search (counted in SQL once per
        index version)."""
        known = self._usable.get(cube.key)
        if known is not None and known[0] == cube.index_version:
            return known[1]
        turns = session.scalar(select(func.count()).select_from(UnitRow).where(
            UnitRow.cube_key == cube.key, UnitRow.granularity == "turn",
            UnitRow.status == "active")) or 0
        self._usable[cube.key] = (cube.index_version, turns <= self.max_units)
        return turns <= self.max_units

    def get(self, session: Session, cube: CubeRow) -> _Entry:
        with self._lock:
            entry = self._entries.get(cube.key)
            if entry is None or entry.version != cube.index_version:
                entry = self._build(session, cube)
                self._entries[cube.key] = entry
            return entry

    def search(self, session: Session, cube: CubeRow, query: str, vector: np.ndarray, *,
               top_k: int, granularities: Sequence[str] | None = None,
               explain: bool = False) -> SearchResult:
        entry = self.get(session, cube)
        with self._lock:
            return entry.index.search(query, vector, top_k=top_k, granularities=granularities,
                                      explain=explain)

    def apply(self, session: Session, cube: CubeRow, *, remove: Sequence[int],
              add: Sequence[int]) -> list[Link]:
        """Follow one committed write (``cube.index_version`` is the version it wrote).

        Returns the association links the new units formed, for the caller to persist.
        """
        with self._lock:
            entry = self._entries.get(cube.key)
            if entry is None or entry.version != cube.index_version - 1:
                # First write seen here, or another process moved SQL on: rebuild from SQL
                # without this write's units, then add them so they get associated.
                entry = self._build(session, cube, exclude=add)
                entry.version = cube.index_version - 1
                self._entries[cube.key] = entry
            entry.index.remove(remove)
            rows = _load(session, cube.key, add) if add else []
            links = entry.index.add([_unit(r, sources) for r, sources in rows])
            for r, _ in rows:
                if r.granularity == "session" and r.session_id:
                    entry.stats.add(r.session_id, entry.index.analyzer.tokens(r.text or ""))
            entry.version = cube.index_version
            return links

    def stats(self, session: Session, cube: CubeRow) -> TermStats:
        return self.get(session, cube).stats

    def drop(self, cube_key: str) -> None:
        with self._lock:
            self._entries.pop(cube_key, None)
            self._usable.pop(cube_key, None)

    def _build(self, session: Session, cube: CubeRow, exclude: Sequence[int] = ()) -> _Entry:
        skip = set(exclude)
        rows = [r for r in _load(session, cube.key, None) if r[0].pk not in skip]
        index = GranularIndex(associate=False)
        index.add([_unit(r, sources) for r, sources in rows])
        pks = {r.pk for r, _ in rows}
        stored = session.execute(select(LinkRow.src_pk, LinkRow.dst_pk, LinkRow.weight).where(
            LinkRow.cube_key == cube.key, LinkRow.type == "associated")).all()
        index.add_links(Link(a, b, w) for a, b, w in stored if a in pks and b in pks)
        index.associate_on_add = True
        stats = TermStats()
        for r, _ in rows:
            if r.granularity == "session" and r.session_id:
                stats.add(r.session_id, index.analyzer.tokens(r.text or ""))
        return _Entry(index, stats, cube.index_version)


def _load(session: Session, cube_key: str,
          pks: Sequence[int] | None) -> list[tuple[UnitRow, tuple[int, ...]]]:
    """Active routed units (all, or these pks) with, for facts, their source turns."""
    query = select(UnitRow).where(
        UnitRow.cube_key == cube_key, UnitRow.status == "active", UnitRow.kind == "plaintext",
        UnitRow.granularity.in_(ROUTED), UnitRow.embedding.is_not(None)).order_by(UnitRow.pk)
    if pks is not None:
        query = query.where(UnitRow.pk.in_(list(pks)))
    rows = session.scalars(query).all()
    facts = [r.pk for r in rows if r.granularity == "fact"]
    sources: dict[int, tuple[int, ...]] = {}
    if facts:
        # A fact stands for the turn(s) of the message(s) it cites.
        fact_spans = select(SpanRow.unit_pk, SpanRow.message_pk).where(
            SpanRow.unit_pk.in_(facts)).subquery()
        turn_spans = select(SpanRow.unit_pk.label("turn_pk"), SpanRow.message_pk).join(
            UnitRow, UnitRow.pk == SpanRow.unit_pk).where(
            UnitRow.granularity == "turn", UnitRow.cube_key == cube_key).subquery()
        for fact_pk, turn_pk in session.execute(
                select(fact_spans.c.unit_pk, turn_spans.c.turn_pk).join(
                    turn_spans, turn_spans.c.message_pk == fact_spans.c.message_pk)):
            sources[fact_pk] = (*sources.get(fact_pk, ()), int(turn_pk))
    return [(r, sources.get(r.pk, ())) for r in rows]


def _unit(row: UnitRow, sources: tuple[int, ...]) -> IndexUnit:
    """The router's view of a row. A fact citing turns is a channel that scores those turns;
    a memory citing none (added directly) is ranked as a retrieval target of its own."""
    assert row.embedding is not None  # _load selects rows with embeddings only
    granularity = row.granularity
    if granularity == "fact" and not sources:
        granularity = "turn"
    when = row.valid_from
    if when is not None and when.tzinfo is None:  # stored as UTC (see UTCDateTime)
        when = when.replace(tzinfo=timezone.utc)
    return IndexUnit(id=int(row.pk), granularity=granularity, text=index_text(row),
                     vector=row.embedding, session_key=row.session_id or f"unit:{row.pk}",
                     sources=sources, speaker=row.speaker if granularity == "turn" else None,
                     timestamp=None if when is None else when.timestamp())
