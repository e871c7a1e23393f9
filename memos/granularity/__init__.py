"""Multi-granularity memory, the pure parts: GMM association and clustering
(:mod:`memos.granularity.gmm`) and the session, summary and keyword unit builders
(:mod:`memos.granularity.units`). The index that routes over them is
:mod:`memos.retrieval.granular_index`. This package file does no work at import time.
"""
