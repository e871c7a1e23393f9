"""Multi-granularity retrieval for the cube: a per-cube :class:`GranularIndex` cache.

The cache is rebuilt from SQL (active units, their vectors and the persisted
``associated`` links) whenever it is missing or older than the cube's ``index_version``,
and kept current by :meth:`RouterCache.apply` after each committed write of this process.
New units are associated with earlier ones by the GMM rule as they arrive; those links are
returned so the cube persists them (visible through the provenance API).

Search cost is bounded at any size: past ``RouterConfig.exhaustive_max_turns`` turns the
router scores only a candidate pool (the vector index's nearest units, BM25's best, their
sessions and association neighbours; :meth:`GranularIndex.candidate_turns`), below it every
unit (cheaper there, and the reference the pool is measured against).

Memory is what bounds the cache: a cube costs about ``BYTES_PER_UNIT`` per routed unit in
each worker process. ``max_units`` is a guard per cube (a cube with more turns is searched
by hybrid search over the vector index); ``max_cached_units`` bounds one worker's cache
over all cubes, least recently used cubes out first (they are rebuilt from SQL when next
searched).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timezone

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from memos.granularity.gmm import Link
from memos.granularity.units import TermStats
from memos.retrieval.granular_index import (
    GranularIndex,
    IndexUnit,
    Neighbours,
    RouterConfig,
    SearchResult,
)
from memos.store.models import CubeRow, LinkRow, SpanRow, UnitRow

#: Granularities the router indexes (``cluster`` units are its own output, never input).
ROUTED = ("turn", "session", "summary", "keyword", "fact")

#: Python heap per routed unit (384-d vectors in the channels' rows, BM25 postings, context
#: documents, links), measured with tracemalloc: 8.7 KB at 6,000 turns on the pooled path,
#: 10.2 KB at 4,000 on the exhaustive one (README, Router memory).
BYTES_PER_UNIT = 10_000


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
    """Per-cube router indexes of one worker process (see the module docstring).

    ``max_units``: turns above which a cube is not routed (a memory guard);
    ``max_cached_units``: routed units one worker holds over all its cubes (the least
    recently used cubes are dropped past it; the cube being used is always kept);
    ``config``: the router's knobs for every cube.
    """

    def __init__(self, *, max_units: int = 1_000_000, max_cached_units: int = 2_000_000,
                 config: RouterConfig | None = None) -> None:
        self.max_units = max_units
        self.max_cached_units = max_cached_units
        self.config = config or RouterConfig()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._usable: dict[str, tuple[int, bool]] = {}
        self._lock = threading.RLock()

    @property
    def ann_k(self) -> int:
        """How many nearest units to ask the vector index for (all granularities share the
        list; the router keeps ``dense_pool`` of each)."""
        return 2 * self.config.dense_pool

    def cached_units(self) -> int:
        """Routed units this worker holds now, over all cubes."""
        with self._lock:
            return sum(len(e.index) for e in self._entries.values())

    def uses_candidates(self, session: Session, cube: CubeRow) -> bool:
        """Whether a search of this cube scores a candidate pool (and so wants ``dense_ids``
        from the vector index) rather than every unit."""
        return self.get(session, cube).index.uses_candidates()

    def usable(self, session: Session, cube: CubeRow) -> bool:
        """Whether the cube is within the memory guard for router search: its turns, read
        off its cached index when that is current (or one write behind, the write being
        applied: that write's turns may pass the guard), else counted in SQL, once per
        index version."""
        known = self._usable.get(cube.key)
        if known is not None and known[0] == cube.index_version:
            return known[1]
        entry = self._entries.get(cube.key)
        if entry is not None and 0 <= cube.index_version - entry.version <= 1:
            # the cached index is current, or one write behind (the write being applied):
            # its turn count answers without an O(turns) count in SQL on every write
            return self._remember_guard(cube, entry.index.turn_count())
        turns = session.scalar(select(func.count()).select_from(UnitRow).where(
            UnitRow.cube_key == cube.key, UnitRow.granularity == "turn",
            UnitRow.status == "active")) or 0
        return self._remember_guard(cube, turns)

    def _remember_guard(self, cube: CubeRow, turns: int) -> bool:
        """The guard's answer for ``turns`` turns, kept for the cube's index version."""
        ok = turns <= self.max_units
        self._usable[cube.key] = (cube.index_version, ok)
        return ok

    def get(self, session: Session, cube: CubeRow) -> _Entry:
        with self._lock:
            entry = self._entries.get(cube.key)
            if entry is None or entry.version != cube.index_version:
                entry = self._build(session, cube)
                self._entries[cube.key] = entry
                self._evict(keep=cube.key)
            self._entries.move_to_end(cube.key)
            return entry

    def search(self, session: Session, cube: CubeRow, query: str, vector: np.ndarray, *,
               top_k: int, granularities: Sequence[str] | None = None,
               explain: bool = False, dense_ids: Sequence[int] | None = None) -> SearchResult:
        """Router search of the cube; ``dense_ids`` are the vector index's nearest units
        (see :attr:`ann_k`), used when the cube scores a candidate pool."""
        entry = self.get(session, cube)
        with self._lock:
            return entry.index.search(query, vector, top_k=top_k, granularities=granularities,
                                      explain=explain, dense_ids=dense_ids)

    def _evict(self, *, keep: str) -> None:
        total = sum(len(e.index) for e in self._entries.values())
        for key in list(self._entries):
            if total <= self.max_cached_units:
                break
            if key != keep:
                total -= len(self._entries.pop(key).index)

    def apply(self, session: Session, cube: CubeRow, *, remove: Sequence[int],
              add: Sequence[int], neighbours: Neighbours | None = None) -> list[Link]:
        """Follow one committed write (``cube.index_version`` is the version it wrote).

        Returns the association links the new units formed, for the caller to persist.
        ``neighbours`` (the vector index's nearest units, which already hold this write's)
        bounds each new unit's association to its ANN neighbours in a large cube.
        """
        with self._lock:
            entry = self._entries.get(cube.key)
            if entry is None or entry.version != cube.index_version - 1:
                # First write seen here, or another process moved SQL on: rebuild from SQL
                # without this write's units, then add them so they get associated.
                entry = self._build(session, cube, exclude=add)
                entry.version = cube.index_version - 1
                self._entries[cube.key] = entry
                self._evict(keep=cube.key)
            emptied = {u.session_key for u in map(entry.index.unit, remove)
                       if u is not None and u.granularity == "session"}
            entry.index.remove(remove)
            rows = _load(session, cube.key, add) if add else []
            links = entry.index.add([_unit(r, sources) for r, sources in rows],
                                    neighbours=neighbours)
            for r, _ in rows:
                if r.granularity == "session" and r.session_id:
                    entry.stats.add(r.session_id, entry.index.analyzer.tokens(r.text or ""))
                    emptied.discard(r.session_id)
            for key in emptied:  # a session unit removed and not rewritten
                entry.stats.remove(key)
            entry.version = cube.index_version
            self._remember_guard(cube, entry.index.turn_count())
            return links

    def current_stats(self, cube: CubeRow) -> TermStats | None:
        """The term statistics of the cube's session units (keyword extraction's document
        frequencies) when its cached index is current with ``cube.index_version``, else
        None: the router keeps them up to date on every write, so a deriver reading them
        runs no O(sessions) query. Read-only for the caller; a concurrent write may move
        them on by that write while it reads."""
        with self._lock:
            entry = self._entries.get(cube.key)
            if entry is None or entry.version != cube.index_version:
                return None
            return entry.stats

    def drop(self, cube_key: str) -> None:
        with self._lock:
            self._entries.pop(cube_key, None)
            self._usable.pop(cube_key, None)

    def _build(self, session: Session, cube: CubeRow, exclude: Sequence[int] = ()) -> _Entry:
        skip = set(exclude)
        rows = [r for r in _load(session, cube.key, None) if r[0].pk not in skip]
        index = GranularIndex(associate=False, config=self.config)
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
