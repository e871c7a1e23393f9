"""LoCoMo retrieval evaluation: evidence recall of flat, BM25, hybrid and routed search.

Each conversation is a separate memory: its turns are ingested, then its questions asked.
Categories 1–4 are scored (1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop); category 5
(adversarial, unanswerable) is excluded. Metrics: turn-level evidence recall@{1,3,5,10,20}
(share of a question's evidence ``dia_id``\\ s in the top k, averaged over questions),
session-level recall@{1,3,5} (share of evidence sessions among the top k sessions),
NDCG@10 over turns (binary relevance), query latency p50/p95 (the query embedding
included for methods that use it) and ingest time.

Methods, all over the same embeddings (all-MiniLM-L6-v2, :class:`memos.embed.OnnxMiniLM`):

* ``flat``: cosine over turn vectors. ``bm25``: stemmed BM25 over turn texts.
* ``hybrid``: ``(1-a)·z(dense) + a·z(bm25)``; ``a`` is chosen from ``HYBRID_GRID`` by
  leave-one-conversation-out (for each conversation, the ``a`` with the best mean turn
  recall@5 on the *other* conversations), so no conversation is scored with a weight tuned
  on itself. With one conversation ``a = 0.5``.
* ``hybrid_pool``: what ``auto`` search serves when the router cannot (hybrid mode,
  :func:`memos.retrieval.hybrid.hybrid_rank`): the ``HYBRID_POOL`` nearest turns by cosine,
  re-ranked by cosine plus BM25 within that pool. Its weight is the shipped constant.
* ``router``: :class:`memos.retrieval.granular_index.GranularIndex` over turn, session, summary
  and keyword units with GMM association, entropy routing and PPR. Each turn carries its
  session's ``date_time`` as its timestamp, as a chat log stamps messages (the server path
  sends the same as the message timestamp), so a question naming a date can be matched.
* ``router_probe`` (optional): the router probing only the turn clusters holding 90% of the
  query's posterior, to measure the recall lost by posterior routing.
* ``router_candidates``: the router scoring only its bounded candidate pool (ANN + BM25 per
  granularity, their sessions and association neighbours; what a cube above
  ``RouterConfig.exhaustive_max_turns`` turns does), beside ``router``'s exhaustive scoring.

Sessions for turn-only methods are ranked by their best turn. Turn text is
``"<speaker>: <text>"``; a shared image adds ``[shares a photo of <blip_caption>]`` (the
automatic caption is what a reader of the chat sees; the ``query`` and ``img_url`` fields
are not used). The annotators' ``observation``, ``session_summary`` and ``event_summary``
are never read: :func:`load_locomo` touches only ``sample_id``, ``conversation`` and ``qa``.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

__all__ = [
    "Turn",
    "Session",
    "Question",
    "Conversation",
    "Retrieval",
    "Retriever",
    "QueryEmbeddings",
    "CubeClient",
    "shipped_retriever_factory",
    "load_locomo",
    "parse_evidence",
    "run_locomo",
    "HYBRID_GRID",
    "RouterRetriever",
    "ServerRetriever",
    "server_retriever_factory",
]

HYBRID_GRID = (0.2, 0.35, 0.5, 0.65, 0.8)
TURN_KS = (1, 3, 5, 10, 20)
SESSION_KS = (1, 3, 5)
CATEGORIES = (1, 2, 3, 4)
EXCLUDED_NOTE = "category 5 (adversarial, unanswerable) excluded; categories 1-4 scored"


@dataclass(frozen=True)
class Turn:
    dia_id: str
    session: int
    position: int
    speaker: str
    text: str          # "<speaker>: <text>[ shares a photo of …]"


@dataclass(frozen=True)
class Session:
    index: int
    date_time: str | None
    turns: tuple[Turn, ...]


@dataclass(frozen=True)
class Question:
    question: str
    category: int
    evidence: tuple[str, ...]          # repaired dia_ids present in the conversation


@dataclass(frozen=True)
class Conversation:
    sample_id: str
    sessions: tuple[Session, ...]
    questions: tuple[Question, ...]
    dropped_evidence: int              # evidence strings that named no turn

    @property
    def turns(self) -> list[Turn]:
        return [t for s in self.sessions for t in s.turns]


@dataclass(frozen=True)
class Retrieval:
    """Ranked dia_ids (best first) and ranked session indices (best first)."""

    turns: list[str]
    sessions: list[int]
    latency_ms: float                  # wall clock, end to end, the query embedding included
    embed_ms: float = 0.0              # of which: the query embedding (wall clock)
    cpu_ms: float = 0.0                # CPU time of the search itself (embedding excluded)


class Retriever(Protocol):
    """What the eval needs from a memory system: ingest one conversation, then search."""

    def ingest(self, conversation: Conversation) -> None: ...

    def search(self, question: str, *, top_k: int) -> Retrieval: ...


# ---------------------------------------------------------------------------- loading
_DIA = re.compile(r"D:?(\d+):(\d+)")


def parse_evidence(items: Sequence[Any]) -> list[str]:
    """Repair LoCoMo evidence strings into ``D<s>:<t>`` ids, in order, deduplicated.

    ``"D8:6; D9:17"`` → two ids; ``"D:11:26"`` → ``"D11:26"``; ``"D"`` or non-strings → none.

    >>> parse_evidence(["D8:6; D9:17", "D:11:26", "D", "D8:6"])
    ['D8:6', 'D9:17', 'D11:26']
    """
    out: list[str] = []
    for item in items or ():
        if not isinstance(item, str):
            continue
        for s, t in _DIA.findall(item):
            dia = f"D{int(s)}:{int(t)}"
            if dia not in out:
                out.append(dia)
    return out


def _turn_text(turn: dict[str, Any]) -> str:
    text = f"{turn['speaker']}: {turn['text']}"
    caption = turn.get("blip_caption")
    if isinstance(caption, str) and caption.strip():
        text += f" [shares a photo of {caption.strip().removeprefix('a photo of ')}]"
    return text


def _read_conversation(record: dict[str, Any]) -> Conversation:
    # Only these three keys are read: observation / session_summary / event_summary would
    # leak the answers.
    sample_id = str(record["sample_id"])
    conv = record["conversation"]
    qa = record["qa"]
    numbers = sorted(int(m.group(1)) for k in conv
                     if (m := re.fullmatch(r"session_(\d+)", k)) and isinstance(conv[k], list))
    sessions = []
    for n in numbers:
        turns = tuple(Turn(str(t["dia_id"]), n, j, str(t["speaker"]), _turn_text(t))
                      for j, t in enumerate(conv[f"session_{n}"]))
        date = conv.get(f"session_{n}_date_time")
        sessions.append(Session(n, date if isinstance(date, str) else None, turns))
    known = {t.dia_id for s in sessions for t in s.turns}
    questions, dropped = [], 0
    for q in qa:
        raw = q.get("evidence") or []
        ev = parse_evidence(raw)
        dropped += sum(1 for e in raw if not parse_evidence([e]))
        kept = tuple(e for e in ev if e in known)
        dropped += len(ev) - len(kept)
        questions.append(Question(str(q["question"]), int(q["category"]), kept))
    return Conversation(sample_id, tuple(sessions), tuple(questions), dropped)


def load_locomo(path: str | Path, *, conversations: Sequence[str] | None = None
                ) -> list[Conversation]:
    """Read a LoCoMo JSON file (a list of conversation records).

    ``conversations`` keeps only those ``sample_id``\\ s (ValueError if one is unknown).
    """
    with open(path, encoding="utf-8") as fh:
        records = json.load(fh)
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of conversations")
    convs = [_read_conversation(r) for r in records]
    if conversations is not None:
        by_id = {c.sample_id: c for c in convs}
        unknown = [c for c in conversations if c not in by_id]
        if unknown:
            raise ValueError(f"unknown conversation ids {unknown}; have {sorted(by_id)}")
        convs = [by_id[c] for c in conversations]
    return convs


# ---------------------------------------------------------------------------- methods
class QueryEmbeddings:
    """Embeds each question once; every dense method is charged the measured time."""

    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder
        self._cache: dict[str, tuple[np.ndarray, float]] = {}

    def get(self, text: str) -> tuple[np.ndarray, float]:
        if text not in self._cache:
            t = time.perf_counter()
            v = self.embedder.embed([text])[0]
            self._cache[text] = (v, (time.perf_counter() - t) * 1e3)
        return self._cache[text]


def _rank_sessions(turn_sessions: np.ndarray, order: np.ndarray) -> list[int]:
    seen: dict[int, None] = {}
    for i in order:
        seen.setdefault(int(turn_sessions[i]), None)
    return list(seen)


class _TurnScorer:
    """flat / bm25 / hybrid over one conversation's turns (shares the turn vectors)."""

    def __init__(self, mode: str, vectors: np.ndarray, queries: QueryEmbeddings, *,
                 alpha: float = 0.5) -> None:
        self.mode, self.vectors, self.queries, self.alpha = mode, vectors, queries, alpha

    def ingest(self, conversation: Conversation) -> None:
        from memos.lexical import BM25Index

        self.turns = conversation.turns
        self.sessions = np.array([t.session for t in self.turns])
        self.bm25 = BM25Index()
        self.bm25.add(list(range(len(self.turns))), [t.text for t in self.turns])
        self.bm25.scores("warm up")  # build now, not inside the first timed query

    def search(self, question: str, *, top_k: int) -> Retrieval:
        from memos.retrieval.router import standardize

        qv, emb_ms = (None, 0.0) if self.mode == "bm25" else self.queries.get(question)
        t, c = time.perf_counter(), time.process_time()
        if qv is None:
            score = self.bm25.scores(question)[1]
        else:
            dense = self.vectors @ qv
            if self.mode == "flat":
                score = dense
            elif self.mode == "hybrid_pool":
                from memos.retrieval.hybrid import HYBRID_POOL, hybrid_rank

                pool = np.argsort(-dense, kind="stable")[:HYBRID_POOL]
                # the pool re-ranked first, then every other turn by cosine
                score = dense - 10.0  # below any pooled score (those are >= -1)
                for i, fused, _ in hybrid_rank(question, [self.turns[j].text for j in pool],
                                               dense[pool].tolist(), top_k=len(pool)):
                    score[pool[i]] = fused
            else:
                lex = self.bm25.scores(question)[1]
                score = (1 - self.alpha) * standardize(dense) + self.alpha * standardize(lex)
        order = np.argsort(-score, kind="stable")
        ms = (time.perf_counter() - t) * 1e3 + emb_ms
        return Retrieval([self.turns[i].dia_id for i in order[:top_k]],
                         _rank_sessions(self.sessions, order), ms, emb_ms,
                         (time.process_time() - c) * 1e3)


class _SessionBM25:
    """Reference: BM25 over whole-session texts (session metrics only)."""

    def ingest(self, conversation: Conversation) -> None:
        from memos.lexical import BM25Index

        self.keys = [s.index for s in conversation.sessions]
        self.bm25 = BM25Index()
        self.bm25.add(list(range(len(self.keys))),
                      ["\n".join(t.text for t in s.turns) for s in conversation.sessions])
        self.bm25.scores("warm up")

    def search(self, question: str, *, top_k: int) -> Retrieval:
        t, c = time.perf_counter(), time.process_time()
        score = self.bm25.scores(question)[1]
        order = np.argsort(-score, kind="stable")
        return Retrieval([], [self.keys[i] for i in order], (time.perf_counter() - t) * 1e3,
                         0.0, (time.process_time() - c) * 1e3)


class RouterRetriever:
    """The full system: a :class:`GranularIndex` fed session by session, as the cube would.

    Ingest adds each session's turns, then derives its session/summary/keyword units
    (:func:`memos.granularity.units.derive_units`) and embeds the keyword text.
    """

    def __init__(self, embedder: Any, queries: QueryEmbeddings, *,
                 vectors: np.ndarray | None = None, probe_mass: float | None = None,
                 cluster: bool = False, config: Any = None) -> None:
        self.embedder, self.queries, self.vectors = embedder, queries, vectors
        self.config = config
        self.probe_mass = probe_mass
        self.cluster = cluster or probe_mass is not None
        self.ingest_ms: dict[str, float] = {}

    def ingest(self, conversation: Conversation) -> None:
        from memos.eval.loaders import parse_locomo_time
        from memos.granularity.units import TermStats, derive_units
        from memos.retrieval.granular_index import GranularIndex, IndexUnit

        if self.cluster:
            import sklearn.mixture  # noqa: F401  (a one-off ~1-5 s import, not ingest work)

        t0, c0 = time.perf_counter(), time.process_time()
        turns = conversation.turns
        vecs = self.vectors if self.vectors is not None else self.embedder.embed(
            [t.text for t in turns])
        self.index = GranularIndex(cluster=self.cluster, config=self.config)
        self.dia_of: dict[int, str] = {}
        stats = TermStats()
        next_id = 1
        row = 0
        embed_ms = embed_cpu_ms = 0.0
        for s in conversation.sessions:
            key = f"S{s.index}"
            ids = list(range(next_id, next_id + len(s.turns)))
            next_id += len(s.turns)
            when = parse_locomo_time(s.date_time)  # what a chat log stamps on each message
            stamp = when.timestamp() if when is not None else None
            units = []
            for uid, t in zip(ids, s.turns, strict=True):
                units.append(IndexUnit(uid, "turn", t.text, vecs[row], key,
                                       speaker=t.speaker, position=t.position,
                                       timestamp=stamp))
                self.dia_of[uid] = t.dia_id
                row += 1
            self.index.add(units)
            texts = [t.text for t in s.turns]
            stats.add(key, self.index.analyzer.tokens(" ".join(texts)))
            drafts = derive_units(ids, texts, np.stack([u.vector for u in units]),
                                  stats=stats, session_key=key,
                                  analyzer=self.index.analyzer)
            te, ce = time.perf_counter(), time.process_time()
            missing = [d for d in drafts if d.vector is None]
            extra = self.embedder.embed([d.text for d in missing]) if missing else []
            embed_ms += (time.perf_counter() - te) * 1e3
            embed_cpu_ms += (time.process_time() - ce) * 1e3
            filled = iter(extra)
            derived = []
            for d in drafts:
                v = d.vector if d.vector is not None else next(filled)
                derived.append(IndexUnit(next_id, d.granularity, d.text, v, key,
                                         sources=d.sources))
                next_id += 1
            self.index.add(derived)
        # build the lazy structures now, so the first timed query does not pay for them
        self.index.search("warm up", np.asarray(vecs[0]), top_k=1)
        total = (time.perf_counter() - t0) * 1e3
        self.ingest_ms = {"total_ms": total, "derived_embed_ms": embed_ms,
                          "index_cpu_ms": (time.process_time() - c0) * 1e3 - embed_cpu_ms,
                          **{k: v for k, v in self.index.timings.items()}}

    def search(self, question: str, *, top_k: int) -> Retrieval:
        qv, emb_ms = self.queries.get(question)
        t, c = time.perf_counter(), time.process_time()
        res = self.index.search(question, qv, top_k=top_k, probe_mass=self.probe_mass,
                                top_sessions=max(SESSION_KS))
        ms = (time.perf_counter() - t) * 1e3 + emb_ms
        return Retrieval([self.dia_of[h.id] for h in res.turns if h.id is not None],
                         [int(h.session_key[1:]) for h in res.sessions], ms, emb_ms,
                         (time.process_time() - c) * 1e3)


class _ProbeView:
    """``router_probe`` (or, with ``mass=None``, ``router_candidates``) over the ``router``
    method's index (ingested once, by ``router``)."""

    def __init__(self, base: RouterRetriever, mass: float | None) -> None:
        self.base, self.mass = base, mass  # mass None: router_candidates

    def ingest(self, conversation: Conversation) -> None:
        """Nothing to do: the base retriever has ingested the conversation."""

    def search(self, question: str, *, top_k: int) -> Retrieval:
        qv, emb_ms = self.base.queries.get(question)
        t, c = time.perf_counter(), time.process_time()
        res = self.base.index.search(question, qv, top_k=top_k, probe_mass=self.mass,
                                     top_sessions=max(SESSION_KS),
                                     candidates=False if self.mass is not None else True)
        ms = (time.perf_counter() - t) * 1e3 + emb_ms
        return Retrieval([self.base.dia_of[h.id] for h in res.turns if h.id is not None],
                         [int(h.session_key[1:]) for h in res.sessions], ms, emb_ms,
                         (time.process_time() - c) * 1e3)


# ---------------------------------------------------------------------------- metrics
def _question_metrics(q: Question, r: Retrieval) -> dict[str, float]:
    ev = set(q.evidence)
    ev_sess = {int(e[1:].split(":")[0]) for e in ev}
    m: dict[str, float] = {}
    for k in TURN_KS:
        m[f"turn_recall@{k}"] = len(ev & set(r.turns[:k])) / len(ev)
    for k in SESSION_KS:
        m[f"session_recall@{k}"] = len(ev_sess & set(r.sessions[:k])) / len(ev_sess)
    dcg = sum(1.0 / np.log2(i + 2) for i, d in enumerate(r.turns[:10]) if d in ev)
    idcg = sum(1.0 / np.log2(i + 2) for i in range(min(len(ev), 10)))
    m["ndcg@10"] = dcg / idcg
    return m


# conversation, category, metrics, wall ms, embedding wall ms, search CPU ms
Row = tuple[str, int, dict[str, float], float, float, float]


def _aggregate(rows: list[Row]) -> dict[str, Any]:
    def mean(sel: list[dict[str, float]]) -> dict[str, float]:
        return {k: round(100 * float(np.mean([s[k] for s in sel])), 2) for k in sel[0]}

    out: dict[str, Any] = mean([r[2] for r in rows]) if rows else {}
    lat = np.array([r[3] for r in rows]) if rows else np.zeros(1)
    out["query_p50_ms"] = round(float(np.percentile(lat, 50)), 2)
    out["query_p95_ms"] = round(float(np.percentile(lat, 95)), 2)
    own = np.array([r[3] - r[4] for r in rows]) if rows else np.zeros(1)
    out["search_p50_ms_excl_embedding"] = round(float(np.percentile(own, 50)), 2)
    out["search_p95_ms_excl_embedding"] = round(float(np.percentile(own, 95)), 2)
    cpu = np.array([r[5] for r in rows]) if rows else np.zeros(1)
    out["search_cpu_p50_ms"] = round(float(np.percentile(cpu, 50)), 2)
    out["search_cpu_p95_ms"] = round(float(np.percentile(cpu, 95)), 2)
    out["questions"] = len(rows)
    out["by_category"] = {str(c): {**mean(sel), "questions": len(sel)}
                          for c in CATEGORIES
                          if (sel := [r[2] for r in rows if r[1] == c])}
    convs = sorted({r[0] for r in rows})
    out["by_conversation"] = {
        c: {k: v for k, v in mean([r[2] for r in rows if r[0] == c]).items()
            if k in ("turn_recall@5", "turn_recall@10", "session_recall@3", "ndcg@10")}
        for c in convs}
    return out


# ---------------------------------------------------------------------------- runner
def run_locomo(data_path: str | Path, *, conversations: Sequence[str] | None = None,
               json_path: str | Path | None = None,
               retriever_factory: Callable[[], Retriever] | None = None,
               progress: bool = True, max_questions: int | None = None,
               methods: Sequence[str] = ("flat", "bm25", "hybrid", "router", "router_probe",
                                         "router_candidates", "shipped"),
               embedder: Any = None, out: Any = None) -> dict[str, Any]:
    """Score the methods on LoCoMo; return (and optionally write) the report dict.

    ``retriever_factory`` replaces the in-library ``router`` with another implementation of
    :class:`Retriever` (e.g. one that talks to a server). ``max_questions`` keeps the first
    n scored questions of each conversation (for quick runs). Report keys:
    ``methods.<m>.{turn_recall@k, session_recall@k, ndcg@10, query_p50_ms, query_p95_ms,
    by_category.<1..4>, by_conversation}``; recalls in percent.
    """
    from tqdm.auto import tqdm

    from memos.embed import default_embedder

    known = {"flat", "bm25", "hybrid", "hybrid_pool", "router", "router_probe", "router_candidates",
             "bm25_sessions", "shipped"}
    if unknown := set(methods) - known:
        raise ValueError(f"unknown methods {sorted(unknown)}; choose from {sorted(known)}")
    out = out or sys.stdout
    convs = load_locomo(data_path, conversations=conversations)
    embedder = embedder or default_embedder()
    queries = QueryEmbeddings(embedder)
    # router_candidates re-queries the in-library router's index: no such index behind a
    # retriever_factory (a server scores its own way)
    names = [m for m in methods if not (m == "router_candidates" and retriever_factory)]
    grid_names = [f"hybrid@{a}" for a in HYBRID_GRID] if "hybrid" in names else []
    rows: dict[str, list[Row]] = {
        m: [] for m in [n for n in names if n != "hybrid"] + grid_names}
    ingest: dict[str, Any] = {"turns": 0, "embed_ms": 0.0, "router_ms": 0.0,
                              "shipped_ms": 0.0, "router_detail_ms": {}}
    dropped = skipped = 0
    with ExitStack() as stack:
        shipped = (stack.enter_context(shipped_retriever_factory()) if "shipped" in names
                   else None)
        for conv in tqdm(convs, desc="locomo conversations", disable=not progress):
            turns = conv.turns
            t = time.perf_counter()
            vecs = embedder.embed([x.text for x in turns])
            ingest["embed_ms"] += (time.perf_counter() - t) * 1e3
            ingest["turns"] += len(turns)
            qs = [q for q in conv.questions if q.category in CATEGORIES and q.evidence]
            skipped += sum(1 for q in conv.questions if q.category in CATEGORIES and not q.evidence)
            dropped += conv.dropped_evidence
            if max_questions is not None:
                qs = qs[:max_questions]
            retrievers: dict[str, Retriever] = {}
            for m in rows:
                if m in ("flat", "bm25", "hybrid_pool"):
                    retrievers[m] = _TurnScorer(m, vecs, queries)
                elif m.startswith("hybrid@"):
                    retrievers[m] = _TurnScorer("hybrid", vecs, queries, alpha=float(m[7:]))
                elif m == "bm25_sessions":
                    retrievers[m] = _SessionBM25()
                elif m == "router":
                    # clusters are maintained during ingest so their cost is in the ingest figure
                    retrievers[m] = (retriever_factory() if retriever_factory is not None
                                     else RouterRetriever(embedder, queries, vectors=vecs,
                                                          cluster=True))
                elif m == "router_probe":
                    base = retrievers.get("router")
                    retrievers[m] = (_ProbeView(base, 0.9) if isinstance(base, RouterRetriever)
                                     else RouterRetriever(embedder, queries, vectors=vecs,
                                                          probe_mass=0.9))
                elif m == "router_candidates":
                    base = retrievers.get("router")
                    if not isinstance(base, RouterRetriever):
                        raise ValueError("router_candidates reuses the router method's index: "
                                         "list 'router' before it")
                    retrievers[m] = _ProbeView(base, None)
                elif m == "shipped":
                    assert shipped is not None
                    retrievers[m] = shipped()
            for m, r in retrievers.items():
                t = time.perf_counter()
                r.ingest(conv)
                ms = (time.perf_counter() - t) * 1e3
                if m == "shipped":
                    ingest["shipped_ms"] += ms
                if m == "router":
                    ingest["router_ms"] += ms
                    for k, v in getattr(r, "ingest_ms", {}).items():
                        ingest["router_detail_ms"][k] = ingest["router_detail_ms"].get(k, 0) + v
            for q in tqdm(qs, desc=f"{conv.sample_id} questions", leave=False,
                          disable=not progress):
                for m, r in retrievers.items():
                    res = r.search(q.question, top_k=max(TURN_KS))
                    rows[m].append((conv.sample_id, q.category, _question_metrics(q, res),
                                    res.latency_ms, res.embed_ms, res.cpu_ms))
    report: dict[str, Any] = {
        "dataset": str(data_path), "conversations": [c.sample_id for c in convs],
        "questions": len(next(iter(rows.values()))) if rows else 0,
        "categories": list(CATEGORIES), "excluded": EXCLUDED_NOTE,
        "questions_without_evidence": skipped, "evidence_ids_dropped": dropped,
        "embedder": getattr(embedder, "name", type(embedder).__name__),
        # latency is wall-clock: a busy machine inflates it, so record how busy it was
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg")
        else None,
        "methods": {}}
    for m in names:
        if m == "hybrid":
            hyb_rows, alphas = _hybrid_loco(rows, [c.sample_id for c in convs])
            report["methods"]["hybrid"] = _aggregate(hyb_rows)
            report["methods"]["hybrid"]["alpha_by_conversation"] = alphas
            report["hybrid_grid"] = {
                n: {k: v for k, v in _aggregate(rows[n]).items()
                    if k in ("turn_recall@5", "turn_recall@10", "session_recall@3")}
                for n in grid_names}
        else:
            report["methods"][m] = _aggregate(rows[m])
    n_turns = max(ingest["turns"], 1)
    emb_s = ingest["embed_ms"] / 1e3
    router_s = ingest["router_ms"] / 1e3
    detail = ingest["router_detail_ms"]
    report["ingest"] = {
        "turns": n_turns, "turn_embed_s": round(emb_s, 3),
        "embed_turns_per_s": round(n_turns / max(emb_s, 1e-9), 1)}
    if router_s > 0:  # the in-library router was built (not with --methods shipped alone)
        report["ingest"] |= _router_ingest(n_turns, emb_s, router_s, detail)
    if "shipped" in names:
        # the product's own ingest, in process: embedding, session units, derivation, facts
        shipped_s = ingest["shipped_ms"] / 1e3
        report["ingest"]["shipped_ingest_s"] = round(shipped_s, 3)
        report["ingest"]["shipped_turns_per_s_end_to_end"] = round(
            n_turns / max(shipped_s, 1e-9), 1)
    if retriever_factory is not None:
        # A server ingests end to end (HTTP, embedding, derived units, facts): one figure.
        report["ingest"] = {
            "turns": n_turns, "server_ingest_s": round(router_s, 3),
            "server_turns_per_s_end_to_end": round(n_turns / max(router_s, 1e-9), 1)}
    if "router" in report["methods"] and "router_probe" in report["methods"]:
        full, probe = report["methods"]["router"], report["methods"]["router_probe"]
        report["probe_recall_loss"] = {k: round(full[k] - probe[k], 2) for k in
                                       ("turn_recall@5", "turn_recall@10", "session_recall@3")}
    _print_table(report, out)
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def _router_ingest(n_turns: int, emb_s: float, router_s: float,
                   detail: dict[str, float]) -> dict[str, Any]:
    """Ingest figures of the in-library router's index build."""
    derived_s = detail.get("derived_embed_ms", 0.0) / 1e3
    index_cpu_s = detail.get("index_cpu_ms", 0.0) / 1e3
    return {
        "router_ingest_s": round(router_s, 3),
        "router_derived_embed_s": round(derived_s, 3),
        # index work only (association, clustering, BM25, derived units), wall clock
        "router_turns_per_s_excl_embedding": round(
            n_turns / max(router_s - derived_s, 1e-9), 1),
        # the same work in CPU time (what a quiet machine would see)
        "router_turns_per_s_excl_embedding_cpu": round(n_turns / max(index_cpu_s, 1e-9), 1),
        # everything: turn embeddings, derived-unit embeddings and index work
        "router_turns_per_s_incl_embedding": round(n_turns / max(emb_s + router_s, 1e-9), 1),
        "router_detail_ms": {k: round(v, 1) for k, v in detail.items()},
    }


def _hybrid_loco(rows: dict[str, list[Row]], conv_ids: list[str]
                 ) -> tuple[list[Row], dict[str, float]]:
    """Per conversation, the grid weight that is best on the other conversations."""
    alphas: dict[str, float] = {}
    out: list[Row] = []
    for c in conv_ids:
        if len(conv_ids) == 1:
            best = 0.5
        else:
            def r5(a: float, c: str = c) -> float:
                sel = [r[2]["turn_recall@5"] for r in rows[f"hybrid@{a}"] if r[0] != c]
                return float(np.mean(sel)) if sel else 0.0
            best = max(HYBRID_GRID, key=lambda a: (r5(a), -abs(a - 0.5)))
        alphas[c] = best
        out.extend(r for r in rows[f"hybrid@{best}"] if r[0] == c)
    return out, alphas


def _print_table(report: dict[str, Any], out: Any) -> None:
    cols = ["turn_recall@1", "turn_recall@5", "turn_recall@10", "turn_recall@20",
            "session_recall@1", "session_recall@3", "ndcg@10", "query_p50_ms", "query_p95_ms",
            "search_p95_ms_excl_embedding", "search_cpu_p95_ms"]
    heads = ["R@1", "R@5", "R@10", "R@20", "S@1", "S@3", "NDCG@10", "p50ms", "p95ms",
             "p95-emb", "cpu95"]
    print(f"LoCoMo retrieval - {report['questions']} questions, "
          f"{len(report['conversations'])} conversations; {report['excluded']}", file=out)
    print(f"{'method':14s}" + "".join(f"{h:>9s}" for h in heads)
          + "   (ms; p95-emb: wall, query embedding excluded; cpu95: its CPU time)",
          file=out)
    for m, v in report["methods"].items():
        print(f"{m:14s}" + "".join(f"{v.get(c, float('nan')):9.1f}" for c in cols), file=out)
    print("by category (turn R@5 / session S@3):", file=out)
    for m, v in report["methods"].items():
        cells = "  ".join(f"c{c}: {d.get('turn_recall@5', 0):5.1f}/{d['session_recall@3']:5.1f}"
                          for c, d in v["by_category"].items())
        print(f"  {m:12s} {cells}", file=out)
    ing = report["ingest"]
    if "server_turns_per_s_end_to_end" in ing:
        print(f"ingest through the server: {ing['turns']} turns, "
              f"{ing['server_turns_per_s_end_to_end']} turns/s end to end (embedding, derived "
              f"units and fact extraction included); load average "
              f"{report['load_average_1min']}", file=out)
    else:
        router = (f"router index {ing['router_turns_per_s_excl_embedding']} turns/s excl. "
                  f"embedding ({ing['router_turns_per_s_excl_embedding_cpu']} by CPU time), "
                  f"{ing['router_turns_per_s_incl_embedding']} incl.; "
                  if "router_ingest_s" in ing else "")
        shipped = (f"shipped {ing['shipped_turns_per_s_end_to_end']} turns/s end to end; "
                   if "shipped_ingest_s" in ing else "")
        print(f"ingest: {ing['turns']} turns; embedding {ing['embed_turns_per_s']} turns/s; "
              f"{router}{shipped}load average {report['load_average_1min']}", file=out)
    if "probe_recall_loss" in report:
        print(f"posterior routing (90% mass) recall loss vs full: {report['probe_recall_loss']}",
              file=out)


# ---------------------------------------------------------------------------- CLI hook
class ServerRetriever:
    """The whole memos system behind its REST API: one fresh cube per conversation,
    sessions ingested through the SDK (derived units and facts built before searching),
    questions answered by the server's router search."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.cube: str | None = None

    def ingest(self, conversation: Conversation) -> None:
        from memos.eval.loaders import parse_locomo_time

        self.cube = f"locomo-{conversation.sample_id}-{time.time_ns() % 10**9:x}"
        self.client.create_cube(self.cube, name=f"LoCoMo {conversation.sample_id}")
        for session in conversation.sessions:
            when = parse_locomo_time(session.date_time)
            self.client.add_messages(self.cube, session_id=f"s{session.index}", sync=True,
                                     messages=[{
                                         "id": t.dia_id, "role": "user", "speaker": t.speaker,
                                         "content": t.text.removeprefix(f"{t.speaker}: "),
                                         "timestamp": when} for t in session.turns])

    def search(self, question: str, *, top_k: int) -> Retrieval:
        if self.cube is None:
            raise RuntimeError("ingest a conversation first")
        start = time.perf_counter()
        # The default search, as an agent would call it: a granularity filter would also
        # restrict the router's channels to turns (no session, summary, keyword or fact
        # evidence). Turns are picked from the hits here instead.
        found = self.client.search(self.cube, query=question, top_k=top_k)
        latency = (time.perf_counter() - start) * 1000
        turns = [str(h.unit.metadata.get("message_id")) for h in found.hits
                 if h.unit.granularity == "turn"]
        sessions = [int(h.unit.session_id[1:]) for h in found.sessions
                    if h.unit.session_id and h.unit.session_id[1:].isdigit()]
        return Retrieval(turns=turns, sessions=sessions, latency_ms=latency)


class CubeClient:
    """The three SDK calls :class:`ServerRetriever` makes, answered by an in-process
    :class:`~memos.cube.MemCube`: the shipped ingest (turns, session units, derivation and
    facts, inline) and the shipped default search, without HTTP."""

    def __init__(self, cube: Any, *, tenant: str = "default") -> None:
        self.cube, self.tenant = cube, tenant

    def create_cube(self, cube_id: str, *, name: str | None = None) -> Any:
        from memos.types import CubeCreate

        return self.cube.create_cube(CubeCreate(id=cube_id, name=name), tenant=self.tenant)

    def add_messages(self, cube_id: str, *, session_id: str,
                     messages: Sequence[dict[str, Any]], sync: bool = False) -> Any:
        from memos.types import MessagesIngest

        body = MessagesIngest.model_validate(
            {"session_id": session_id, "messages": list(messages), "sync": sync})
        return self.cube.ingest(cube_id, body, tenant=self.tenant)

    def search(self, cube_id: str, *, query: str, top_k: int) -> Any:
        from memos.types import SearchRequest

        return self.cube.search(cube_id, SearchRequest(query=query, top_k=top_k),
                                tenant=self.tenant)


@contextmanager
def shipped_retriever_factory() -> Iterator[Callable[[], Retriever]]:
    """The ``shipped`` method: a fresh in-process service (SQLite + FAISS + router cache in a
    temporary directory, default settings otherwise) that every conversation is ingested
    into exactly as ``POST /messages`` would, and searched as ``POST /search`` would."""
    from memos.config import Settings
    from memos.service import open_cube

    with tempfile.TemporaryDirectory(prefix="memos-locomo-") as tmp:
        settings = Settings.model_validate({"data_dir": tmp, "MEMOS_DATABASE_URL": None})
        cube = open_cube(settings)
        try:
            yield lambda: ServerRetriever(CubeClient(cube))
        finally:
            cube.store.dispose()


def server_retriever_factory(base_url: str) -> Callable[[], Retriever]:
    """``--base-url``: evaluate a running memos server through the SDK."""
    from memos.client import MemosClient

    client = MemosClient(base_url, timeout=600)
    return lambda: ServerRetriever(client)
