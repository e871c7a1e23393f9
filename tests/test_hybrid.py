"""Hybrid search: the vector index's nearest units re-ranked by cosine plus BM25 in the pool."""

from __future__ import annotations

import doctest

import pytest
from fastapi.testclient import TestClient

import memos.retrieval.hybrid as hybrid_module
from memos.retrieval.hybrid import HYBRID_POOL, LEXICAL_WEIGHT, hybrid_rank

#: One person's facts, every one naming her: her name is what their vectors share.
FACTS = [
    "Maja Lindqvist is a woman.",
    "Maja Lindqvist is 52 years old.",
    "Maja Lindqvist lives in Uppsala.",
    "Maja Lindqvist is married.",
    "Maja Lindqvist has an INTJ personality.",
    "Maja Lindqvist's mother was born in 1948.",
    "Maja Lindqvist holds a master's degree in chemistry.",
    "Maja Lindqvist's employer is Norrsken Labs, where her job title is Principal Chemist.",
    "Maja Lindqvist enjoys cross-country skiing in winter.",
    "Maja Lindqvist dislikes crowded shopping malls.",
]
QUESTION = "What is Maja Lindqvist's job title?"
ANSWER = FACTS[7]


def test_the_module_examples_hold() -> None:
    assert doctest.testmod(hybrid_module).failed == 0


def test_a_term_every_candidate_shares_adds_nothing_and_a_rare_one_decides() -> None:
    texts = ["Ana likes tea.", "Ana likes the sea.", "Ana plays chess on Sundays."]
    ranked = hybrid_rank("When does Ana play chess?", texts, [0.9, 0.8, 0.7], top_k=3)
    assert [i for i, *_ in ranked] == [2, 0, 1]
    first = ranked[0]
    assert first[2] == pytest.approx(1.0)  # the best lexical score of the pool
    assert first[1] == pytest.approx(0.7 + LEXICAL_WEIGHT)


def test_without_a_shared_term_the_cosine_order_stands() -> None:
    ranked = hybrid_rank("zeppelin", ["a", "b b", "c"], [0.2, 0.9, 0.5], top_k=2)
    assert [(i, s, lex) for i, s, lex in ranked] == [(1, 0.9, 0.0), (2, 0.5, 0.0)]
    assert hybrid_rank("zeppelin", [], [], top_k=3) == []


@pytest.mark.parametrize("kwargs, message", [
    ({"top_k": 0}, "top_k must be >= 1"),
    ({"top_k": 1, "weight": -0.1}, "weight must be >= 0"),
])
def test_bad_arguments_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        hybrid_rank("q", ["a"], [0.1], **kwargs)
    with pytest.raises(ValueError, match="2 texts but 1 cosine"):
        hybrid_rank("q", ["a", "b"], [0.1], top_k=1)


def _cube_of_facts(client: TestClient) -> None:
    assert client.post("/v1/cubes", json={"id": "maja"}).status_code == 201
    for text in FACTS:
        r = client.post("/v1/cubes/maja/memories", json={"text": text, "granularity": "fact"})
        assert r.status_code == 201, r.text


def test_fact_search_finds_the_fact_the_name_hides_from_cosine(client: TestClient) -> None:
    """With the real embedder, cosine ranks the short facts (mostly the name) above the job;
    auto search over facts is hybrid and ranks the job first."""
    _cube_of_facts(client)
    body = {"query": QUESTION, "top_k": 3, "filters": {"granularity": ["fact"]},
            "explain": True}
    dense = client.post("/v1/cubes/maja/search", json={**body, "mode": "dense"}).json()
    assert (dense["mode"], dense["score_kind"]) == ("dense", "cosine")
    assert dense["hits"][0]["unit"]["text"] != ANSWER  # what this test guards against

    auto = client.post("/v1/cubes/maja/search", json=body)
    assert auto.status_code == 200, auto.text
    found = auto.json()
    assert (found["mode"], found["score_kind"]) == ("hybrid", "hybrid")
    assert found["hits"][0]["unit"]["text"] == ANSWER
    for hit in found["hits"]:
        explain = hit["explain"]
        assert 0.0 <= explain["lexical"] <= 1.0
        assert hit["score"] == pytest.approx(explain["dense"] + LEXICAL_WEIGHT * explain["lexical"])
        assert -1.0 <= hit["score"] <= 1.0 + LEXICAL_WEIGHT
    stages = dict(part.split(";dur=") for part in auto.headers["Server-Timing"].split(", "))
    assert {"index", "lexical"} <= set(stages)
    # asked for by name, and through /context (which an agent reads), the same ranking
    named = client.post("/v1/cubes/maja/search", json={**body, "mode": "hybrid"}).json()
    assert [h["unit"]["id"] for h in named["hits"]] == [h["unit"]["id"] for h in found["hits"]]
    context = client.post("/v1/cubes/maja/context", json={
        "query": QUESTION, "top_k": 3, "filters": {"granularity": ["fact"]}}).json()
    assert ANSWER in context["text"].splitlines()[0]


def test_the_exact_scan_is_re_ranked_too(client: TestClient) -> None:
    """``as_of`` searches scan SQL instead of the index: hybrid re-ranks that pool alike."""
    _cube_of_facts(client)
    r = client.post("/v1/cubes/maja/search", json={
        "query": QUESTION, "top_k": 2, "filters": {"granularity": ["fact"],
                                                    "as_of": "2999-01-01T00:00:00Z"}})
    assert r.status_code == 200, r.text
    assert r.json()["mode"] == "hybrid"
    assert r.json()["hits"][0]["unit"]["text"] == ANSWER


def test_the_pool_is_wider_than_top_k(client: TestClient) -> None:
    """top_k 1 still re-ranks the HYBRID_POOL nearest: the answer is not cosine's first."""
    _cube_of_facts(client)
    body = {"query": QUESTION, "top_k": 1, "filters": {"granularity": ["fact"]}}
    dense = client.post("/v1/cubes/maja/search", json={**body, "mode": "dense"}).json()
    assert dense["hits"][0]["unit"]["text"] != ANSWER
    assert HYBRID_POOL > len(FACTS)
    hybrid = client.post("/v1/cubes/maja/search", json=body).json()
    assert [h["unit"]["text"] for h in hybrid["hits"]] == [ANSWER]


def test_a_cube_that_names_its_user_embeds_the_query_without_the_name(
        client: TestClient) -> None:
    """``metadata.user_name``: the query is embedded with the name read as "the user", so
    cosine alone stops ranking the facts that are mostly name first."""
    assert client.post("/v1/cubes", json={
        "id": "named", "metadata": {"user_name": "Maja Lindqvist"}}).status_code == 201
    for text in FACTS:
        r = client.post("/v1/cubes/named/memories", json={"text": text, "granularity": "fact"})
        assert r.status_code == 201, r.text
    body = {"query": QUESTION, "top_k": 3, "filters": {"granularity": ["fact"]},
            "mode": "dense"}
    dense = client.post("/v1/cubes/named/search", json=body).json()
    assert dense["hits"][0]["unit"]["text"] == ANSWER
    # the query is still read as written where words are compared: coverage counts it
    assert dense["coverage"] > 0
