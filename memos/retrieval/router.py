"""Entropy router and graph spreading: pure functions over score arrays.

A *channel* is one granularity's relevance scores for a query (higher = more relevant).
:func:`normalized_entropy` turns a channel into ``H(softmax(z/λ)) / log N`` in [0, 1],
where ``z`` is the standardised score: dividing by ``log N`` matters because raw entropy
grows with the number of units, and the turn level has ~20x more units than the session
level. :func:`confidence_weights` maps entropies to non-negative weights summing to 1,
``w ∝ prior · exp(-H/τ)``; MemGAS's ``(1-H)/Σ(1-H)`` is never used (it goes negative once
H > 1 nat). :func:`personalized_pagerank` spreads a seed distribution over a graph.

>>> w = confidence_weights({"turn": 0.2, "session": 0.9}, tau=0.25)
>>> round(sum(w.values()), 6), w["turn"] > w["session"]
(1.0, True)
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp

__all__ = [
    "standardize",
    "softmax",
    "normalized_entropy",
    "confidence_weights",
    "fuse",
    "personalized_pagerank",
    "row_normalize",
    "transition_matrix",
]


def standardize(scores: np.ndarray) -> np.ndarray:
    """z-scores ``(x - mean) / std``; a constant (or empty) array maps to zeros.

    Puts BM25 (unbounded) and cosine (in [-1, 1]) on one scale before mixing.
    """
    x = np.asarray(scores, dtype=np.float64)
    if x.size == 0:
        return x
    d = x - x.mean()
    sd = float(np.sqrt(np.add.reduce(d * d) / x.size))  # x.std(), without a second mean
    return d / sd if sd > 1e-12 else np.zeros_like(x)


def softmax(scores: np.ndarray, *, temperature: float = 1.0) -> np.ndarray:
    """``softmax(scores / temperature)``; higher score → more probability mass."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    x = np.asarray(scores, dtype=np.float64) / temperature
    if x.size == 0:
        return x
    e = np.exp(x - x.max())
    return e / e.sum()


def normalized_entropy(scores: np.ndarray, *, temperature: float = 1.0) -> float:
    """Entropy of ``softmax(standardize(scores) / temperature)`` divided by ``log N``.

    0 = all mass on one unit (a confident channel), 1 = uniform (no information). A channel
    with fewer than 2 units carries no ranking information and returns 1.0.
    """
    x = np.asarray(scores, dtype=np.float64)
    if x.size < 2:
        return 1.0
    p = softmax(standardize(x), temperature=temperature)
    nz = p[p > 0]
    h = float(-(nz * np.log(nz)).sum())
    return float(np.clip(h / np.log(x.size), 0.0, 1.0))


def confidence_weights(entropies: Mapping[str, float], *, tau: float = 0.25,
                       prior: Mapping[str, float] | None = None) -> dict[str, float]:
    """Channel weights ``w_g ∝ prior_g · exp(-H_g / τ)``: non-negative, summing to 1.

    ``entropies`` are normalised entropies in [0, 1] (see :func:`normalized_entropy`).
    Small ``τ`` trusts the most peaked channel; large ``τ`` falls back to ``prior``
    (uniform when omitted). Channels with prior 0 get weight 0.
    """
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if not entropies:
        raise ValueError("need at least one channel")
    names = list(entropies)
    h = np.array([float(entropies[n]) for n in names])
    if not np.all(np.isfinite(h)):
        raise ValueError("entropies must be finite")
    pri = np.array([float((prior or {}).get(n, 1.0)) for n in names])
    if np.any(pri < 0) or not np.all(np.isfinite(pri)) or pri.sum() <= 0:
        raise ValueError("prior weights must be finite, >= 0 and not all 0")
    logits = np.where(pri > 0, np.log(np.where(pri > 0, pri, 1.0)) - h / tau, -np.inf)
    w = np.exp(logits - logits.max())
    w /= w.sum()
    return {n: float(x) for n, x in zip(names, w, strict=True)}


def fuse(dense: np.ndarray, lexical: np.ndarray, *,
         lexical_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """Mix standardised dense and lexical scores of the same units.

    Returns ``(fused, lexical_share)`` where ``fused = (1-a)·z(dense) + a·z(lexical)`` and
    ``lexical_share`` in [0, 1] is the lexical part's share of the absolute contributions
    (for explanations).
    """
    if not 0.0 <= lexical_weight <= 1.0:
        raise ValueError(f"lexical_weight must be in [0, 1], got {lexical_weight}")
    d, lx = np.asarray(dense), np.asarray(lexical)
    if d.shape != lx.shape:
        raise ValueError(f"shape mismatch: dense {d.shape} vs lexical {lx.shape}")
    zd = (1 - lexical_weight) * standardize(d)
    zl = lexical_weight * standardize(lx)
    total = np.abs(zd) + np.abs(zl)
    share = np.divide(np.abs(zl), total, out=np.full(total.shape, lexical_weight),
                      where=total > 1e-12)
    return zd + zl, share


def row_normalize(adj: sp.spmatrix) -> sp.csr_matrix:
    """Row-stochastic copy of a non-negative adjacency matrix (empty rows stay empty)."""
    a = sp.csr_matrix(adj, dtype=np.float64)
    if a.shape[0] != a.shape[1]:
        raise ValueError(f"adjacency must be square, got {a.shape}")
    if a.nnz and a.data.min() < 0:
        raise ValueError("adjacency weights must be >= 0")
    deg = np.asarray(a.sum(axis=1)).ravel()
    inv = np.divide(1.0, deg, out=np.zeros_like(deg), where=deg > 0)
    return sp.diags(inv) @ a


def transition_matrix(adj: sp.spmatrix) -> sp.csr_matrix:
    """``Pᵀ`` for :func:`personalized_pagerank`, to compute once per graph and reuse."""
    return row_normalize(adj).T.tocsr()


def personalized_pagerank(adj: sp.spmatrix | None, seed: np.ndarray, *, damping: float = 0.85,
                          max_iter: int = 50, tol: float = 1e-8,
                          transition: sp.csr_matrix | None = None) -> np.ndarray:
    """Personalized PageRank by power iteration: ``r = (1-d)·s + d·Pᵀ r``.

    ``adj[i, j]`` >= 0 is the weight of edge i → j (make it symmetric for an undirected
    graph), or ``transition`` = :func:`transition_matrix` of it, precomputed; ``seed`` >= 0
    is the restart distribution (normalised here). Mass reaching a
    node without out-edges returns to the seed, so the result sums to 1. Higher = closer
    to the seed.

    >>> import scipy.sparse as sp
    >>> a = sp.csr_matrix(np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=float))
    >>> r = personalized_pagerank(a, np.array([1.0, 0, 0]), damping=0.5)
    >>> bool(r[0] > r[1] > r[2])
    True
    """
    if not 0.0 <= damping < 1.0:
        raise ValueError(f"damping must be in [0, 1), got {damping}")
    if transition is None:
        if adj is None:
            raise ValueError("give adj or transition")
        transition = transition_matrix(adj)
    s = np.asarray(seed, dtype=np.float64).ravel()
    n = transition.shape[0]
    if s.shape != (n,):
        raise ValueError(f"seed must have shape ({n},), got {s.shape}")
    if np.any(s < 0) or s.sum() <= 0:
        raise ValueError("seed must be non-negative with positive sum")
    s = s / s.sum()
    pt = transition
    r = s.copy()
    restart = (1 - damping) * s
    for _ in range(max_iter):
        nxt = restart + damping * (pt @ r)
        nxt += (1.0 - nxt.sum()) * s  # dangling mass restarts at the seed
        if np.abs(nxt - r).sum() < tol:
            return nxt
        r = nxt
    return r
