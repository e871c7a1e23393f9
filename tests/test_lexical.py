"""BM25 index: stemming, add/replace/remove kept in sync, incremental statistics."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memos.lexical import Analyzer, BM25Index

WORDS = ["berlin", "dog", "painting", "adoption", "guitar", "hiking", "camping", "violin"]


def test_analyzer_stems_and_drops_stopwords():
    assert Analyzer().tokens("The dogs were running to the parks") == ["dog", "run", "park"]
    assert Analyzer().tokens("") == []


def test_search_matches_stemmed_forms():
    index = BM25Index()
    index.add([10, 20, 30], ["I moved to Berlin", "We adopted two dogs", "Painting sunsets"])
    assert index.search("moving berlin", top_k=3)[0][0] == 10
    assert index.search("dog adoption", top_k=1)[0][0] == 20
    assert index.search("quantum", top_k=3) == []


def test_update_replaces_text():
    index = BM25Index()
    index.add([1, 2], ["guitar lessons", "violin concert"])
    index.add([1], ["camping trip"])
    assert [i for i, _ in index.search("guitar", top_k=5)] == []
    assert index.search("camping", top_k=5)[0][0] == 1
    assert len(index) == 2


def test_removed_id_is_never_returned():
    index = BM25Index()
    index.add([1, 2, 3], ["dog park", "dog walk", "cat nap"])
    assert {i for i, _ in index.search("dog", top_k=5)} == {1, 2}
    assert index.remove([1, 99]) == 1
    assert [i for i, _ in index.search("dog", top_k=5)] == [2]
    ids, scores = index.scores("dog")
    assert ids.tolist() == [2, 3] and scores.shape == (2,)
    index.remove([2, 3])
    assert index.search("dog", top_k=5) == []
    assert index.scores("dog")[0].size == 0


def test_writes_never_make_a_query_reindex_and_removals_compact_amortised():
    index = BM25Index()
    index.add([1, 2], ["dog", "cat"])
    index.search("dog")
    index.add([3], ["bird"])
    assert index.search("bird")[0][0] == 3
    assert index.rebuilds == 0  # statistics were updated in place
    ids = list(range(10, 3010))
    index.add(ids, [f"word{i % 7} filler" for i in ids])
    index.remove(ids[:2000])
    assert index.rebuilds == 1 and index._n_rows == len(index)  # dead rows dropped once
    assert {i for i, _ in index.search("word3", top_k=5000)} <= set(ids[2000:])


def test_scores_equal_bm25s_lucene_on_the_same_documents():
    import bm25s

    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(60)]
    docs = {int(i): " ".join(rng.choice(vocab, rng.integers(1, 12))) for i in
            rng.choice(10_000, 300, replace=False)}
    index = BM25Index()
    index.add(list(docs)[:150], list(docs.values())[:150])
    index.remove(list(docs)[:20])  # dead rows, then more adds and a replacement
    index.add(list(docs)[150:], list(docs.values())[150:])
    live = {k: v for k, v in docs.items() if k not in list(docs)[:20]}
    live[next(iter(live))] = "w1 w1 w2"
    index.add([next(iter(live))], ["w1 w1 w2"])
    ids = sorted(live)
    model = bm25s.BM25(k1=1.2, b=0.75, method="lucene")
    model.index([index.analyzer.tokens(live[i]) for i in ids], show_progress=False)
    for query in (["w1"], ["w2", "w3", "w2"], ["w59", "w0"]):
        got_ids, got = index.scores_tokens(query)
        assert got_ids.tolist() == ids
        np.testing.assert_allclose(got, model.get_scores(query), rtol=1e-5, atol=1e-6)
        m_ids, m = index.matches(query)
        assert m_ids.tolist() == [i for i, x in zip(ids, got, strict=True) if x > 0]
        np.testing.assert_allclose(m, got[got > 0], rtol=1e-6)


def test_bad_input():
    index = BM25Index()
    with pytest.raises(ValueError):
        index.add([1, 2], ["only one"])
    with pytest.raises(ValueError):
        index.search("x", top_k=0)
    with pytest.raises(ValueError):
        BM25Index(k1=0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 15),
                          st.lists(st.sampled_from(WORDS), min_size=1, max_size=4)),
                max_size=30),
       st.sampled_from(WORDS))
def test_in_sync_with_fresh_index_after_any_edit_sequence(ops, query):
    live: dict[int, str] = {}
    index = BM25Index()
    for is_add, doc_id, words in ops:
        if is_add:
            live[doc_id] = " ".join(words)
            index.add([doc_id], [live[doc_id]])
        else:
            live.pop(doc_id, None)
            index.remove([doc_id])
        index.scores(query)  # interleave queries with edits
    fresh = BM25Index()
    fresh.add(list(live), list(live.values()))
    got, want = index.scores(query), fresh.scores(query)
    assert got[0].tolist() == sorted(live)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5)
    assert {i for i, _ in index.search(query, top_k=20)} <= set(live)
