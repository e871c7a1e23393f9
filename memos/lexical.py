"""Lexical retrieval: stemmed BM25 over a mutable set of int64-keyed documents.

:class:`BM25Index` keeps one document per id. ``add`` inserts or replaces, ``remove``
deletes, and both update the postings and statistics in place (no query re-indexes;
scores equal ``bm25s``' Lucene BM25 over the same documents). Invariant: an id that has been
removed is never returned (its row is dead and scores 0).

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


class _Postings:
    """One term's documents (rows) and term frequencies, in growable arrays."""

    __slots__ = ("rows", "tfs", "n", "df")

    def __init__(self) -> None:
        self.rows = np.zeros(4, dtype=np.int64)
        self.tfs = np.zeros(4, dtype=np.float32)
        self.n = 0
        self.df = 0  # live documents holding the term

    def append(self, row: int, tf: int) -> None:
        if self.n == len(self.rows):
            self.rows = np.concatenate([self.rows, np.zeros(self.n, dtype=np.int64)])
            self.tfs = np.concatenate([self.tfs, np.zeros(self.n, dtype=np.float32)])
        self.rows[self.n] = row
        self.tfs[self.n] = tf
        self.n += 1
        self.df += 1


class BM25Index:
    """BM25 over documents keyed by int64 ids, kept in sync with add/replace/remove.

    ``k1``/``b`` are the usual BM25 parameters. The statistics (postings, document
    frequencies, lengths, their average) are updated in place by every add and remove, so
    no query pays for a re-index: a document is a row of growable arrays, a removed one a
    dead row that scores nothing until a compaction (once dead rows outnumber live ones,
    amortised O(1) per write). ``rebuilds`` and ``last_rebuild_ms`` count and time those
    compactions.
    """

    def __init__(self, *, k1: float = 1.2, b: float = 0.75,
                 analyzer: Analyzer | None = None) -> None:
        if k1 <= 0 or not 0.0 <= b <= 1.0:
            raise ValueError(f"need k1 > 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        self.k1 = k1
        self.b = b
        self.analyzer = analyzer or Analyzer()
        self._tokens: dict[int, list[str]] = {}
        self._reset()
        self.rebuilds = 0
        self.last_rebuild_ms = 0.0

    def _reset(self) -> None:
        self._row: dict[int, int] = {}
        self._row_id = np.full(16, -1, dtype=np.int64)
        self._dl = np.zeros(16, dtype=np.float32)
        self._n_rows = 0
        self._total_len = 0.0
        self._post: dict[str, _Postings] = {}
        self._order: np.ndarray | None = None  # live rows by ascending id, until a change

    # ------------------------------------------------------------------ mutation
    def add(self, ids: Sequence[int], texts: Sequence[str]) -> None:
        """Insert documents; an id already present is replaced (an update)."""
        if len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids but {len(texts)} texts")
        for doc_id, text in zip(ids, texts, strict=True):
            if not isinstance(text, str):
                raise ValueError(f"text for id {doc_id} must be str, got {type(text).__name__}")
        for doc_id, text in zip(ids, texts, strict=True):
            self._drop(int(doc_id))
            tokens = self.analyzer.tokens(text)
            self._tokens[int(doc_id)] = tokens
            self._insert(int(doc_id), tokens)

    def remove(self, ids: Iterable[int]) -> int:
        """Delete documents; unknown ids are ignored. Returns how many were removed."""
        removed = sum(1 for doc_id in ids if self._drop(int(doc_id)))
        live = len(self._row)
        if removed and self._n_rows - live > max(1000, live):
            self._compact()
        return removed

    def _insert(self, doc_id: int, tokens: list[str]) -> None:
        row = self._n_rows
        if row == len(self._row_id):
            self._row_id = np.concatenate([self._row_id, np.full(row, -1, dtype=np.int64)])
            self._dl = np.concatenate([self._dl, np.zeros(row, dtype=np.float32)])
        self._row_id[row] = doc_id
        self._dl[row] = len(tokens)
        self._n_rows += 1
        self._row[doc_id] = row
        self._total_len += len(tokens)
        counts: dict[str, int] = {}
        for t in tokens:
            counts[t] = counts.get(t, 0) + 1
        for t, tf in counts.items():
            post = self._post.get(t)
            if post is None:
                post = self._post[t] = _Postings()
            post.append(row, tf)
        self._order = None

    def _drop(self, doc_id: int) -> bool:
        tokens = self._tokens.pop(doc_id, None)
        if tokens is None:
            return False
        row = self._row.pop(doc_id)
        self._row_id[row] = -1
        self._total_len -= float(self._dl[row])
        for t in set(tokens):
            self._post[t].df -= 1
        self._order = None
        return True

    def _compact(self) -> None:
        start = time.perf_counter()
        docs = list(self._tokens.items())
        self._reset()
        for doc_id, tokens in docs:
            self._insert(doc_id, tokens)
        self.rebuilds += 1
        self.last_rebuild_ms = (time.perf_counter() - start) * 1e3

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
        if self._order is None:
            live = np.flatnonzero(self._row_id[:self._n_rows] >= 0)
            self._order = live[np.argsort(self._row_id[live], kind="stable")]
        order = self._order
        return self._row_id[order].copy(), self._row_scores(query_tokens)[order]

    def matches(self, query_tokens: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(ids ascending, scores)`` of the documents scoring > 0 only: costs the query
        terms' postings, not the index (what a candidate pool reads)."""
        acc = self._row_scores(query_tokens)
        rows = np.flatnonzero(acc > 0)
        ids = self._row_id[rows]
        o = np.argsort(ids, kind="stable")
        return ids[o], acc[rows[o]]

    def _row_scores(self, query_tokens: Sequence[str]) -> np.ndarray:
        """Score per row (dead rows 0), Lucene BM25 as bm25s computes it: ``Σ_t idf_t ·
        tf / (tf + k1·(1 - b + b·dl/avgdl))`` with ``idf = ln(1 + (N - df + .5)/(df + .5))``
        (a repeated query term counts each time)."""
        acc = np.zeros(self._n_rows, dtype=np.float32)
        n_docs = len(self._row)
        if not n_docs:
            return acc
        avgdl = max(self._total_len / n_docs, 1e-9)
        norm = None
        for t in query_tokens:
            post = self._post.get(t)
            if post is None or post.df <= 0:
                continue
            if norm is None:
                norm = self.k1 * (1 - self.b + self.b * self._dl[:self._n_rows] / avgdl)
            idf = np.float32(np.log(1 + (n_docs - post.df + 0.5) / (post.df + 0.5)))
            rows, tfs = post.rows[:post.n], post.tfs[:post.n]
            acc[rows] += idf * tfs / (tfs + norm[rows])
        acc[self._row_id[:self._n_rows] < 0] = 0
        return acc

    def search(self, query: str, *, top_k: int = 10) -> list[tuple[int, float]]:
        """The ``top_k`` best ``(id, score)`` pairs with score > 0, best first."""
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        ids, scores = self.matches(self.analyzer.tokens(query))
        if not len(ids):
            return []
        k = min(top_k, len(ids))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.lexsort((ids[top], -scores[top]))]
        return [(int(ids[i]), float(scores[i])) for i in top]
