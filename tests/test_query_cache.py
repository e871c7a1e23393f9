"""The query-embedding cache: repeated queries skip the embedder, never across models."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from memos.embed import HashingEmbedder, QueryCache


class CountingEmbedder(HashingEmbedder):
    def __init__(self, name: str = "counting") -> None:
        super().__init__()
        self.name = name
        self.calls = 0

    def embed(self, texts):  # type: ignore[no-untyped-def]
        self.calls += 1
        return super().embed(texts)


def test_repeated_queries_are_embedded_once_and_come_back_read_only() -> None:
    embedder = CountingEmbedder()
    cache = QueryCache(embedder, size=2)
    first = cache.embed("where does Ana live?")
    assert np.array_equal(cache.embed("where does Ana live?"), first)
    assert embedder.calls == 1 and (cache.hits, cache.misses) == (1, 1)
    with pytest.raises(ValueError):
        first[0] = 1.0  # shared by every hit: nobody may change it


def test_least_recently_used_goes_first() -> None:
    embedder = CountingEmbedder()
    cache = QueryCache(embedder, size=2)
    for text in ("a", "b", "a", "c"):  # "b" is the least recently used when "c" arrives
        cache.embed(text)
    calls = embedder.calls
    cache.embed("a")
    cache.embed("c")
    assert embedder.calls == calls
    cache.embed("b")
    assert embedder.calls == calls + 1


def test_size_zero_disables_and_keys_include_the_model() -> None:
    embedder = CountingEmbedder()
    off = QueryCache(embedder, size=0)
    off.embed("x")
    off.embed("x")
    assert embedder.calls == 2
    cache = QueryCache(embedder, size=8)
    cache.embed("x")
    embedder.name = "another-model"  # a different model never gets the old vector
    cache.embed("x")
    assert embedder.calls == 4
    with pytest.raises(ValueError):
        QueryCache(embedder, size=-1)


def test_concurrent_searches_share_the_cache() -> None:
    embedder = CountingEmbedder()
    cache = QueryCache(embedder, size=64)
    results: list[np.ndarray] = []

    def worker() -> None:
        for i in range(50):
            results.append(cache.embed(f"q{i % 10}"))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 200 and cache.hits + cache.misses == 200
    assert embedder.calls <= 40 and len(cache._vectors) == 10


def test_a_search_reuses_the_query_vector(service) -> None:
    from memos.types import CubeCreate, MessagesIngest, SearchRequest

    service.create_cube(CubeCreate(id="c"), tenant="t")
    service.ingest("c", MessagesIngest(session_id="s", messages=[
        {"role": "user", "content": "I adopted a dog named Rex."}]), tenant="t")
    service.search("c", SearchRequest(query="Ana's dog"), tenant="t")
    service.search("c", SearchRequest(query="Ana's dog"), tenant="t")
    assert service.searcher.queries.hits == 1
