"""Router maths: normalised entropy, confidence weights, fusion, personalized PageRank."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from memos.retrieval.router import (
    confidence_weights,
    fuse,
    normalized_entropy,
    personalized_pagerank,
    softmax,
    standardize,
)

entropy = st.floats(0.0, 1.0, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["turn", "context", "session", "summary", "keyword"]),
                       entropy, min_size=1),
       st.floats(0.01, 100.0), st.lists(st.floats(0.0, 5.0), min_size=5, max_size=5))
def test_weights_are_non_negative_and_sum_to_one(ent, tau, prior_values):
    prior = dict(zip(["turn", "context", "session", "summary", "keyword"], prior_values,
                     strict=True))
    if sum(prior[k] for k in ent) <= 0:
        prior = None
    w = confidence_weights(ent, tau=tau, prior=prior)
    assert set(w) == set(ent)
    assert all(v >= 0 for v in w.values())
    assert sum(w.values()) == pytest.approx(1.0)


def test_lower_entropy_gets_more_weight_and_raw_entropy_never_goes_negative():
    w = confidence_weights({"turn": 0.3, "session": 0.8}, tau=0.25)
    assert w["turn"] > w["session"] > 0
    # MemGAS's (1-H)/sum(1-H) would go negative for H > 1 nat; entropies are normalised here
    h_turn = normalized_entropy(np.random.default_rng(0).normal(size=600))
    h_sess = normalized_entropy(np.random.default_rng(1).normal(size=30))
    assert 0 <= h_turn <= 1 and 0 <= h_sess <= 1


def test_normalized_entropy_extremes():
    assert normalized_entropy(np.ones(50)) == pytest.approx(1.0)
    peaked = np.zeros(50)
    peaked[3] = 100.0
    assert normalized_entropy(peaked, temperature=0.1) < 0.05
    assert normalized_entropy(np.array([1.0])) == 1.0


def test_bad_router_input():
    with pytest.raises(ValueError):
        confidence_weights({"a": 0.1}, tau=0)
    with pytest.raises(ValueError):
        confidence_weights({})
    with pytest.raises(ValueError):
        confidence_weights({"a": 0.1}, prior={"a": -1.0})
    with pytest.raises(ValueError):
        softmax(np.ones(3), temperature=0)


def test_fuse_and_standardize():
    fused, share = fuse(np.array([0.1, 0.5, 0.9]), np.array([0.0, 0.0, 3.0]), lexical_weight=0.5)
    assert fused.argmax() == 2
    assert np.all((share >= 0) & (share <= 1))
    assert standardize(np.ones(4)).tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError):
        fuse(np.ones(2), np.ones(3), lexical_weight=0.5)


def test_ppr_on_toy_graph_matches_closed_form():
    # 0 - 1 - 2 - 3 chain plus a 4 - 5 component
    edges = [(0, 1), (1, 2), (2, 3), (4, 5)]
    a = np.zeros((6, 6))
    for i, j in edges:
        a[i, j] = a[j, i] = 1.0
    seed = np.array([1.0, 0, 0, 0, 0, 0])
    r = personalized_pagerank(sp.csr_matrix(a), seed, damping=0.85, tol=1e-12, max_iter=500)
    assert r.sum() == pytest.approx(1.0)
    assert r[1] > r[2] > r[3] > 0 and r[0] > r[2]
    assert r[4] == r[5] == 0
    p = a / a.sum(axis=1, keepdims=True)
    exact = 0.15 * np.linalg.solve(np.eye(6) - 0.85 * p.T, seed)
    np.testing.assert_allclose(r, exact, atol=1e-8)


def test_ppr_dangling_mass_returns_to_seed():
    a = sp.csr_matrix(np.array([[0, 1.0, 0], [0, 0, 0], [0, 0, 0]]))  # 1 has no out-edges
    r = personalized_pagerank(a, np.array([1.0, 0, 0]), damping=0.5)
    assert r.sum() == pytest.approx(1.0)
    assert r[2] == 0 and r[0] > r[1] > 0
    with pytest.raises(ValueError):
        personalized_pagerank(a, np.zeros(3))
    with pytest.raises(ValueError):
        personalized_pagerank(a, np.ones(3), damping=1.0)


def test_a_cube_past_the_exhaustive_size_routes_a_candidate_pool(service, client) -> None:
    """Past ``exhaustive_max_turns`` the router scores the vector index's nearest units
    (FAISS or pgvector) plus BM25's best: the needle is found, the pool stage is timed."""
    from memos.retrieval.granular_index import RouterConfig

    assert service.router is not None
    service.router.config = RouterConfig(exhaustive_max_turns=5, dense_pool=4,
                                         lexical_pool=4, session_pool=1)
    client.post("/v1/cubes", json={"id": "big"})
    for s in range(4):
        msgs = [{"role": "user", "speaker": "Ana",
                 "content": f"Session {s} small talk number {i} about the weather."}
                for i in range(5)]
        if s == 2:
            msgs[3]["content"] = "My grandmother keeps a zeppelin in Reykjavik."
        client.post("/v1/cubes/big/messages", json={"session_id": f"s{s}", "sync": True,
                                                    "messages": msgs})
    r = client.post("/v1/cubes/big/search", json={"query": "Where is the zeppelin?",
                                                  "top_k": 3})
    body = r.json()
    assert body["mode"] == "router"
    assert "zeppelin" in body["hits"][0]["unit"]["text"]
    stages = dict(part.split(";dur=") for part in r.headers["Server-Timing"].split(", "))
    assert "ann" in stages and "router" in stages
    dense_only = client.post("/v1/cubes/big/search", json={"query": "Where is the zeppelin?",
                                                           "mode": "dense"}).json()
    assert dense_only["mode"] == "dense"


def test_server_timing_stages_add_up_to_the_total(client) -> None:
    client.post("/v1/cubes", json={"id": "st"})
    client.post("/v1/cubes/st/messages", json={"session_id": "s1", "sync": True, "messages": [
        {"role": "user", "speaker": "Ana", "content": f"Turn {i} about the canal."}
        for i in range(6)]})
    for mode in ("router", "dense", "hybrid"):
        r = client.post("/v1/cubes/st/search", json={"query": "the canal", "mode": mode})
        assert r.status_code == 200
        stages = {name: float(ms) for name, ms in (
            part.split(";dur=") for part in r.headers["Server-Timing"].split(", "))}
        total = stages.pop("total")
        assert {"db", "embed", "serialize", "other"} <= set(stages)
        assert ("router" if mode == "router" else "index") in stages
        assert ("lexical" in stages) is (mode == "hybrid")
        assert all(ms >= 0 for ms in stages.values())
        assert sum(stages.values()) == pytest.approx(total, abs=0.011 * len(stages))
        assert r.json()["took_ms"] <= total + 0.01


def test_the_memory_guard_routes_up_to_max_units_and_counts_no_rows_per_write(
        service, client) -> None:
    """``MEMOS_ROUTER_MAX_UNITS``: a cube with more turns is searched by the vector index
    alone; while the router cache is current its turn count answers the guard, so a write
    runs no O(turns) count in SQL."""
    from sqlalchemy import event

    assert service.router is not None
    service.router.max_units = 8
    client.post("/v1/cubes", json={"id": "g"})

    def add(session_id: str, n: int) -> None:
        client.post("/v1/cubes/g/messages", json={"session_id": session_id, "sync": True,
                                                  "messages": [
            {"role": "user", "speaker": "Ana", "content": f"{session_id} turn {i} at the canal."}
            for i in range(n)]})

    add("s1", 4)
    assert client.post("/v1/cubes/g/search", json={"query": "canal"}).json()["mode"] == "router"
    counts: list[str] = []

    def seen(conn, cursor, statement, *args) -> None:
        if "count(" in statement.lower() and "units" in statement.lower():
            counts.append(statement)

    engine = service.store.engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        add("s2", 4)  # 8 turns: still within the guard
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert counts == []
    assert client.post("/v1/cubes/g/search", json={"query": "canal"}).json()["mode"] == "router"
    add("s3", 2)  # 10 turns: past it
    assert client.post("/v1/cubes/g/search", json={"query": "canal"}).json()["mode"] == "hybrid"
