"""Lexical retrieval: stemmed BM25 over a mutable set of int64-keyed documents.

:class:`BM25Index` keeps one document per id. ``add`` inserts or replaces, ``remove``
deletes; the scoring structure (a ``bm25s`` sparse matrix) is rebuilt lazily on the first
query after a change, from token lists cached per id, so a rebuild costs one sparse-matrix
build and no re-tokenisation. Invariant: an id that has been removed is never returned,
because every query sees a structure built from the current id set.

Scores are BM25 (Lucene variant): non-negative, higher = more relevant, 0 when the document
shares no query term. Documents and queries go through the same :class:`Analyzer`
(lower-case, ``\\w\\w+`` tokens, 179 English stopwords, Snowball stemming via PyStemmer).

>>> index = BM25Index()
>>> index.add([1, 2], ["I moved to Berlin", "We adopted a dog"])
>>> [doc_id for doc_id, _ in index.search("moving to berlin", top_k=1)]
[1]
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["Analyzer", "BM25Index"]

_TOKEN = re.compile(r"(?u)\b\w\w+\b")


class Analyzer:
    """Text → stemmed tokens; the same analyzer must serve documents and queries.

    >>> Analyzer().tokens("The dogs were running")
    ['dog', 'run']
    """

    def __init__(self, *, language: str = "english", stopwords: bool = True) -> None:
        import Stemmer
        from bm25s.stopwords import STOPWORDS_EN_PLUS

        self.language = language
        self._stemmer = Stemmer.Stemmer(language)
        # The 179-word NLTK-style list: bm25s' default 33-word list keeps "what", "did",
        # "when", "have", the words every question starts with.
        self._stop = frozenset(STOPWORDS_EN_PLUS) if stopwords else frozenset()

    def tokens(self, text: str) -> list[str]:
        """Stemmed, stopword-free tokens of ``text``, in order (duplicates kept)."""
        words = [w for w in _TOKEN.findall(text.lower()) if w not in self._stop]
        return self._stemmer.stemWords(words)

    def pairs(self, text: str) -> list[tuple[str, str]]:
        """``(surface word, stem)`` for every token :meth:`tokens` would keep, in order."""
        words = [w for w in _TOKEN.findall(text.lower()) if w not in self._stop]
        return list(zip(words, self._stemmer.stemWords(words), strict=True))


class BM25Index:
    """BM25 over documents keyed by int64 ids, kept in sync with add/replace/remove.

    ``k1``/``b`` are the usual BM25 parameters. ``rebuilds`` and ``last_rebuild_ms``
    report the cost of the lazy rebuilds so callers can measure it.
    """

    def __init__(self, *, k1: float = 1.2, b: float = 0.75,
                 analyzer: Analyzer | None = None) -> None:
        if k1 <= 0 or not 0.0 <= b <= 1.0:
            raise ValueError(f"need k1 > 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        self.k1 = k1
        self.b = b
        self.analyzer = analyzer or Analyzer()
        self._tokens: dict[int, list[str]] = {}
        self._model = None
        self._ids = np.zeros(0, dtype=np.int64)
        self._dirty = True
        self.rebuilds = 0
        self.last_rebuild_ms = 0.0

    # ------------------------------------------------------------------ mutation
    def add(self, ids: Sequence[int], texts: Sequence[str]) -> None:
        """Insert documents; an id already present is replaced (an update)."""
        if len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids but {len(texts)} texts")
        for doc_id, text in zip(ids, texts, strict=True):
            if not isinstance(text, str):
                raise ValueError(f"text for id {doc_id} must be str, got {type(text).__name__}")
            self._tokens[int(doc_id)] = self.analyzer.tokens(text)
        if len(ids):
            self._dirty = True

    def remove(self, ids: Iterable[int]) -> int:
        """Delete documents; unknown ids are ignored. Returns how many were removed."""
        removed = 0
        for doc_id in ids:
            if self._tokens.pop(int(doc_id), None) is not None:
                removed += 1
        if removed:
            self._dirty = True
        return removed

    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, doc_id: object) -> bool:
        return isinstance(doc_id, (int, np.integer)) and int(doc_id) in self._tokens

    # ------------------------------------------------------------------ queries
    def scores(self, query: str) -> tuple[np.ndarray, np.ndarray]:
        """BM25 score of every document: ``(ids int64 (N,), scores float32 (N,))``.

        Ids are in ascending order. A query with no indexable term scores 0 everywhere.
        """
        return self.scores_tokens(self.analyzer.tokens(query))

    def scores_tokens(self, query_tokens: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`scores` for already analysed query tokens."""
        self._ensure_built()
        n = len(self._ids)
        if n == 0 or self._model is None:
            return self._ids.copy(), np.zeros(n, dtype=np.float32)
        vocab = self._model.vocab_dict
        known = [t for t in query_tokens if t in vocab]
        if not known:
            return self._ids.copy(), np.zeros(n, dtype=np.float32)
        return self._ids.copy(), np.asarray(self._model.get_scores(known), dtype=np.float32)

    def search(self, query: str, *, top_k: int = 10) -> list[tuple[int, float]]:
        """The ``top_k`` best ``(id, score)`` pairs with score > 0, best first."""
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        ids, scores = self.scores(query)
        if not len(ids):
            return []
        k = min(top_k, len(ids))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.lexsort((ids[top], -scores[top]))]
        return [(int(ids[i]), float(scores[i])) for i in top if scores[i] > 0]

    # ------------------------------------------------------------------ internals
    def _ensure_built(self) -> None:
        if not self._dirty:
            return
        start = time.perf_counter()
        self._ids = np.array(sorted(self._tokens), dtype=np.int64)
        if len(self._ids):
            import bm25s

            model = bm25s.BM25(k1=self.k1, b=self.b, method="lucene")
            # An empty token list would break the sparse build; "" is bm25s' own empty token.
            corpus = [self._tokens[int(i)] or [""] for i in self._ids]
            model.index(corpus, show_progress=False)
            self._model = model
        else:
            self._model = None
        self._dirty = False
        self.rebuilds += 1
        self.last_rebuild_ms = (time.perf_counter() - start) * 1e3
