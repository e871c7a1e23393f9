"""How a query is answered: open this package first.

- :mod:`memos.retrieval.search` — :class:`Searcher`: a search request against a cube, in
  router mode (multi-granularity) or dense mode (the vector index), and ``/context``'s
  prompt packing within a token budget;
- :mod:`memos.retrieval.cache` — :class:`RouterCache`: one :class:`GranularIndex` per cube,
  rebuilt from SQL when stale and kept current after each write;
- :mod:`memos.retrieval.granular_index` — the in-memory multi-granularity index: dense +
  BM25 channels per granularity, the entropy router, time and speaker priors, spreading
  over the association graph, session ranking;
- :mod:`memos.retrieval.router` — the entropy router's pure functions (standardise, softmax,
  normalised entropy, confidence weights, fusion, personalized PageRank).

BM25 itself is :mod:`memos.lexical` and date matching :mod:`memos.temporal`, below this
package, since derivation and extraction use them too. Importing this package does no work.
"""
