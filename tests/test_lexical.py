"""BM25 index: stemming, add/replace/remove kept in sync, lazy rebuilds."""

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


def test_rebuild_is_lazy():
    index = BM25Index()
    index.add([1, 2], ["dog", "cat"])
    index.search("dog")
    index.search("cat")
    assert index.rebuilds == 1
    index.add([3], ["bird"])
    index.search("bird")
    assert index.rebuilds == 2


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
