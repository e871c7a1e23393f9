"""Search and context: the router or the vector index ranks, the store has the last word.

:class:`Searcher` serves :meth:`memos.cube.MemCube.search` and ``.context``. Router mode
ranks turns (``hits``) and sessions by the multi-granularity router; dense mode ranks the
units the filters select by cosine, through the vector index (exact scan for ``as_of`` and
non-active statuses, which the index does not hold); hybrid mode (what ``auto`` serves when
the router cannot) re-ranks the :data:`~memos.retrieval.hybrid.HYBRID_POOL` nearest of those
units by cosine plus BM25 within the pool (:func:`~memos.retrieval.hybrid.hybrid_rank`).
``filter_conditions`` turns :class:`Filters` into SQL, shared with listing.

In a cube of one user's memory (``metadata.user_name`` set) nearly every unit names that
user, so the query's own mention of the name pulls the units that are mostly name
("Sharon Brown's name is Sharon Brown.") nearest to every question; the query is embedded
with the name read as "the user" (:func:`dense_query`). The lexical side and coverage read
the query as written.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import bindparam, exists, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from memos.embed import Embedder, QueryCache
from memos.errors import InvalidInput
from memos.index import VectorIndex
from memos.public import PUBLIC_COLUMNS, unit_public
from memos.retrieval.cache import RouterCache, index_text
from memos.retrieval.coverage import query_coverage
from memos.retrieval.hybrid import HYBRID_POOL, hybrid_rank
from memos.store.models import CubeRow, TagRow, UnitRow, vector_of
from memos.store.units import UnitRepository
from memos.types import (
    ContextRequest,
    ContextResponse,
    Filters,
    Granularity,
    Hit,
    MemoryPublic,
    ScoreKind,
    SearchMode,
    SearchRequest,
    SearchResponse,
    Status,
    Truncation,
)
from memos.usage import RetrievalCounter

__all__ = ["Searcher", "Timings", "filter_conditions", "needs_exact", "estimate_tokens",
           "TokenCounter", "pack_context", "dense_query"]


def dense_query(query: str, user_name: object) -> str:
    """``query`` as the cube's embedder should read it: the cube's user named as "the
    user" (their full name, or a first name of a two-part or longer name), possessives
    kept; unchanged without a ``user_name``.

    >>> dense_query("What is Sharon Brown's job? Does Sharon like golf?", "Sharon Brown")
    "What is the user's job? Does the user like golf?"
    """
    if not isinstance(user_name, str) or not user_name.split():
        return query
    parts = user_name.split()
    names = [re.escape(" ".join(parts))] + ([re.escape(parts[0])] if len(parts) > 1 else [])
    return re.sub(rf"\b(?:{'|'.join(names)})\b", "the user", query, flags=re.IGNORECASE)


#: The public columns of the units a search returns, by key (built once: building a select
#: of twenty columns costs about as much as running it).
_HIT_ROWS = select(*PUBLIC_COLUMNS).where(UnitRow.pk.in_(bindparam("pks", expanding=True)))

#: Tokens of a text as one model reads it (its tokenizer), or :func:`estimate_tokens`.
TokenCounter = Callable[[str], int]


def estimate_tokens(text: str) -> int:
    """Token estimate for budgets when no model is known: ``max(words × 1.3, chars / 4)``,
    rounded up, at least 1.

    Words × 1.3 fits English prose; characters / 4 (about four characters per BPE token)
    keeps text without spaces — code, URLs, base64, one long run — from counting as a word.

    >>> estimate_tokens("Ana adopted a dog named Pixel"), estimate_tokens("x" * 30_000)
    (8, 7500)
    """
    return max(1, math.ceil(max(len(text.split()) * 1.3, len(text) / 4)))


def _line_parts(unit: MemoryPublic) -> tuple[str, str, str]:
    """A context line as head, text and tail: ``- {date }{speaker: }{text} [{id}]``."""
    when = unit.valid_from.date().isoformat() + " " if unit.valid_from else ""
    who = f"{unit.speaker}: " if unit.speaker else ""
    return f"- {when}{who}", " ".join((unit.text or "").split()), f" [{unit.id}]"


def _shorten(head: str, text: str, tail: str, room: int,
             count_tokens: TokenCounter) -> tuple[str, int] | None:
    """The line with ``text`` cut to its longest prefix for which the line, marked `` …``,
    counts at most ``room`` tokens (binary search with the same counter, so the budget holds
    for any tokenizer); ``None`` when not even the empty text fits."""
    def line(n: int) -> str:
        return f"{head}{text[:n]} …{tail}"

    best = None
    lo, hi = 0, len(text) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        cost = count_tokens(line(mid))
        if cost <= room:
            best, lo = (line(mid), cost), mid + 1
        else:
            hi = mid - 1
    return best


def pack_context(hits: Sequence[Hit], *, max_tokens: int,
                 count_tokens: TokenCounter = estimate_tokens) -> ContextResponse:
    """Prompt-ready lines for ``hits`` (best first) within ``max_tokens`` by ``count_tokens``.

    Each line is ``- {date }{speaker: }{text} [{unit id}]``. Lines are taken in rank order;
    one that does not fit the tokens left is dropped (a later, shorter one may still fit),
    except the best line, which is shortened to the budget instead. Invariant:
    ``tokens`` (the sum of the lines' counts) ``≤ max_tokens``; ``truncated`` lists what was
    dropped or shortened (``None`` when every hit fit whole).
    """
    lines: list[str] = []
    ids: list[str] = []
    dropped: list[str] = []
    shortened: list[str] = []
    used = cut = 0
    for hit in hits:
        head, text, tail = _line_parts(hit.unit)
        line = head + text + tail
        cost = count_tokens(line)
        if used + cost > max_tokens:
            short = None if lines else _shorten(head, text, tail, max_tokens - used,
                                                 count_tokens)
            if short is None:
                dropped.append(hit.unit.id)
                cut += cost
                continue
            shortened.append(hit.unit.id)
            cut += max(0, cost - short[1])
            line, cost = short
        lines.append(line)
        ids.append(hit.unit.id)
        used += cost
    truncated = (Truncation(budget=max_tokens, dropped_unit_ids=dropped,
                            shortened_unit_ids=shortened, tokens_cut=cut)
                 if dropped or shortened else None)
    return ContextResponse(text="\n".join(lines), unit_ids=ids, tokens=used, truncated=truncated)


@dataclass
class Timings:
    """Milliseconds spent per stage of one call (reported in ``Server-Timing``)."""

    stages: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, started: float) -> float:
        now = time.perf_counter()
        self.stages[name] = self.stages.get(name, 0.0) + (now - started) * 1000
        return now


def filter_conditions(filters: Filters) -> list[ColumnElement[bool]]:
    """SQL conditions for list and search. Deleted units never match."""
    conds: list[ColumnElement[bool]] = []
    if filters.as_of is not None:
        t = filters.as_of
        if filters.status not in (None, Status.active):
            raise InvalidInput("as_of selects the units active at that time; "
                               "do not combine it with a status filter")
        conds += [UnitRow.created_at <= t,
                  or_(UnitRow.superseded_at.is_(None), UnitRow.superseded_at > t),
                  or_(UnitRow.deleted_at.is_(None), UnitRow.deleted_at > t),
                  UnitRow.status.in_(["active", "superseded", "deleted", "archived"]),
                  UnitRow.text.is_not(None)]
    else:  # Filters.status cannot be deleted: deleted units are never listed
        conds.append(UnitRow.status == (filters.status or Status.active).value)
    if filters.kind is not None:
        conds.append(UnitRow.kind == filters.kind.value)
    if filters.granularity:
        conds.append(UnitRow.granularity.in_([g.value for g in filters.granularity]))
    if filters.session_id is not None:
        conds.append(UnitRow.session_id == filters.session_id)
    for tag in filters.tags or []:
        conds.append(exists().where(TagRow.unit_pk == UnitRow.pk, TagRow.tag == tag))
    if filters.created_after is not None:
        conds.append(UnitRow.created_at >= filters.created_after)
    if filters.created_before is not None:
        conds.append(UnitRow.created_at < filters.created_before)
    return conds


def needs_exact(filters: Filters) -> bool:
    """Filters the index does not hold (past or non-active units) go to exact search."""
    return filters.as_of is not None or filters.status not in (None, Status.active)


class Searcher:
    """Search and context over every cube of a unit repository: its rows, the vector index,
    the router cache (``None``: dense only) and the embedder; hits are counted in
    ``retrievals`` (the scheduler's "hot")."""

    def __init__(self, *, units: UnitRepository, embedder: Embedder, index: VectorIndex,
                 router: RouterCache | None, retrievals: RetrievalCounter,
                 query_cache_size: int = 4096) -> None:
        self.units = units
        self.embedder = embedder
        #: repeated queries skip the embedder (``query_cache_size=0``: every query embeds)
        self.queries = QueryCache(embedder, query_cache_size)
        self.index = index
        self.router = router
        self.retrievals = retrievals

    def search(self, cube_id: str, body: SearchRequest, *, tenant: str,
               timings: Timings | None = None) -> SearchResponse:
        """The most relevant units for a query, best first (higher score = more relevant).

        Router mode ranks turns (``hits``) and sessions (``sessions``) by the
        multi-granularity router; dense mode ranks the units the filters select by cosine.
        """
        timings = timings or Timings()
        started = time.perf_counter()
        with self.units.store.transaction() as session:
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            embedder = self.units.check_embedder(cube, self.embedder)
            t = timings.add("db", started)
            query = self.queries.embed(dense_query(body.query, (cube.meta or {}).get(
                "user_name")), embedder=embedder)
            t = timings.add("embed", t)
            mode = self._mode(session, cube, body)
            if mode is SearchMode.router:
                assert self.router is not None
                # Every granularity is evidence for the ranking; the granularity filter only
                # selects which hits come back.
                dense_ids = None
                if self.router.uses_candidates(session, cube):
                    dense_ids = self.index.nearest(session, cube, query, self.router.ann_k)
                    t = timings.add("ann", t)
                found = self.router.search(session, cube, body.query, query,
                                           top_k=body.top_k, explain=body.explain,
                                           dense_ids=dense_ids)
                t = timings.add("router", t)
                rows = {r.pk: r for r in session.execute(_HIT_ROWS, {"pks": [
                    h.id for h in found.turns + found.sessions if h.id is not None]})}
                explained = self._public_ids(session, found) if body.explain else {}
                # Turn-level units that are not turns (facts in a cube without turns) can rank;
                # the filter keeps the granularities asked for.
                wanted = {g.value for g in body.filters.granularity or Granularity}
                kept = [(h, rows[h.id]) for h in found.turns
                        if h.id in rows and rows[h.id].granularity in wanted]
                hits = [Hit(unit=unit_public(row, cube.id), score=h.score,
                            explain=explained.get(id(h))) for h, row in kept]
                sessions = [Hit(unit=unit_public(rows[h.id], cube.id), score=h.score,
                                explain=explained.get(id(h)))
                            for h in found.sessions if h.id in rows]
                timings.add("db", t)
                router = {"weights": found.weights, "entropies": found.entropies}
                self.retrievals.record(cube.key, [row.pk for _, row in kept])
                return SearchResponse(hits=hits, sessions=sessions, mode=mode, router=router,
                                      score_kind=ScoreKind.router, coverage=query_coverage(
                                          body.query, [h.unit.text or "" for h in hits]),
                                      took_ms=(time.perf_counter() - started) * 1000)
            conds = filter_conditions(body.filters)
            k = max(body.top_k, HYBRID_POOL) if mode is SearchMode.hybrid else body.top_k
            if needs_exact(body.filters):
                pairs = self._exact_search(session, cube, query, k, conds)
            else:
                pairs = self.index.search(session, cube, query, k, conds)
            t = timings.add("index", t)
            if mode is SearchMode.hybrid:
                ranked = [(pairs[i][0], score, pairs[i][1], lexical) for i, score, lexical in
                          hybrid_rank(body.query, [index_text(row) for row, _ in pairs],
                                      [score for _, score in pairs], top_k=body.top_k)]
                t = timings.add("lexical", t)
            else:
                ranked = [(row, score, score, 0.0) for row, score in pairs]
            hits = [Hit(unit=unit_public(row, cube.id), score=score, explain={
                "granularity": row.granularity, "dense": cosine,
                **({"lexical": lexical} if mode is SearchMode.hybrid else {})}
                if body.explain else None) for row, score, cosine, lexical in ranked]
            timings.add("db", t)
        self.retrievals.record(cube.key, [row.pk for row, *_ in ranked])
        return SearchResponse(hits=hits, mode=mode, score_kind=ScoreKind.hybrid
                              if mode is SearchMode.hybrid else ScoreKind.cosine,
                              coverage=query_coverage(body.query,
                                                      [h.unit.text or "" for h in hits]),
                              took_ms=(time.perf_counter() - started) * 1000)

    @staticmethod
    def _public_ids(session: Session, found: Any) -> dict[int, dict[str, Any]]:
        """Router explanations with unit ids instead of internal row keys."""
        pks: set[int] = set()
        for h in found.turns + found.sessions:
            explain = h.explain or {}
            pks.update(explain.get("association_path") or [])
            if "best_turn" in explain:
                pks.add(explain["best_turn"])
        ids = {pk: uid for pk, uid in session.execute(select(UnitRow.pk, UnitRow.id).where(
            UnitRow.pk.in_(pks)))} if pks else {}
        out = {}
        for h in found.turns + found.sessions:
            explain = dict(h.explain or {})
            if "association_path" in explain:
                explain["association_path"] = [ids.get(p, p) for p in
                                               explain["association_path"] or []]
            if "best_turn" in explain:
                explain["best_turn"] = ids.get(explain["best_turn"], explain["best_turn"])
            out[id(h)] = explain
        return out

    def _mode(self, session: Session, cube: CubeRow, body: SearchRequest) -> SearchMode:
        f = body.filters
        only_granularity = f.model_dump(exclude_defaults=True).keys() <= {"granularity"}
        # The router's hits are turns: a list naming other granularities wants those ranked
        # too, which only the vector index does (router mode would silently drop them).
        routable = (self.router is not None and only_granularity
                    and set(f.granularity or [Granularity.turn]) == {Granularity.turn})
        if body.mode is SearchMode.router:
            if not routable:
                raise InvalidInput("router search ranks turns: it takes no filters other than "
                                   "the granularity list ['turn']")
            return SearchMode.router
        if body.mode is SearchMode.auto and routable:
            assert self.router is not None
            if self.router.usable(session, cube):
                return SearchMode.router
        return SearchMode.hybrid if body.mode is SearchMode.auto else body.mode

    def _exact_search(self, session: Session, cube: CubeRow, query: np.ndarray, k: int,
                      conds: Sequence[ColumnElement[bool]]) -> list[tuple[UnitRow, float]]:
        rows = session.scalars(select(UnitRow).where(
            UnitRow.cube_key == cube.key, UnitRow.embedding.is_not(None), *conds)).all()
        if not rows:
            return []
        scores = np.stack([vector_of(r) for r in rows]) @ query
        order = np.argsort(-scores)[:k]
        return [(rows[i], float(scores[i])) for i in order]

    def context(self, cube_id: str, body: ContextRequest, *, tenant: str,
                count_tokens: TokenCounter = estimate_tokens) -> ContextResponse:
        """Prompt-ready memory: one line per unit, best first, each citing ``[unit id]``,
        within ``body.max_tokens`` as ``count_tokens`` counts them (default: the model-less
        :func:`estimate_tokens`; chat passes its model's tokenizer). See :func:`pack_context`.
        """
        found = self.search(cube_id, SearchRequest(query=body.query, top_k=body.top_k,
                                                   filters=body.filters), tenant=tenant)
        packed = pack_context(found.hits, max_tokens=body.max_tokens, count_tokens=count_tokens)
        return packed.model_copy(update={"coverage": found.coverage})
