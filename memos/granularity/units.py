"""Granularity units derived from one session's turns, offline (no LLM needed).

* ``session``: the session's text, all turns in order; vector = normalised mean of the
  turn vectors (no 256-token truncation, no extra embedding call).
* ``summary``: extractive. Turns are picked by maximal marginal relevance against the
  session centroid (relevant to the whole session, not redundant with the turns already
  picked); text = the picked turns in session order; ``sources`` = their ids.
* ``keyword``: the session's most distinctive terms by TF-IDF against the document
  frequencies of the *other* sessions seen so far (:class:`TermStats`).

Every derived unit lists the turn ids it came from in ``sources``: the cube stores them as
``derived_from`` / ``summarizes`` links. An LLM may write the summary and keywords instead
(:func:`llm_summary_and_keywords`, prompt :data:`SUMMARY_PROMPT`, versioned).

>>> drafts = derive_units([1, 2], ["A: I moved to Berlin", "B: nice!"],
...                       np.eye(2, dtype=np.float32))
>>> [d.granularity for d in drafts]
['session', 'summary', 'keyword']
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from memos.lexical import Analyzer

__all__ = [
    "UnitDraft",
    "TermStats",
    "mmr_select",
    "derive_units",
    "SUMMARY_PROMPT",
    "SUMMARY_PROMPT_VERSION",
    "llm_summary_and_keywords",
]

SUMMARY_PROMPT_VERSION = "session-summary-v1"
SUMMARY_PROMPT = """You summarise one conversation session for a memory system.
Write 2-4 factual sentences: who did what, when, with whom; keep names, places, dates.
Then a line starting with "KEYWORDS:" and 5-12 comma-separated distinctive keywords.

SESSION:
{session}
"""


@dataclass(frozen=True)
class UnitDraft:
    """A derived unit before the cube gives it an id.

    ``vector`` is unit-norm float32, or None when the text must be embedded by the caller.
    ``sources`` are the ids of the turns it was derived from. ``extractor`` names the rule
    or model (+ prompt version) that produced it, for provenance.
    """

    granularity: str
    text: str
    sources: tuple[int, ...]
    vector: np.ndarray | None
    extractor: str
    meta: dict = field(default_factory=dict)


class TermStats:
    """Document frequencies of stemmed terms over sessions (for keyword extraction).

    Incremental: ``add(key, tokens)`` / ``remove(key)``. Never pickled; rebuild it from texts.
    """

    def __init__(self) -> None:
        self.df: Counter[str] = Counter()
        self._docs: dict[str, frozenset[str]] = {}

    def add(self, key: str, tokens: Sequence[str]) -> None:
        self.remove(key)
        terms = frozenset(tokens)
        self._docs[key] = terms
        self.df.update(terms)

    def remove(self, key: str) -> None:
        old = self._docs.pop(key, None)
        if old:
            self.df.subtract(old)
            for t in old:
                if self.df[t] <= 0:
                    del self.df[t]

    @property
    def n_docs(self) -> int:
        return len(self._docs)

    def has(self, key: str) -> bool:
        return key in self._docs

    def terms(self, key: str | None) -> frozenset[str]:
        return self._docs.get(key, frozenset()) if key is not None else frozenset()


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def mmr_select(vectors: np.ndarray, *, k: int, diversity: float = 0.3) -> list[int]:
    """Row indices picked by maximal marginal relevance to the centroid, in pick order.

    ``score = (1-diversity)·cos(v, centroid) - diversity·max cos(v, picked)``.
    """
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim != 2:
        raise ValueError("vectors must be (n, dim)")
    if k < 1 or not 0.0 <= diversity <= 1.0:
        raise ValueError("need k >= 1 and 0 <= diversity <= 1")
    if len(v) == 0:
        return []
    rel = v @ _unit(v.mean(axis=0))
    picked: list[int] = []
    red = np.full(len(v), -np.inf)
    for _ in range(min(k, len(v))):
        score = (1 - diversity) * rel - diversity * np.where(np.isinf(red), 0.0, red)
        score[picked] = -np.inf
        best = int(np.argmax(score))
        picked.append(best)
        red = np.maximum(red, v @ v[best])
    return picked


def _keywords(tokens: Sequence[str], stats: TermStats | None, key: str | None,
              top_n: int) -> list[str]:
    tf = Counter(t for t in tokens if not t.isdigit())
    if not tf:
        return []
    if stats is None:
        stats = TermStats()
    own = stats.terms(key)
    n_other = stats.n_docs - (1 if key is not None and stats.has(key) else 0)

    def weight(term: str) -> float:
        df_other = stats.df.get(term, 0) - (term in own)
        return float((1 + np.log(tf[term])) * np.log((1 + n_other) / (1 + df_other) + 1.0))

    return sorted(tf, key=lambda t: (-weight(t), t))[:top_n]


def derive_units(turn_ids: Sequence[int], turn_texts: Sequence[str], turn_vectors: np.ndarray,
                 *, stats: TermStats | None = None, session_key: str | None = None,
                 summary_turns: int = 4, diversity: float = 0.3, keywords: int = 12,
                 analyzer: Analyzer | None = None) -> list[UnitDraft]:
    """The ``session``, ``summary`` and ``keyword`` drafts of one session (in that order).

    ``turn_*`` are the session's turns in order; vectors ``(n, dim)`` unit-norm. ``stats``
    (document frequencies over sessions, optionally already holding this session under
    ``session_key``) makes keywords distinctive; without it keywords are the most frequent
    content terms. The keyword draft's vector is None (its text must be embedded).
    """
    n = len(turn_ids)
    if n == 0:
        raise ValueError("a session needs at least one turn")
    if len(turn_texts) != n or len(turn_vectors) != n:
        raise ValueError("turn_ids, turn_texts and turn_vectors must have the same length")
    ids = tuple(int(i) for i in turn_ids)
    vecs = np.asarray(turn_vectors, dtype=np.float32)
    session = UnitDraft("session", "\n".join(turn_texts), ids, _unit(vecs.mean(axis=0)),
                        "rules:session-concat")
    picked = sorted(mmr_select(vecs, k=summary_turns, diversity=diversity))
    summary = UnitDraft("summary", "\n".join(turn_texts[i] for i in picked),
                        tuple(ids[i] for i in picked), _unit(vecs[picked].mean(axis=0)),
                        f"rules:mmr-extractive(k={summary_turns},diversity={diversity})")
    analyzer = analyzer or Analyzer()
    # Keywords are read as words, so rank stems but show one surface form per stem.
    surface: dict[str, str] = {}
    tokens = []
    for word, stem in analyzer.pairs(" ".join(turn_texts)):
        surface.setdefault(stem, word)
        tokens.append(stem)
    terms = _keywords(tokens, stats, session_key, keywords)
    keyword = UnitDraft("keyword", ", ".join(surface.get(t, t) for t in terms), ids, None,
                        f"rules:tfidf-keywords(top={keywords})", {"terms": terms})
    return [session, summary, keyword]


def llm_summary_and_keywords(turn_ids: Sequence[int], turn_texts: Sequence[str], *,
                             complete: Callable[[str], str]) -> list[UnitDraft]:
    """Summary and keyword drafts written by an LLM (``complete(prompt) -> str``).

    Vectors are None (embed the texts). Raises ValueError when the reply is empty.
    """
    reply = complete(SUMMARY_PROMPT.format(session="\n".join(turn_texts))).strip()
    if not reply:
        raise ValueError("the LLM returned an empty summary")
    body, _, kw = reply.partition("KEYWORDS:")
    ids = tuple(int(i) for i in turn_ids)
    extractor = f"llm:{SUMMARY_PROMPT_VERSION}"
    drafts = [UnitDraft("summary", body.strip() or reply, ids, None, extractor)]
    words = [w.strip() for w in kw.split(",") if w.strip()]
    if words:
        drafts.append(UnitDraft("keyword", ", ".join(words), ids, None, extractor))
    return drafts
