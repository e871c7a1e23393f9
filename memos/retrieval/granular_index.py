"""The in-memory multi-granularity index: dense + BM25 channels, entropy router, PPR.

:class:`GranularIndex` holds units keyed by int64 ids. It is a *cache*: everything in it
can be rebuilt by re-adding the units (the cube persists units, vectors and the links that
:meth:`GranularIndex.add` returns). Units of granularity ``turn`` are the retrieval targets;
``session``/``summary``/``keyword`` units describe a whole session (``session_key``) and act
as session-level evidence; any other granularity (``fact``, …) is searched as a turn-level
channel of its own.

Search, for a query with text ``q`` and unit-norm vector ``v``:

1. *Channels*, each fusing standardised dense (cosine) and BM25 scores
   (:func:`memos.retrieval.router.fuse`): ``turn``; ``context`` (a turn with its neighbours in the
   session, BM25 + mean vector, which resolves pronouns/ellipsis); ``session``, ``summary``,
   ``keyword`` (per session, copied down to its turns). The ``session`` channel's dense
   score is its best turn's cosine: the mean of a session's turn vectors sits near the
   centre of the conversation and is close to every query.
2. *Router*: each channel's normalised entropy ``H/log N`` → weights
   ``w ∝ prior · exp(-H/τ)`` (non-negative, sum 1;
   :func:`memos.retrieval.router.confidence_weights`).
3. ``score(t) = Σ_g w_g · channel_g(t)`` plus a speaker prior (a query naming exactly one
   known speaker favours that speaker's turns) and a time prior (a query naming a date,
   "on 9 November, 2022", "in July 2023", favours turns said near it:
   :func:`memos.temporal.time_closeness` of the unit's ``timestamp``).
4. *Spreading*: personalized PageRank from the top turns over turn↔turn association links
   (GMM-accepted, :func:`memos.granularity.gmm.associate`) and turn↔session membership;
   ``score += ppr_weight · z(ppr)``.
5. Sessions are ranked by a soft maximum of their turns' scores (a session with several
   good turns beats one with a single one) plus their session-level channel score.

Past ``RouterConfig.exhaustive_max_turns`` turns, steps 1–5 run over a bounded candidate
pool (:meth:`GranularIndex.candidate_turns`: ANN and BM25 per channel, their sessions and
association neighbours) instead of every unit, so search cost does not grow with the index.

Incremental: ``add`` links each new unit to earlier ones (one matrix product per batch, or
among its ANN neighbours past ``exhaustive_max_turns`` units) and
updates only the touched sessions' context documents. Each channel holds its vectors once, in
:class:`~memos.retrieval.rows.Rows` (turns also their session, speaker and time), from which a
candidate pool gathers its units with one fancy index; BM25 statistics are updated in place
(:mod:`memos.lexical`); the ascending-id matrix exhaustive scoring reads is stacked lazily
per channel on the first search after a change (``rebuild_ms`` measures it). A removed id is
never returned.

>>> import numpy as np
>>> idx = GranularIndex()
>>> v = np.eye(4, dtype=np.float32)
>>> _ = idx.add([IndexUnit(1, "turn", "A: I moved to Berlin", v[0], "s1"),
...              IndexUnit(2, "turn", "B: nice, when?", v[1], "s1")])
>>> idx.search("Berlin move", v[0], top_k=1).turns[0].id
1
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from memos.granularity import gmm
from memos.lexical import Analyzer, BM25Index
from memos.retrieval.router import (
    confidence_weights,
    fuse,
    normalized_entropy,
    personalized_pagerank,
    transition_matrix,
)
from memos.retrieval.rows import Rows
from memos.temporal import query_periods, time_closeness

__all__ = ["IndexUnit", "Hit", "SearchResult", "RouterConfig", "GranularIndex",
           "SESSION_LEVEL"]

#: ``neighbours(vector, k)``: ids of up to ``k`` units near ``vector`` by an ANN index, best
#: first (any granularity; ids this index does not hold are skipped).
Neighbours = Callable[[np.ndarray, int], Sequence[int]]

#: Granularities that describe a whole session; their scores are copied down to its turns.
SESSION_LEVEL = ("session", "summary", "keyword")


@dataclass(frozen=True, eq=False)
class IndexUnit:
    """One unit to index. ``vector`` is unit-norm float32 (inner product = cosine).

    ``position`` orders turns inside a session (default: arrival order); ``sources`` are the
    ids a derived unit came from (kept for explanations; the cube owns the links);
    ``timestamp`` is when a turn was said, POSIX seconds UTC (None = unknown), matched
    against dates a query names.
    """

    id: int
    granularity: str
    text: str
    vector: np.ndarray
    session_key: str
    sources: tuple[int, ...] = ()
    speaker: str | None = None
    position: int | None = None
    timestamp: float | None = None


@dataclass(frozen=True)
class Hit:
    """A ranked result. ``id`` is the unit id (for a session hit: its ``session`` unit, or
    None when the session has none). Higher ``score`` = more relevant."""

    id: int | None
    granularity: str
    session_key: str
    score: float
    explain: dict[str, Any] | None = None


@dataclass(frozen=True)
class SearchResult:
    turns: list[Hit]
    sessions: list[Hit]
    weights: dict[str, float]
    entropies: dict[str, float]
    took_ms: float


@dataclass(frozen=True)
class RouterConfig:
    """Router knobs (scores are z-scores, so weights are comparable across channels).

    ``priors`` weigh the channels before the entropy term; ``tau`` is the router
    temperature (``w ∝ prior·exp(-H/τ)``; large → priors only); ``lexical_weight`` is the
    BM25 share of each channel's dense/BM25 mix, ``context_lexical_weight`` the same for
    ``context``; ``context_window`` = neighbour turns on each side in a context document;
    ``speaker_boost`` is added to turns of the one speaker a query names, ``time_boost``
    times the time closeness (in [0, 1]) to turns said near a date the query names;
    ``session_dense`` is how the ``session`` channel scores a session densely
    (``"best_turn"``: its best turn's cosine; ``"mean"``: the cosine of the session unit's
    own vector, the mean of its turns); ``ppr_*`` control the spreading (seeds = top turns,
    restart ``1 - damping``); ``association_top_k`` is K of the GMM association;
    ``session_softmax_temperature`` ranks sessions by ``T·log Σ exp(score/T)`` over their
    turns (0: their best turn); ``session_channel_weight`` scales the session-level channels
    in the session ranking; ``session_ppr_weight`` (add the sessions' PPR mass) is an
    ablation switch, off because it did not help on the LoCoMo dev split.

    Candidate pools (a search of an index past ``exhaustive_max_turns`` turns scores only
    these; see :meth:`GranularIndex.candidate_turns`): ``dense_pool`` nearest and
    ``lexical_pool`` best-BM25 units per channel, ``session_pool`` best sessions per
    session-level channel (all their turns join), ``graph_pool`` strongest association
    neighbours per candidate turn. On the LoCoMo dev split every pool setting from 10/0/0 to
    200/10/3 scores within 0.7 points of exhaustive turn R@5 (``memos bench pools``; chosen
    leave-one-conversation-out, held-out R@5 is within 1 point); the defaults keep a margin
    for large cubes. ``exhaustive_max_turns`` (5,000): measured in process on the needle
    cube's growing prefix, exhaustive scoring costs 7 ms at 1k turns, 15 ms at 4k, 21 ms at
    8k and 27 ms at 12.8k (p50), the pool 14-22 ms at every size: they cross between 4k and
    8k turns.

    How the defaults were set: channel priors, the two lexical weights, ``speaker_boost``
    and ``context_window`` (1 vs 2) by a handful of coarse comparisons on the LoCoMo dev
    split (5 conversations), not by a fine search; ``time_boost`` (from 0.5-5),
    ``session_softmax_temperature`` (from 0-1) and ``session_dense`` on the same split, each
    checked leave-one-conversation-out (the value chosen on four conversations was the
    default or within 0.1 of it for every held-out one); the rest a priori.
    """

    priors: dict[str, float] = field(default_factory=lambda: {
        "turn": 0.35, "context": 0.25, "session": 0.25, "summary": 0.05, "keyword": 0.10})
    tau: float = 1.0
    entropy_temperature: float = 1.0
    lexical_weight: float = 0.5
    context_lexical_weight: float = 0.6
    context_window: int = 2
    speaker_boost: float = 0.3
    time_boost: float = 3.0
    session_dense: str = "best_turn"
    ppr_weight: float = 0.1
    ppr_damping: float = 0.5
    ppr_seeds: int = 20
    association_top_k: int = 10
    session_channel_weight: float = 0.5
    session_softmax_temperature: float = 0.3
    session_ppr_weight: float = 0.0
    bm25_k1: float = 1.2
    bm25_b: float = 0.75
    dense_pool: int = 100
    lexical_pool: int = 100
    session_pool: int = 5
    graph_pool: int = 3
    exhaustive_max_turns: int = 5000

    def __post_init__(self) -> None:
        if self.session_dense not in ("best_turn", "mean"):
            raise ValueError(f"session_dense must be 'best_turn' or 'mean', "
                             f"got {self.session_dense!r}")
        if self.time_boost < 0 or self.session_softmax_temperature < 0:
            raise ValueError("time_boost and session_softmax_temperature must be >= 0")


_controller: Any = None
_controller_lock = threading.Lock()


@contextlib.contextmanager
def _blas_threads(n: int | None) -> Iterator[None]:
    """Cap BLAS threads while the block runs. The products here are small (a session's
    turns against a few thousand vectors); multi-threaded OpenBLAS on a busy 2-core machine
    spends more time spinning than computing (measured: ingest 3x slower)."""
    global _controller
    if n is None:
        yield
        return
    with _controller_lock:
        if _controller is None:
            from threadpoolctl import ThreadpoolController

            _controller = ThreadpoolController()
    with _controller.limit(limits=n, user_api="blas"):
        yield


class _Channel:
    """Vectors + BM25 for one granularity; the ascending-id matrix is the vectors' own
    arrays while they arrive in id order (:meth:`Rows.ascending`), else materialised lazily
    (the exhaustive path reads it; a candidate pool gathers from ``vectors``)."""

    def __init__(self, *, k1: float, b: float, analyzer: Analyzer,
                 columns: dict[str, Any] | None = None) -> None:
        self.vectors = Rows(columns=columns)
        self.bm25 = BM25Index(k1=k1, b=b, analyzer=analyzer)
        self._ids = np.zeros(0, dtype=np.int64)
        self._mat: np.ndarray | None = None
        self._dirty = True
        self.rebuild_ms = 0.0

    def put(self, ids: Sequence[int], texts: Sequence[str], vecs: Sequence[np.ndarray],
            **columns: Sequence[Any]) -> None:
        self.vectors.put(ids, vecs, **columns)
        self.bm25.add(ids, texts)
        self._dirty = True

    def drop(self, ids: Iterable[int]) -> None:
        ids = [int(i) for i in ids if int(i) in self.vectors]
        self.vectors.drop(ids)
        self.bm25.remove(ids)
        if ids:
            self._dirty = True

    def matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ids ascending (n,), vectors (n, dim))``, not to be written to."""
        view = self.vectors.ascending()
        if view is not None:
            return view
        if self._dirty:
            t = time.perf_counter()
            self._ids = np.array(sorted(self.vectors), dtype=np.int64)
            self._mat = (self.vectors.gather(self._ids) if len(self._ids)
                         else np.zeros((0, 0), dtype=np.float32))
            self._dirty = False
            self.rebuild_ms += (time.perf_counter() - t) * 1e3
        assert self._mat is not None
        return self._ids, self._mat

    def lexical(self, query_tokens: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(ids ascending, BM25 score)`` of every unit of the channel."""
        return self._timed(self.bm25.scores_tokens, query_tokens)

    def matches(self, query_tokens: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(ids ascending, BM25 score)`` of the units scoring > 0 (cost: the postings)."""
        return self._timed(self.bm25.matches, query_tokens)

    def _timed(self, fn: Callable[[list[str]], tuple[np.ndarray, np.ndarray]],
               query_tokens: list[str]) -> tuple[np.ndarray, np.ndarray]:
        before = self.bm25.rebuilds
        lex_ids, lex = fn(query_tokens)
        if self.bm25.rebuilds != before:
            self.rebuild_ms += self.bm25.last_rebuild_ms
        return lex_ids, lex


@dataclass
class _ChannelView:
    """One channel's units in a view: dense and BM25 scores (one per unit), and the
    ``(unit row, target row)`` pairs mapping them onto turns (or sessions)."""

    dense: np.ndarray
    lex: np.ndarray
    src: np.ndarray
    dst: np.ndarray


@dataclass
class _View:
    """The units one query scores: every unit (exhaustive) or a candidate pool."""

    turn_ids: np.ndarray
    t_sess: np.ndarray
    skeys: list[str]
    speakers: np.ndarray
    times: np.ndarray
    channels: dict[str, _ChannelView]
    graph: Callable[[], sp.csr_matrix]


#: The vector of a unit :class:`GranularIndex` keeps: its channel's Rows hold the only copy.
_IN_ROWS = np.zeros(0, dtype=np.float32)
_IN_ROWS.flags.writeable = False

#: Columns the turn channel keeps beside each vector (see GranularIndex._turn_columns).
_TURN_COLUMNS = {"session": np.int64, "speaker": np.int64, "time": np.float64}


def _wanted(gran: str, wanted: set[str] | None) -> bool:
    return wanted is None or gran in wanted or (gran == "context" and "turn" in wanted)


def _top_ids(ids: np.ndarray, scores: np.ndarray, k: int, *,
             positive: bool = False) -> np.ndarray:
    """The ids of the ``k`` best scores (only scores > 0 with ``positive``), any order."""
    if k <= 0 or not len(ids):
        return ids[:0]
    k = min(k, len(ids))
    top = np.argpartition(-scores, k - 1)[:k]
    return ids[top[scores[top] > 0]] if positive else ids[top]


def _lookup(keys: np.ndarray, values: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``values`` of ``ids`` by ``keys`` (ascending), 0 for an id not among them."""
    if not len(keys):
        return np.zeros(len(ids))
    at = np.minimum(np.searchsorted(keys, ids), len(keys) - 1)
    return np.where(keys[at] == ids, values[at], 0.0)


def _members(pairs: Sequence[tuple[int, int]], pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(a, row of b in pool)`` for the pairs whose ``b`` is in ``pool`` (ascending ids),
    in pair order."""
    if not pairs:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    a, b = (np.array(x, dtype=np.int64) for x in zip(*pairs, strict=True))
    at = np.minimum(np.searchsorted(pool, b), max(len(pool) - 1, 0))
    hit = pool[at] == b if len(pool) else np.zeros(len(b), dtype=bool)
    return a[hit], at[hit]


@dataclass
class _Layout:
    turn_ids: np.ndarray                              # (n,) ascending
    skeys: list[str]                                  # session keys, sorted
    t_sess: np.ndarray                                # (n,) session row of each turn
    speakers: np.ndarray                              # (n,) speaker of each turn
    times: np.ndarray                                 # (n,) POSIX seconds, NaN = unknown
    maps: dict[str, tuple[np.ndarray, np.ndarray]]    # channel → (unit rows, target rows)
    dst_of: dict[str, np.ndarray]                     # channel → target row per unit row


class GranularIndex:
    """Multi-granularity in-memory index (see module docstring for the scoring).

    Parameters: ``config`` (router knobs), ``associate`` (build GMM association links on
    ``add``), ``cluster`` (maintain GMM clusterings of turn vectors; needed for
    ``probe_mass`` search; the first fit waits for ``cluster_min_units`` turns, refits
    follow :func:`~memos.granularity.gmm.needs_refit`, new turns in between are assigned to
    their most probable cluster), ``blas_threads`` (BLAS thread cap during add/search;
    None leaves the process setting alone).
    """

    def __init__(self, *, config: RouterConfig | None = None, associate: bool = True,
                 cluster: bool = False, analyzer: Analyzer | None = None,
                 blas_threads: int | None = 1, cluster_min_units: int = 50) -> None:
        self.config = config or RouterConfig()
        self.cluster_min_units = cluster_min_units
        self.blas_threads = blas_threads
        self.analyzer = analyzer or Analyzer()
        self.associate_on_add = associate
        self.cluster_on_add = cluster
        self._units: dict[int, IndexUnit] = {}
        self._channels: dict[str, _Channel] = {}
        self._sessions: dict[str, list[int]] = {}         # session_key → turn ids in order
        self._session_units: dict[str, dict[str, set[int]]] = {}
        self._links: dict[int, dict[int, float]] = {}     # undirected association weights
        self._speakers: dict[str, str] = {}               # lower-case first name → speaker
        # codes of the turn channel's "session" and "speaker" columns (append-only)
        self._skey_codes: dict[str, int] = {}
        self._skey_names: list[str] = []
        self._speaker_codes: dict[str, int] = {}
        self._speaker_names: list[str] = []
        # per turn: association neighbours, strongest first (see _neighbours)
        self._strongest: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._graph: tuple[np.ndarray, sp.csr_matrix] | None = None
        self._layout: _Layout | None = None
        self.clusters: dict[str, gmm.ClusterModel] = {}
        self.timings: dict[str, float] = {"associate_ms": 0.0, "cluster_ms": 0.0,
                                          "lexical_ms": 0.0}

    # ------------------------------------------------------------------ mutation
    def add(self, units: Sequence[IndexUnit], *,
            neighbours: Neighbours | None = None) -> list[gmm.Link]:
        """Index units (an existing id is replaced). Returns the new association links
        (``src`` = the new unit), which the cube persists as ``associated`` links. With
        ``neighbours`` (an ANN index), a channel past ``exhaustive_max_turns`` units
        associates each new unit among the units it names only (see :meth:`_associate`)."""
        with _blas_threads(self.blas_threads):
            return self._add(list(units), neighbours)

    def _add(self, units: list[IndexUnit], neighbours: Neighbours | None) -> list[gmm.Link]:
        seen: set[int] = set()
        for u in units:
            if not isinstance(u.id, (int, np.integer)):
                raise ValueError(f"unit id must be an int, got {u.id!r}")
            if u.id in seen:
                raise ValueError(f"duplicate id {u.id} in one add() call")
            seen.add(int(u.id))
            if not u.granularity or not isinstance(u.text, str):
                raise ValueError(f"unit {u.id}: granularity and text are required")
            v = np.asarray(u.vector)
            if v.ndim != 1 or not np.all(np.isfinite(v)):
                raise ValueError(f"unit {u.id}: vector must be 1-d and finite")
        replaced = [u.id for u in units if u.id in self._units]
        if replaced:
            self.remove(replaced)
        links: list[gmm.Link] = []
        by_gran: dict[str, list[IndexUnit]] = {}
        for u in units:
            by_gran.setdefault(u.granularity, []).append(u)
        touched: set[str] = set()
        for gran, group in by_gran.items():
            ch = self._channel(gran)
            if self.associate_on_add:
                links.extend(self._associate(ch, group, neighbours))
            t = time.perf_counter()
            ch.put([u.id for u in group], [u.text for u in group], [u.vector for u in group],
                   **(self._turn_columns(group) if gran == "turn" else {}))
            self.timings["lexical_ms"] += (time.perf_counter() - t) * 1e3
            for u in group:
                # one copy of a vector, in its channel's Rows: the unit kept carries none
                self._units[int(u.id)] = dataclasses.replace(u, vector=_IN_ROWS)
                if gran == "turn":
                    self._insert_turn(u)
                    touched.add(u.session_key)
                    if u.speaker and u.speaker.split():  # a blank speaker names no one
                        self._speakers[u.speaker.split()[0].lower()] = u.speaker
                elif gran in SESSION_LEVEL:
                    self._session_units.setdefault(u.session_key, {}).setdefault(
                        gran, set()).add(int(u.id))
        self._refresh_context(touched)
        for link in links:
            self._link(link)
        self._graph = None
        self._layout = None
        if self.cluster_on_add and "turn" in by_gran:
            self._update_clusters("turn")
        return links

    def remove(self, ids: Iterable[int]) -> int:
        """Forget units (and their links). Unknown ids are ignored; returns how many went."""
        gone = [self._units.pop(int(i)) for i in ids if int(i) in self._units]
        touched: set[str] = set()
        for u in gone:
            self._channels[u.granularity].drop([u.id])
            if u.granularity == "turn":
                self._sessions[u.session_key].remove(u.id)
                touched.add(u.session_key)
                if "turn" in self.clusters:
                    self.clusters["turn"].labels.pop(u.id, None)
            elif u.granularity in SESSION_LEVEL:
                self._session_units[u.session_key][u.granularity].discard(u.id)
            self._strongest.pop(u.id, None)
            for other in self._links.pop(u.id, {}):
                neighbours = self._links.get(other, {})
                neighbours.pop(u.id, None)
                if not neighbours:  # a unit left with no links has no entry (explain reads it)
                    self._links.pop(other, None)
                self._strongest.pop(other, None)
        if "context" in self._channels:
            self._channels["context"].drop([u.id for u in gone if u.granularity == "turn"])
        self._refresh_context(touched)
        if gone:
            self._graph = None
            self._layout = None
        return len(gone)

    def add_links(self, links: Iterable[gmm.Link]) -> None:
        """Restore association links persisted earlier (rebuilding the cache from SQL)."""
        for link in links:
            if link.src in self._units and link.dst in self._units:
                self._link(link)
        self._graph = None

    def _link(self, link: gmm.Link) -> None:
        self._links.setdefault(link.src, {})[link.dst] = link.weight
        self._links.setdefault(link.dst, {})[link.src] = link.weight
        self._strongest.pop(link.src, None)
        self._strongest.pop(link.dst, None)

    def _neighbours(self, unit_id: int) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, weights)`` of a unit's association links, strongest first (ties in link
        order), cached until one of its links changes."""
        got = self._strongest.get(unit_id)
        if got is None:
            nb = self._links.get(unit_id, {})
            ids = np.fromiter(nb.keys(), dtype=np.int64, count=len(nb))
            w = np.fromiter(nb.values(), dtype=np.float64, count=len(nb))
            o = np.argsort(-w, kind="stable")
            got = self._strongest[unit_id] = (ids[o], w[o])
        return got

    def __len__(self) -> int:
        return len(self._units)

    def unit(self, unit_id: int) -> IndexUnit | None:
        """The indexed unit ``unit_id`` (its vector lives in the channel), or None."""
        return self._units.get(int(unit_id))

    def turn_count(self) -> int:
        """Units in the turn channel (turns, and memories ranked as turns of their own)."""
        ch = self._channels.get("turn")
        return 0 if ch is None else len(ch.vectors)

    def __contains__(self, unit_id: object) -> bool:
        return isinstance(unit_id, (int, np.integer)) and int(unit_id) in self._units

    def links(self) -> list[gmm.Link]:
        """All current association links, each once (``src`` > ``dst``)."""
        return [gmm.Link(a, b, w) for a, nb in self._links.items() for b, w in nb.items()
                if a > b]

    def cluster_units(self, granularity: str = "turn") -> list[gmm.Cluster]:
        """Current clusters of a granularity (fit on demand): persist as ``cluster`` units
        with ``member_of`` links from each member."""
        if granularity not in self.clusters:
            self._update_clusters(granularity, force=True)
        model = self.clusters[granularity]
        return model.clusters(self._channels[granularity].vectors)

    # ------------------------------------------------------------------ search
    def search(self, query_text: str, query_vec: np.ndarray, *, top_k: int = 10,
               granularities: Sequence[str] | None = None, explain: bool = False,
               probe_mass: float | None = None, top_sessions: int | None = None,
               candidates: bool | None = None, dense_ids: Sequence[int] | None = None
               ) -> SearchResult:
        """Rank turns and sessions for a query (higher score = more relevant).

        ``granularities`` restricts the channels used (default: all present).
        ``probe_mass`` (e.g. 0.9) scores only the turns of the clusters holding that much
        of the query's posterior (needs ``cluster=True`` and exhaustive scoring); ``None`` =
        full search. ``candidates``: score only a bounded candidate pool (see
        :meth:`candidate_turns`) instead of every unit; ``None`` (default) does so when the
        index holds more than ``config.exhaustive_max_turns`` turns. ``dense_ids`` are the
        nearest units to the query by an ANN index (any granularity, best first; ids this
        index does not hold are ignored); without them the pool's dense part is an exact
        top-k scan of each channel.
        """
        with _blas_threads(self.blas_threads):
            return self._search(query_text, query_vec, top_k=top_k, granularities=granularities,
                                explain=explain, probe_mass=probe_mass,
                                top_sessions=top_sessions, candidates=candidates,
                                dense_ids=dense_ids)

    def uses_candidates(self) -> bool:
        """Whether a default search scores a candidate pool (the index is past
        ``config.exhaustive_max_turns`` turns) rather than every unit."""
        ch = self._channels.get("turn")
        return ch is not None and len(ch.vectors) > self.config.exhaustive_max_turns

    def _search(self, query_text: str, query_vec: np.ndarray, *, top_k: int,
                granularities: Sequence[str] | None, explain: bool, probe_mass: float | None,
                top_sessions: int | None, candidates: bool | None,
                dense_ids: Sequence[int] | None) -> SearchResult:
        start = time.perf_counter()
        if not query_text.strip():
            raise ValueError("query_text must not be empty")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        qvec = np.asarray(query_vec, dtype=np.float32).ravel()
        qtok = self.analyzer.tokens(query_text)
        if "turn" not in self._channels or not self._channels["turn"].vectors:
            return SearchResult([], [], {}, {}, (time.perf_counter() - start) * 1e3)
        use = self.uses_candidates() if candidates is None else candidates
        if use and probe_mass is not None:
            if candidates:
                raise ValueError("probe_mass needs exhaustive scoring (candidates=False)")
            use = False
        wanted = set(granularities) if granularities is not None else None
        view = (self._candidate_view(qtok, qvec, wanted, dense_ids) if use
                else self._full_view(qtok, qvec, wanted))
        allowed = None
        if probe_mass is not None:
            allowed = np.isin(view.turn_ids, self._probe(qvec, probe_mass))
        return self._rank(view, query_text, top_k=top_k, explain=explain, allowed=allowed,
                          top_sessions=top_sessions, start=start)

    def _full_view(self, qtok: list[str], qvec: np.ndarray, wanted: set[str] | None) -> _View:
        """Every unit of every channel: the reference scoring."""
        cfg = self.config
        lay = self._layout_now()
        t_dense = session_dense = None
        if cfg.session_dense == "best_turn" and "session" in self._channels:
            # a session's dense evidence is its best turn's cosine
            t_dense = self._channels["turn"].matrix()[1] @ qvec
            src, dst = lay.maps["turn"]
            per_sess = np.full(len(lay.skeys), -1.0)
            np.maximum.at(per_sess, lay.t_sess[dst], t_dense[src])
            src, dst = lay.maps["session"]
            session_dense = np.full(len(self._channels["session"].matrix()[0]), -1.0)
            session_dense[src] = per_sess[dst]
        chans: dict[str, _ChannelView] = {}
        for gran, ch in self._channels.items():
            if not _wanted(gran, wanted):
                continue
            ids, mat = ch.matrix()
            if not len(ids):
                continue
            given = {"turn": t_dense, "session": session_dense}.get(gran)
            lex_ids, lex = ch.lexical(qtok)
            if not np.array_equal(lex_ids, ids):  # both sorted ascending over one id set
                raise RuntimeError("lexical and dense views out of sync")
            src, dst = lay.maps[gran]
            chans[gran] = _ChannelView(mat @ qvec if given is None else given, lex, src, dst)
        lay_ = lay
        return _View(lay.turn_ids, lay.t_sess, lay.skeys, lay.speakers, lay.times, chans,
                     lambda: self._graph_matrix(lay_.turn_ids, lay_.t_sess, len(lay_.skeys)))

    def candidate_turns(self, qtok: list[str], qvec: np.ndarray, *,
                        wanted: set[str] | None = None,
                        dense_ids: Sequence[int] | None = None,
                        matches: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
                        ) -> tuple[set[int], dict[str, set[int]]]:
        """The candidate pool of a query: ``(turn ids, other units per channel)``.

        Per channel, the ``dense_pool`` nearest units (from ``dense_ids``, else an exact
        scan) and the ``lexical_pool`` best by BM25; facts bring the turns they cite; the
        ``session_pool`` best sessions of each session-level channel (dense and BM25) bring
        all their turns; every candidate turn brings its ``graph_pool`` strongest
        association neighbours. The pool is bounded by these sizes, not by the index.
        ``matches`` (filled here) keeps each channel's BM25 matches for the caller.
        """
        matches = {} if matches is None else matches
        cfg = self.config
        units = self._units
        dense_by: dict[str, list[int]] = {}
        if dense_ids is not None:
            for i in dense_ids:
                u = units.get(int(i))
                if u is not None and len(dense_by.get(u.granularity, ())) < cfg.dense_pool:
                    dense_by.setdefault(u.granularity, []).append(int(i))
        turns: set[int] = set()
        others: dict[str, set[int]] = {}
        sessions: set[str] = set()
        turn_ch = self._channels["turn"]
        for gran, ch in self._channels.items():
            if not _wanted(gran, wanted) or not ch.vectors:
                continue
            session_level = gran in SESSION_LEVEL
            kd = cfg.session_pool if session_level else cfg.dense_pool
            kl = cfg.session_pool if session_level else cfg.lexical_pool
            found: set[int] = set()
            lex_ids, lex = matches[gran] = ch.matches(qtok)
            found.update(int(i) for i in _top_ids(lex_ids, lex, kl, positive=True))
            if gran == "context":
                pass  # a context document's vector is its turn's neighbourhood mean
            elif dense_ids is not None:
                found.update(dense_by.get(gran, [])[:kd])
            elif not (session_level and gran == "session" and cfg.session_dense == "best_turn"):
                ids, mat = ch.matrix()
                found.update(int(i) for i in _top_ids(ids, mat @ qvec, kd))
            if gran in ("turn", "context"):
                turns.update(found)
            elif session_level:
                sessions.update(units[i].session_key for i in found)
            else:
                others[gran] = found
                turns.update(s for i in found for s in units[i].sources if s in turn_ch.vectors)
        if cfg.graph_pool and turns:
            k = cfg.graph_pool
            best = set(np.concatenate([ids[:k] for ids, _ in map(self._neighbours, turns)])
                       .tolist())
            turns.update(b for b in best - turns if b in turn_ch.vectors)
        for key in sessions:
            turns.update(self._sessions.get(key, ()))
        return turns, others

    def _candidate_view(self, qtok: list[str], qvec: np.ndarray, wanted: set[str] | None,
                        dense_ids: Sequence[int] | None) -> _View:
        """The candidate pool's units only; channel statistics (z-scores, entropies) are
        taken over the pool. Per-unit data is gathered from the channels' arrays (one
        Python step per pool turn: the id → row lookup)."""
        cfg = self.config
        units = self._units
        matches: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        turns, others = self.candidate_turns(qtok, qvec, wanted=wanted, dense_ids=dense_ids,
                                             matches=matches)
        turn_ids = np.array(sorted(turns), dtype=np.int64)
        turn_rows = self._channels["turn"].vectors
        at = turn_rows.rows(turn_ids)
        skeys, t_sess = self._pool_sessions(turn_rows.column_at("session", at))
        srow = {k: i for i, k in enumerate(skeys)}
        t_dense = turn_rows.vectors_at(at) @ qvec
        chans: dict[str, _ChannelView] = {}
        for gran, ch in self._channels.items():
            if not _wanted(gran, wanted) or not ch.vectors:
                continue
            if gran in ("turn", "context"):
                ids = turn_ids
                src = dst = np.arange(len(ids), dtype=np.int64)
                dense = t_dense if gran == "turn" else ch.vectors.gather(ids) @ qvec
            elif gran in SESSION_LEVEL:
                ids = np.array(sorted(i for k in skeys for i in
                                      self._session_units.get(k, {}).get(gran, ())),
                               dtype=np.int64)
                if not len(ids):
                    continue
                src = np.arange(len(ids), dtype=np.int64)
                dst = np.array([srow[units[int(i)].session_key] for i in ids], dtype=np.int64)
                if gran == "session" and cfg.session_dense == "best_turn":
                    per_sess = np.full(len(skeys), -1.0)
                    np.maximum.at(per_sess, t_sess, t_dense)
                    dense = per_sess[dst]
                else:
                    dense = ch.vectors.gather(ids) @ qvec
            else:
                ids = np.array(sorted(others.get(gran, ())), dtype=np.int64)
                pairs = [(j, s) for j, i in enumerate(ids.tolist()) for s in units[i].sources]
                src, dst = _members(pairs, turn_ids)
                if not len(src):
                    continue
                dense = ch.vectors.gather(ids) @ qvec
            lex_ids, lex = matches[gran] if gran in matches else ch.matches(qtok)
            chans[gran] = _ChannelView(dense, _lookup(lex_ids, lex, ids), src, dst)
        speakers = np.array(self._speaker_names, dtype=object)[
            turn_rows.column_at("speaker", at)]
        times = turn_rows.column_at("time", at)
        return _View(turn_ids, t_sess, skeys, speakers, times, chans,
                     lambda: self._subgraph(turn_ids, t_sess, len(skeys)))

    def _pool_sessions(self, codes: np.ndarray) -> tuple[list[str], np.ndarray]:
        """``(session keys sorted, session row of each turn)`` for turns' session codes."""
        uniq, inverse = np.unique(codes, return_inverse=True)
        names = [self._skey_names[int(c)] for c in uniq]
        order = sorted(range(len(names)), key=names.__getitem__)
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        return [names[i] for i in order], rank[inverse.ravel()]

    def _rank(self, view: _View, query_text: str, *, top_k: int, explain: bool,
              allowed: np.ndarray | None, top_sessions: int | None,
              start: float) -> SearchResult:
        """Router, priors, spreading and session ranking over a view's units."""
        cfg = self.config
        turn_ids, t_sess, skeys = view.turn_ids, view.t_sess, view.skeys
        n = len(turn_ids)
        per_turn: dict[str, np.ndarray] = {}
        shares: dict[str, np.ndarray] = {}
        entropies: dict[str, float] = {}
        for gran, cv in view.channels.items():
            lw = cfg.context_lexical_weight if gran == "context" else cfg.lexical_weight
            fused, share = fuse(cv.dense, cv.lex, lexical_weight=lw)
            if not len(fused):
                continue
            entropies[gran] = normalized_entropy(fused, temperature=cfg.entropy_temperature)
            src, dst = cv.src, cv.dst
            size = len(skeys) if gran in SESSION_LEVEL else n
            best = np.full(size, fused.min())
            np.maximum.at(best, dst, fused[src])
            bshare = np.zeros(size)
            o = np.argsort(fused[src], kind="stable")  # ascending: the best writes last
            bshare[dst[o]] = share[src[o]]
            if gran in SESSION_LEVEL:
                per_turn[gran], shares[gran] = best[t_sess], bshare[t_sess]
            else:
                per_turn[gran], shares[gran] = best, bshare
        if not per_turn:
            return SearchResult([], [], {}, {}, (time.perf_counter() - start) * 1e3)
        priors = {g: cfg.priors.get(g, 0.1) for g in per_turn}
        weights = confidence_weights({g: entropies[g] for g in per_turn}, tau=cfg.tau,
                                     prior=priors)
        score = np.zeros(n)
        for g, vec in per_turn.items():
            score += weights[g] * vec
        speaker = self._mentioned_speaker(query_text)
        if speaker is not None and cfg.speaker_boost:
            score = score + cfg.speaker_boost * (view.speakers == speaker)
        near = None
        if cfg.time_boost and (periods := query_periods(query_text)):
            near = time_closeness(periods, view.times)
            score = score + cfg.time_boost * near
        ppr = sess_ppr = None
        if cfg.ppr_weight > 0 and self._links:
            ppr, sess_ppr, score = self._spread(score, view.graph(), n)
        if allowed is not None:
            score = np.where(allowed, score, -np.inf)

        k = min(top_k, n)
        order = np.argsort(-score, kind="stable")
        order = order[np.isfinite(score[order])]
        # sessions: best turn + the session-level channels' own evidence
        best_turn = np.full(len(skeys), -np.inf)
        np.maximum.at(best_turn, t_sess, score)
        if cfg.session_softmax_temperature > 0:
            # soft maximum: a session with several good turns beats one with a single one
            tt = cfg.session_softmax_temperature
            fin = np.isfinite(score)
            ex = np.zeros(len(skeys))
            np.add.at(ex, t_sess[fin], np.exp((score[fin] - score[fin].max()) / tt))
            sess_score = np.where(ex > 0, tt * np.log(np.maximum(ex, 1e-300))
                                  + score[fin].max(), -np.inf)
        else:
            sess_score = best_turn.copy()
        if sess_ppr is not None and cfg.session_ppr_weight:
            lr = np.log(sess_ppr + 1e-9)
            sess_score = sess_score + cfg.session_ppr_weight * (lr - lr.mean()) / max(
                float(lr.std()), 1e-12)
        for g in SESSION_LEVEL:
            if g in per_turn:
                col = np.full(len(skeys), 0.0)
                col[t_sess] = per_turn[g]
                sess_score += cfg.session_channel_weight * weights[g] * col
        s_order = [i for i in np.argsort(-sess_score, kind="stable") if np.isfinite(sess_score[i])]
        turns = [self._turn_hit(int(i), turn_ids, score, per_turn, shares, weights, speaker,
                                ppr, near, explain) for i in order[:k]]
        sessions = []
        for i in s_order[:top_sessions or k]:
            key = skeys[i]
            sid = min(self._session_units.get(key, {}).get("session", set()), default=None)
            exp = None
            if explain:
                exp = {"best_turn": int(turn_ids[t_sess == i][np.argmax(score[t_sess == i])]),
                       "best_turn_score": float(best_turn[i]),
                       "channels": {g: float(weights[g] * per_turn[g][t_sess == i][0])
                                    for g in SESSION_LEVEL if g in per_turn}}
            sessions.append(Hit(sid, "session", key, float(sess_score[i]), exp))
        return SearchResult(turns, sessions, weights, entropies,
                            (time.perf_counter() - start) * 1e3)

    # ------------------------------------------------------------------ internals
    def _channel(self, name: str) -> _Channel:
        if name not in self._channels:
            self._channels[name] = _Channel(k1=self.config.bm25_k1, b=self.config.bm25_b,
                                            analyzer=self.analyzer,
                                            columns=_TURN_COLUMNS if name == "turn" else None)
        return self._channels[name]

    def _turn_columns(self, group: list[IndexUnit]) -> dict[str, list[Any]]:
        """What a candidate pool reads of each turn besides its vector: its session and
        speaker as codes (into ``_skey_names`` / ``_speaker_names``) and its time."""
        def code(table: dict[str, int], names: list[str], name: str) -> int:
            if name not in table:
                table[name] = len(names)
                names.append(name)
            return table[name]

        return {"session": [code(self._skey_codes, self._skey_names, u.session_key)
                            for u in group],
                "speaker": [code(self._speaker_codes, self._speaker_names, u.speaker or "")
                            for u in group],
                "time": [np.nan if u.timestamp is None else float(u.timestamp)
                         for u in group]}

    def _insert_turn(self, u: IndexUnit) -> None:
        order = self._sessions.setdefault(u.session_key, [])
        if u.position is None:
            order.append(int(u.id))
            return
        pos = [self._units[i].position for i in order]
        at = next((j for j, p in enumerate(pos) if p is not None and p > u.position), len(order))
        order.insert(at, int(u.id))

    def _layout_now(self) -> _Layout:
        """Row bookkeeping shared by all queries until the next add/remove."""
        if self._layout is not None:
            return self._layout
        turn_ids, _ = self._channels["turn"].matrix()
        row = {int(t): r for r, t in enumerate(turn_ids)}
        sess_of = [self._units[int(t)].session_key for t in turn_ids]
        skeys = sorted(set(sess_of))
        srow = {k: i for i, k in enumerate(skeys)}
        maps: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        dst_of: dict[str, np.ndarray] = {}
        for gran, ch in self._channels.items():
            ids, _ = ch.matrix()
            pairs: list[tuple[int, int]] = []
            for j, uid in enumerate(ids.tolist()):
                if gran in SESSION_LEVEL:
                    r = srow.get(self._units[uid].session_key)
                    pairs += [] if r is None else [(j, r)]
                elif uid in row:
                    pairs.append((j, row[uid]))
                else:  # a turn-level unit that is not a turn (e.g. a fact): its source turns
                    pairs += [(j, row[s]) for s in self._units[uid].sources if s in row]
            src = np.array([a for a, _ in pairs], dtype=np.int64)
            dst = np.array([b for _, b in pairs], dtype=np.int64)
            maps[gran] = (src, dst)
            full = np.zeros(len(ids), dtype=np.int64)
            full[src] = dst
            dst_of[gran] = full
        self._layout = _Layout(
            turn_ids=turn_ids, skeys=skeys,
            t_sess=np.array([srow[k] for k in sess_of], dtype=np.int64),
            speakers=np.array([self._units[int(t)].speaker or "" for t in turn_ids],
                              dtype=object),
            times=np.array([np.nan if (ts := self._units[int(t)].timestamp) is None
                            else float(ts) for t in turn_ids], dtype=np.float64),
            maps=maps, dst_of=dst_of)
        return self._layout

    def _refresh_context(self, sessions: set[str]) -> None:
        """Rebuild the ``context`` documents of the touched sessions' turns."""
        if not sessions:
            return
        w = self.config.context_window
        ch = self._channel("context")
        turns = self._channels["turn"].vectors
        ids, texts, vecs = [], [], []
        for key in sessions:
            order = self._sessions.get(key, [])
            for j, tid in enumerate(order):
                window = order[max(0, j - w): j + w + 1]
                ids.append(tid)
                texts.append(" ".join(self._units[i].text for i in window))
                v = turns.gather(window).mean(axis=0)
                vecs.append(v / max(float(np.linalg.norm(v)), 1e-12))
        if ids:
            t = time.perf_counter()
            ch.put(ids, texts, vecs)
            self.timings["lexical_ms"] += (time.perf_counter() - t) * 1e3

    def _associate(self, ch: _Channel, group: list[IndexUnit],
                   neighbours: Neighbours | None = None) -> list[gmm.Link]:
        """GMM association of each new unit with its ``association_top_k`` most similar
        earlier units of the channel: all of them (an exact scan) up to
        ``exhaustive_max_turns`` units or without ``neighbours``, else the ones an ANN index
        names (``neighbours(vector, k)``), so a write costs O(its units), not O(index)."""
        t = time.perf_counter()
        k = self.config.association_top_k
        new = np.stack([np.asarray(u.vector, dtype=np.float32) for u in group])
        # per new unit: (candidate ids, their similarities), best first, earlier units only
        tops: list[tuple[np.ndarray, np.ndarray]] = []
        if neighbours is None or len(ch.vectors) <= self.config.exhaustive_max_turns:
            old_ids, old = ch.matrix()
            new_ids = np.array([u.id for u in group], dtype=np.int64)
            cand_ids = np.concatenate([old_ids, new_ids])
            cand = np.concatenate([old, new]) if len(old_ids) else new
            sims = new @ cand.T                                           # (m, n_old + m)
            for j in range(len(group)):
                n_valid = len(old_ids) + j  # earlier units only: the batch is arrival order
                s = sims[j, :n_valid]
                kk = min(k, n_valid)
                top = np.argpartition(-s, kk - 1)[:kk] if kk else np.zeros(0, dtype=np.int64)
                top = top[np.argsort(-s[top], kind="stable")]
                tops.append((cand_ids[top], s[top]))
        else:
            batch = {int(u.id): j for j, u in enumerate(group)}
            for j in range(len(group)):
                ids = list(dict.fromkeys(
                    [int(i) for i in neighbours(new[j], 4 * k + len(group))
                     if int(i) in ch.vectors and int(i) not in batch]
                    + [int(g.id) for g in group[:j]]))
                if not ids:
                    tops.append((np.zeros(0, dtype=np.int64), np.zeros(0)))
                    continue
                vecs = np.stack([ch.vectors[i] if i in ch.vectors else new[batch[i]]
                                 for i in ids])
                s = vecs @ new[j]
                top = np.argsort(-s, kind="stable")[:k]
                tops.append((np.asarray(ids, dtype=np.int64)[top], s[top]))
        # rows with a full candidate list are decided in one vectorised GMM fit
        full = [j for j, (ids, _) in enumerate(tops) if len(ids) == k]
        masks: dict[int, np.ndarray] = {}
        if full:
            masks.update(zip(full, gmm.gmm_accept(np.stack([tops[j][1] for j in full])),
                             strict=True))
        for j, (_, sims_j) in enumerate(tops):
            if j not in masks:
                masks[j] = gmm.gmm_accept(sims_j)
        links = [gmm.Link(int(u.id), int(i), float(np.clip(w, 0, 1)))
                 for j, u in enumerate(group)
                 for i, w in zip(tops[j][0][masks[j]], tops[j][1][masks[j]], strict=True)]
        self.timings["associate_ms"] += (time.perf_counter() - t) * 1e3
        return links

    def _update_clusters(self, granularity: str, *, force: bool = False) -> None:
        t = time.perf_counter()
        ch = self._channels.get(granularity)
        n = 0 if ch is None else len(ch.vectors)
        if ch is None or n < (4 if force else self.cluster_min_units):
            if force:
                raise ValueError(f"not enough {granularity!r} units to cluster")
            return
        ids, mat = ch.matrix()
        model = self.clusters.get(granularity)
        if force or model is None or gmm.needs_refit(len(ids), model.n_at_fit):
            self.clusters[granularity] = gmm.fit_clusters(
                ids, mat, granularity=granularity,
                near=None if model is None else model.n_components)
        else:
            new = np.array([i for i in ids if int(i) not in model.labels], dtype=np.int64)
            if len(new):
                gmm.assign_clusters(model, new, np.stack([ch.vectors[int(i)] for i in new]))
        self.timings["cluster_ms"] += (time.perf_counter() - t) * 1e3

    def _probe(self, qvec: np.ndarray, mass: float) -> np.ndarray:
        model = self.clusters.get("turn")
        if model is None:
            raise ValueError("probe_mass needs clusters: build the index with cluster=True")
        labels = set(gmm.route_clusters(model, qvec, mass=mass))
        return np.array([i for i, lab in model.labels.items() if lab in labels], dtype=np.int64)

    def _mentioned_speaker(self, query: str) -> str | None:
        words = set(re.findall(r"\w+", query.lower()))
        hits = {spk for first, spk in self._speakers.items() if first in words}
        return hits.pop() if len(hits) == 1 else None

    def _graph_matrix(self, turn_ids: np.ndarray, t_sess: np.ndarray,
                      n_sess: int) -> sp.csr_matrix:
        """``Pᵀ`` of turn↔turn association edges plus turn↔session membership edges."""
        if self._graph is not None and np.array_equal(self._graph[0], turn_ids):
            return self._graph[1]
        n = len(turn_ids)
        row = {int(t): r for r, t in enumerate(turn_ids)}
        rows, cols, vals = [], [], []
        for a, nb in self._links.items():
            ra = row.get(a)
            if ra is None:
                continue
            for b, w in nb.items():
                rb = row.get(b)
                if rb is not None:
                    rows.append(ra)
                    cols.append(rb)
                    vals.append(w)
        r_idx = np.arange(n)
        rows += list(r_idx) + list(n + t_sess)
        cols += list(n + t_sess) + list(r_idx)
        vals += [0.5] * (2 * n)
        adj = sp.csr_matrix((vals, (rows, cols)), shape=(n + n_sess, n + n_sess))
        pt = transition_matrix(adj)
        self._graph = (turn_ids.copy(), pt)
        return pt

    def _subgraph(self, turn_ids: np.ndarray, t_sess: np.ndarray,
                  n_sess: int) -> sp.csr_matrix:
        """``Pᵀ`` of :meth:`_graph_matrix` restricted to a candidate pool's turns (ascending
        ids) and sessions."""
        n = len(turn_ids)
        ids_of, w_of = zip(*map(self._neighbours, turn_ids.tolist())) if n else ((), ())
        counts = np.fromiter(map(len, ids_of), dtype=np.int64, count=n)
        if counts.sum():
            b = np.concatenate(ids_of)
            w = np.concatenate(w_of)
            at = np.minimum(np.searchsorted(turn_ids, b), n - 1)
            hit = turn_ids[at] == b
            rows, cols, vals = np.repeat(np.arange(n), counts)[hit], at[hit], w[hit]
        else:
            rows = cols = np.zeros(0, dtype=np.int64)
            vals = np.zeros(0)
        r_idx = np.arange(n)
        adj = sp.csr_matrix((np.concatenate([vals, np.full(2 * n, 0.5)]),
                             (np.concatenate([rows, r_idx, n + t_sess]).astype(np.int64),
                              np.concatenate([cols, n + t_sess, r_idx]).astype(np.int64))),
                            shape=(n + n_sess, n + n_sess))
        return transition_matrix(adj)

    def _spread(self, score: np.ndarray, pt: sp.csr_matrix,
                n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(turn PPR mass, session PPR mass, spread turn scores)`` over transition ``pt``
        (its first ``n`` nodes are the scored turns)."""
        cfg = self.config
        k = min(cfg.ppr_seeds, n)
        top = np.argpartition(-score, k - 1)[:k]
        seed = np.zeros(pt.shape[0])
        z = score[top] - score[top].max()
        seed[top] = np.exp(z)
        full = personalized_pagerank(None, seed, damping=cfg.ppr_damping, tol=1e-6,
                                     transition=pt)
        r = full[:n]
        lr = np.log(r + 1e-9)
        ppr = (lr - lr.mean()) / max(float(lr.std()), 1e-12)
        return r, full[n:], score + cfg.ppr_weight * ppr

    def _turn_hit(self, i: int, turn_ids: np.ndarray, score: np.ndarray,
                  per_turn: dict[str, np.ndarray], shares: dict[str, np.ndarray],
                  weights: dict[str, float], speaker: str | None, ppr: np.ndarray | None,
                  near: np.ndarray | None, explain: bool) -> Hit:
        tid = int(turn_ids[i])
        u = self._units[tid]
        exp = None
        if explain:
            contrib = {g: float(weights[g] * v[i]) for g, v in per_turn.items()}
            mag = sum(abs(c) for c in contrib.values()) or 1.0
            lex = sum(abs(contrib[g]) * float(shares[g][i]) for g in contrib) / mag
            path: list[int] = []
            if ppr is not None and (links := self._links.get(tid)):
                path = [max(links, key=lambda b: links[b]), tid]
            exp = {"channels": contrib, "lexical_share": lex, "dense_share": 1 - lex,
                   "speaker_match": bool(speaker is not None and u.speaker == speaker),
                   "time_closeness": None if near is None else float(near[i]),
                   "ppr": None if ppr is None else float(ppr[i]),
                   "association_path": path}
        return Hit(tid, "turn", u.session_key, float(score[i]), exp)
