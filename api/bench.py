"""The app ``memos bench needle`` serves: the usual app over a cube whose ingest embedder
reads precomputed vectors first (:class:`memos.bench.needle.CachedEmbedder`).

Started by import string (``uvicorn api.bench:create_bench_app --factory``) with
``MEMOS_BENCH_VECTOR_CACHE`` naming the cache files (``os.pathsep``-separated ``.npy``
paths, each beside its ``.json`` text list); everything else comes from the usual
``MEMOS_*`` settings. Queries are embedded by the real embedder (only ingest reads the
cache), so search latency is what a user sees.
"""

from __future__ import annotations

import os

from fastapi import FastAPI

from api.main import create_app
from memos.bench.needle import CachedEmbedder, VectorCache
from memos.config import get_settings
from memos.service import open_cube


def create_bench_app() -> FastAPI:
    settings = get_settings()
    cube = open_cube(settings)
    paths = [p for p in os.environ.get("MEMOS_BENCH_VECTOR_CACHE", "").split(os.pathsep) if p]
    cube.embedder = CachedEmbedder(cube.embedder, [VectorCache.load(p) for p in paths])
    return create_app(settings, service=cube)
