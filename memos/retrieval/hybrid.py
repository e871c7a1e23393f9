"""Hybrid ranking: the vector index's nearest units re-scored with BM25 inside that pool.

Cosine similarity alone is dominated by what most units of a cube share. In one user's
facts the user's name is in every one ("Sharon Brown works at Partnership Enterprise as a
Senior Consultant", "Sharon Brown is a Female."), so the short facts, which are mostly
name, come nearest to every question that names her, and "What is Sharon Brown's job title?"
ranks "is a Female" above the job. BM25 computed over the candidate pool itself weighs a
term by how few candidates hold it: a word the whole pool shares (the name) adds nothing,
the word that tells the answer apart ("job", "title", "consultant") adds most. No cube-wide
statistics are needed, so it works the same on every backend and at any cube size, and
costs one tokenisation of the pool per query (about a millisecond for 100 short units).

:func:`hybrid_rank` takes the :data:`HYBRID_POOL` nearest units by cosine and scores each

    score = cosine + LEXICAL_WEIGHT × BM25 / (best BM25 in the pool)

so a hit's score is in [-1, 1 + LEXICAL_WEIGHT] and ties with cosine order when no
candidate shares a query term. ``LEXICAL_WEIGHT`` was chosen on the two HaluMem
development users, each choice checked on the other user (README, "Hybrid search").

>>> texts = ["Ana is a Female.", "Ana works as a nurse."]
>>> [texts[i] for i, *_ in hybrid_rank("What is Ana's job? Where does she work?", texts,
...                                    [0.80, 0.74], top_k=1)]
['Ana works as a nurse.']
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from memos.lexical import BM25Index

__all__ = ["HYBRID_POOL", "LEXICAL_WEIGHT", "hybrid_rank"]

#: Nearest units by cosine that the lexical score re-ranks (at least ``top_k``).
HYBRID_POOL = 100
#: Weight of the pool-normalised BM25 score next to cosine.
LEXICAL_WEIGHT = 0.3


def hybrid_rank(query: str, texts: Sequence[str], cosine: Sequence[float], *, top_k: int,
                weight: float = LEXICAL_WEIGHT) -> list[tuple[int, float, float]]:
    """The ``top_k`` best of a pool of nearest units (``texts[i]`` with cosine similarity
    ``cosine[i]`` to the query) as ``(i, score, lexical)``, best first: ``lexical`` is text
    ``i``'s BM25 over the pool divided by the pool's best (in [0, 1]; 0 for every text when
    none shares a query term), ``score = cosine + weight × lexical``. Ties keep the pool's
    order."""
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if weight < 0:
        raise ValueError(f"weight must be >= 0, got {weight}")
    if len(texts) != len(cosine):
        raise ValueError(f"{len(texts)} texts but {len(cosine)} cosine scores")
    if not texts:
        return []
    bm25 = BM25Index()
    bm25.add(list(range(len(texts))), list(texts))
    lexical = np.zeros(len(texts))
    for i, s in bm25.search(query, top_k=len(texts)):
        lexical[i] = s
    if lexical.max() > 0:
        lexical /= lexical.max()
    fused = np.asarray(cosine, dtype=np.float64) + weight * lexical
    order = np.argsort(-fused, kind="stable")[:top_k]
    return [(int(i), float(fused[i]), float(lexical[i])) for i in order]
