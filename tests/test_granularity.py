"""GMM association and clustering, derived units, and the routed GranularIndex."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memos.embed import HashingEmbedder
from memos.granularity import gmm
from memos.granularity.units import (
    SUMMARY_PROMPT_VERSION,
    TermStats,
    derive_units,
    llm_summary_and_keywords,
    mmr_select,
)
from memos.lexical import Analyzer
from memos.retrieval.granular_index import GranularIndex, IndexUnit, RouterConfig

# ---------------------------------------------------------------------------- GMM accept
BIMODAL = np.array([0.91, 0.89, 0.87, 0.86, 0.41, 0.39, 0.36, 0.33, 0.31, 0.30])


def test_accepts_the_high_component():
    assert gmm.gmm_accept(BIMODAL).tolist() == [True] * 4 + [False] * 6
    # unsorted input: decisions follow the values, not the positions
    perm = np.random.default_rng(0).permutation(len(BIMODAL))
    assert gmm.gmm_accept(BIMODAL[perm]).tolist() == (BIMODAL[perm] > 0.8).tolist()


def test_sklearn_backend_agrees_on_clear_cases():
    assert gmm.gmm_accept(BIMODAL, backend="sklearn").tolist() == \
        gmm.gmm_accept(BIMODAL).tolist()


def test_too_few_scores_use_the_percentile_rule():
    assert gmm.gmm_accept(np.array([0.9, 0.5, 0.1])).tolist() == [True, False, False]
    assert gmm.gmm_accept(np.array([0.2])).tolist() == [True]
    assert gmm.gmm_accept(np.array([])).tolist() == []


def test_identical_scores_accept_all():
    assert gmm.gmm_accept(np.full(8, 0.7)).all()
    assert gmm.gmm_accept(np.array([0.7, 0.7, 0.7, 0.7, 0.7, 0.7 + 1e-5])).all()


def test_accept_rejects_bad_input():
    with pytest.raises(ValueError):
        gmm.gmm_accept(np.array([0.1, np.nan, 0.3, 0.4, 0.5]))
    with pytest.raises(ValueError):
        gmm.gmm_accept(BIMODAL, backend="nope")
    with pytest.raises(ValueError):
        gmm.gmm_accept(BIMODAL, min_scores=1)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-1.0, 1.0, allow_nan=False), min_size=1, max_size=15))
def test_accepted_set_is_an_upper_set(values):
    s = np.array(values)
    mask = gmm.gmm_accept(s)
    assert mask.any()
    if (~mask).any():
        assert s[mask].min() > s[~mask].max()


def test_batch_fit_equals_single_fits():
    rng = np.random.default_rng(3)
    rows = np.sort(rng.random((25, 10)), axis=1)[:, ::-1]
    batch = gmm.gmm_accept(rows)
    single = np.stack([gmm.gmm_accept(r) for r in rows])
    assert (batch == single).all()


def test_fit_two_gaussians_recovers_means():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0.2, 0.02, 50), rng.normal(0.8, 0.02, 30)])
    w, mu, var = gmm.fit_two_gaussians(x)
    assert mu[0] == pytest.approx(0.2, abs=0.02) and mu[1] == pytest.approx(0.8, abs=0.02)
    assert w[1] == pytest.approx(30 / 80, abs=0.02)


def test_associate_links_to_the_similar_units():
    rng = np.random.default_rng(2)
    base = rng.normal(size=64)
    near = base + rng.normal(scale=0.1, size=(3, 64))
    far = rng.normal(size=(7, 64))  # cosine to base ~ N(0, 1/8)
    cands = np.vstack([near, far])
    cands /= np.linalg.norm(cands, axis=1, keepdims=True)
    links = gmm.associate(100, base / np.linalg.norm(base), np.arange(10), cands, top_k=10)
    assert {link.dst for link in links} == {0, 1, 2}
    assert all(link.src == 100 and 0 <= link.weight <= 1 for link in links)
    assert gmm.associate(1, base, np.array([1]), base[None, :]) == []  # never itself


# ---------------------------------------------------------------------------- clustering
def _blobs(n_per: int = 40, k: int = 3, dim: int = 24, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim)) * 3
    x = np.vstack([c + rng.normal(scale=0.3, size=(n_per, dim)) for c in centres])
    return x / np.linalg.norm(x, axis=1, keepdims=True), np.repeat(np.arange(k), n_per)


def test_bic_finds_the_blobs_and_routing_probes_the_right_cluster():
    x, truth = _blobs()
    model = gmm.fit_clusters(np.arange(len(x)), x, dims=8, max_components=8,
                             min_cluster_size=5)
    assert model.n_components == 3
    clusters = model.clusters({i: x[i] for i in range(len(x))})
    assert sorted(len(c.members) for c in clusters) == [40, 40, 40]
    for c in clusters:  # each cluster is one blob
        assert len({int(truth[m]) for m in c.members}) == 1
        assert np.linalg.norm(c.centroid) == pytest.approx(1.0, abs=1e-5)
    probe = gmm.route_clusters(model, x[0], mass=0.9)
    assert model.labels[0] == probe[0]
    assert len(gmm.route_clusters(model, x[0], mass=1.0, temperature=1e6)) == 3


def test_needs_refit_and_assign():
    assert gmm.needs_refit(126, 100) and not gmm.needs_refit(125, 100)
    assert gmm.needs_refit(1, 0) and not gmm.needs_refit(0, 0)
    with pytest.raises(ValueError):
        gmm.needs_refit(1, 1, growth=0)
    x, _ = _blobs()
    model = gmm.fit_clusters(np.arange(100), x[:100], dims=8, min_cluster_size=5)
    gmm.assign_clusters(model, np.arange(100, 120), x[100:120])
    assert set(model.labels) == set(range(120))
    with pytest.raises(ValueError):
        gmm.fit_clusters(np.arange(1), x[:1])


# ---------------------------------------------------------------------------- units
TURNS = ["Caroline: I went to an LGBTQ support group yesterday.",
         "Melanie: That sounds powerful! How did it feel?",
         "Caroline: Inspiring. I want to study counseling and psychology.",
         "Melanie: I painted a sunrise over the lake last week.",
         "Caroline: I love that painting, the colors are lovely."]


def test_derive_units_lists_sources_and_distinct_keywords():
    emb = HashingEmbedder(64)
    vecs = emb.embed(TURNS)
    stats = TermStats()
    analyzer = Analyzer()
    for key in ("a", "b", "c"):
        stats.add(key, analyzer.tokens("Caroline and Melanie walked the dog"))
    drafts = derive_units([11, 12, 13, 14, 15], TURNS, vecs, stats=stats, summary_turns=2)
    session, summary, keyword = drafts
    assert session.granularity == "session" and session.sources == (11, 12, 13, 14, 15)
    assert np.linalg.norm(session.vector) == pytest.approx(1.0, abs=1e-5)
    assert len(summary.sources) == 2 and set(summary.sources) <= {11, 12, 13, 14, 15}
    assert all(TURNS[i - 11] in summary.text for i in summary.sources)
    assert keyword.vector is None and keyword.sources == session.sources
    assert "caroline" not in keyword.text.split(", ")[:3]  # common across sessions
    assert "lgbtq" in keyword.text
    with pytest.raises(ValueError):
        derive_units([], [], np.zeros((0, 4)))


def test_mmr_prefers_diverse_turns():
    v = np.array([[1, 0, 0], [0.99, 0.14, 0], [0, 1, 0], [0.7, 0.7, 0]], dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    picked = mmr_select(v, k=2, diversity=0.5)
    assert len(set(picked)) == 2 and not {0, 1} <= set(picked)


def test_llm_hook_with_a_fake_llm():
    def complete(prompt: str) -> str:
        assert "SESSION:" in prompt and TURNS[0] in prompt
        return "Caroline joined a support group.\nKEYWORDS: support group, counseling"

    drafts = llm_summary_and_keywords([1, 2], TURNS[:2], complete=complete)
    assert [d.granularity for d in drafts] == ["summary", "keyword"]
    assert drafts[0].extractor == f"llm:{SUMMARY_PROMPT_VERSION}"
    assert drafts[1].text == "support group, counseling"
    with pytest.raises(ValueError):
        llm_summary_and_keywords([1], TURNS[:1], complete=lambda p: "  ")


# ---------------------------------------------------------------------------- index
SESSIONS = {
    "s1": ["Caroline: I went to an LGBTQ support group yesterday.",
           "Melanie: Wow, how was it?",
           "Caroline: It was powerful, I felt accepted."],
    "s2": ["Melanie: I painted a sunrise over the lake.",
           "Caroline: Beautiful! Do you paint often?",
           "Melanie: Every weekend, it relaxes me."],
    "s3": ["Caroline: I'm researching adoption agencies.",
           "Melanie: That's a big step!",
           "Caroline: I want to give a kid a loving home."],
}


def _build(**kwargs) -> tuple[GranularIndex, HashingEmbedder, dict[int, str]]:
    emb = HashingEmbedder(128)
    index = GranularIndex(**kwargs)
    text_of: dict[int, str] = {}
    next_id = 1
    for key, turns in SESSIONS.items():
        vecs = emb.embed(turns)
        units = []
        for pos, (text, v) in enumerate(zip(turns, vecs, strict=True)):
            units.append(IndexUnit(next_id, "turn", text, v, key, speaker=text.split(":")[0],
                                   position=pos))
            text_of[next_id] = text
            next_id += 1
        index.add(units)
        drafts = derive_units([u.id for u in units], turns, vecs)
        derived = [IndexUnit(next_id + j, d.granularity, d.text,
                             d.vector if d.vector is not None else emb.embed([d.text])[0], key,
                             sources=d.sources) for j, d in enumerate(drafts)]
        next_id += len(derived)
        index.add(derived)
    return index, emb, text_of


def test_index_ranks_turns_and_sessions_with_explanations():
    index, emb, text_of = _build()
    q = "When did Caroline research adoption agencies?"
    res = index.search(q, emb.embed([q])[0], top_k=3, explain=True)
    assert "adoption" in text_of[res.turns[0].id]
    assert res.sessions[0].session_key == "s3"
    assert res.sessions[0].id is not None  # the s3 session unit
    assert all(v >= 0 for v in res.weights.values())
    assert sum(res.weights.values()) == pytest.approx(1.0)
    exp = res.turns[0].explain
    assert set(exp["channels"]) >= {"turn", "context", "session"}
    assert 0 <= exp["lexical_share"] <= 1 and exp["speaker_match"] is True
    assert isinstance(exp["association_path"], list)
    assert res.took_ms > 0


def test_removed_and_replaced_units_never_come_back():
    index, emb, text_of = _build()
    q = "adoption agencies"
    first = index.search(q, emb.embed([q])[0], top_k=1).turns[0].id
    index.remove([first])
    assert first not in index
    ids = [h.id for h in index.search(q, emb.embed([q])[0], top_k=20).turns]
    assert first not in ids
    assert all(first not in (link.src, link.dst) for link in index.links())
    # replace a turn's text: the old words stop matching it
    victim = next(i for i, t in text_of.items() if "sunrise" in t)
    new = "Melanie: I bought a violin."
    index.add([IndexUnit(victim, "turn", new, emb.embed([new])[0], "s2", speaker="Melanie",
                         position=0)])
    hits = index.search("violin", emb.embed(["violin"])[0], top_k=1).turns
    assert hits[0].id == victim


def test_a_unit_whose_neighbours_are_all_removed_is_still_explained():
    """Removing every neighbour of a unit leaves it with no links and no empty entry:
    an explained search reads its strongest neighbour (an empty entry raised a 500)."""
    index, emb, text_of = _build()
    orphan = next(t for t in text_of if index._links.get(t))
    index.remove(list(index._links[orphan]))
    assert orphan in index and orphan not in index._links
    assert all(index._links.values())  # no unit keeps an empty neighbour map
    assert index._links  # other links remain, so graph spreading runs
    q = text_of[orphan]
    hits = index.search(q, emb.embed([q])[0], top_k=len(text_of), explain=True).turns
    hit = next(h for h in hits if h.id == orphan)
    assert hit.explain is not None and hit.explain["association_path"] == []


def test_add_is_incremental_and_returns_links():
    index, emb, _ = _build()
    before = index._channels["context"].bm25._tokens.copy()
    turns = ["Caroline: Adoption agencies called me back!", "Melanie: Great news about adoption."]
    vecs = emb.embed(turns)
    links = index.add([IndexUnit(100 + i, "turn", t, v, "s4", speaker=t.split(":")[0])
                       for i, (t, v) in enumerate(zip(turns, vecs, strict=True))])
    assert all(link.src in (100, 101) for link in links)
    assert any(link.dst in (7, 8, 9) for link in links)  # the earlier adoption session
    after = index._channels["context"].bm25._tokens
    assert all(after[k] == v for k, v in before.items())  # other sessions untouched


def test_probe_search_with_clusters_and_bad_input():
    index, emb, _ = _build(cluster=True, cluster_min_units=4,
                           config=RouterConfig(ppr_weight=0.0))
    q = "painting sunrise"
    full = index.search(q, emb.embed([q])[0], top_k=3)
    probed = index.search(q, emb.embed([q])[0], top_k=3, probe_mass=1.0)
    assert [h.id for h in probed.turns] == [h.id for h in full.turns]
    assert index.cluster_units("turn")
    with pytest.raises(ValueError):
        index.search("  ", emb.embed(["x"])[0])
    with pytest.raises(ValueError):
        index.add([IndexUnit(1, "turn", "a", np.array([np.nan]), "s")])
    with pytest.raises(ValueError):
        index.search("x", emb.embed(["x"])[0], top_k=0)
    no_clusters, _, _ = _build()
    with pytest.raises(ValueError, match="cluster"):
        no_clusters.search("x", emb.embed(["x"])[0], probe_mass=0.9)
    assert GranularIndex().search("x", emb.embed(["x"])[0]).turns == []


def test_granularities_restrict_the_channels():
    index, emb, _ = _build()
    q = "painting sunrise"
    res = index.search(q, emb.embed([q])[0], top_k=2, granularities=["turn"])
    assert set(res.weights) == {"turn", "context"}
    res = index.search(q, emb.embed([q])[0], top_k=2, granularities=["session", "keyword"])
    assert set(res.weights) == {"session", "keyword"}
    assert res.sessions[0].session_key == "s2"


def test_a_named_date_favours_turns_said_then():
    emb = HashingEmbedder(128)
    index = GranularIndex()
    dates = {"spring": datetime(2023, 3, 3, 14, tzinfo=timezone.utc),
             "summer": datetime(2023, 6, 10, 9, tzinfo=timezone.utc)}
    text = "Melanie: I painted the lake at sunrise."
    for uid, (key, when) in enumerate(dates.items(), start=1):  # same words, other days
        index.add([IndexUnit(uid, "turn", text, emb.embed([text])[0], key, speaker="Melanie",
                             timestamp=when.timestamp())])
    for q, key in [("What did Melanie paint on 10 June, 2023?", "summer"),
                   ("What did Melanie paint in March 2023?", "spring")]:
        res = index.search(q, emb.embed([q])[0], top_k=2, explain=True)
        assert res.turns[0].session_key == key and res.sessions[0].session_key == key
        assert res.turns[0].explain["time_closeness"] == 1.0
        assert res.turns[1].explain["time_closeness"] < 0.01
    res = index.search("What did Melanie paint?", emb.embed(["x"])[0], explain=True)
    assert res.turns[0].explain["time_closeness"] is None  # no date named


def test_session_dense_evidence_and_bad_config():
    index, emb, _ = _build(config=RouterConfig(session_dense="mean"))
    q = "painting sunrise"
    assert index.search(q, emb.embed([q])[0], top_k=2).sessions[0].session_key == "s2"
    with pytest.raises(ValueError, match="session_dense"):
        RouterConfig(session_dense="max")
    with pytest.raises(ValueError):
        RouterConfig(time_boost=-1.0)


# ---------------------------------------------------------------- candidate generation
_QUERIES = ["When did Caroline research adoption agencies?", "painting sunrise",
            "What does Melanie do every weekend?", "a loving home for a kid"]


def test_candidate_search_with_an_unbounded_pool_equals_exhaustive_scoring():
    """Exhaustive scoring is the reference: a pool holding every unit ranks identically."""
    index, emb, _ = _build(config=RouterConfig(dense_pool=10_000, lexical_pool=10_000,
                                               session_pool=10_000))
    for q in _QUERIES:
        v = emb.embed([q])[0]
        for gran in (None, ["turn"], ["session", "keyword"]):
            full = index.search(q, v, top_k=20, candidates=False, granularities=gran)
            cand = index.search(q, v, top_k=20, candidates=True, granularities=gran)
            assert [h.id for h in cand.turns] == [h.id for h in full.turns]
            assert [h.score for h in cand.turns] == pytest.approx([h.score for h in full.turns])
            assert [h.session_key for h in cand.sessions] == [
                h.session_key for h in full.sessions]
            assert cand.weights == pytest.approx(full.weights)


def test_an_unbounded_pool_still_equals_exhaustive_scoring_after_removes_and_replaces():
    """The pool gathers from arrays and cached neighbour lists: writes keep them current."""
    index, emb, text_of = _build(config=RouterConfig(dense_pool=10_000, lexical_pool=10_000,
                                                     session_pool=10_000))
    turns = sorted(i for i in text_of if i in index)
    for q in _QUERIES:  # fills the caches the writes below must keep current
        index.search(q, emb.embed([q])[0], candidates=True)
    index.remove(turns[::3])  # drops their links from their neighbours' cached lists
    for q in _QUERIES:
        index.search(q, emb.embed([q])[0], candidates=True)
    again = turns[1]
    texts = [(again, "Caroline: I researched adoption agencies again in May"),  # a replace
             (10_000, "Caroline: the adoption agency called back about the kids")]
    links = index.add([IndexUnit(i, "turn", t, emb.embed([t])[0], "s3", speaker="Caroline",
                                 timestamp=1_684_000_000.0) for i, t in texts])
    assert links  # the new turns link to ones whose neighbour lists were cached
    for q in _QUERIES + ["adoption agencies in May 2023"]:
        v = emb.embed([q])[0]
        full = index.search(q, v, top_k=20, candidates=False)
        cand = index.search(q, v, top_k=20, candidates=True)
        assert [h.id for h in cand.turns] == [h.id for h in full.turns]
        assert [h.score for h in cand.turns] == pytest.approx([h.score for h in full.turns])
        assert not {h.id for h in cand.turns} & set(turns[::3])


def _big_index(n_sessions: int, per_session: int, config: RouterConfig
               ) -> tuple[GranularIndex, HashingEmbedder]:
    emb = HashingEmbedder(64)
    index = GranularIndex(config=config)
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(400)]
    uid = 1
    for s in range(n_sessions):
        texts = [f"Ana: {' '.join(rng.choice(words, 6))}" for _ in range(per_session)]
        if s == n_sessions // 2:
            texts[3] = "Ana: my grandmother's zeppelin collection is in Reykjavik"
        vecs = emb.embed(texts)
        index.add([IndexUnit(uid + j, "turn", t, v, f"s{s}", speaker="Ana", position=j)
                   for j, (t, v) in enumerate(zip(texts, vecs, strict=True))])
        uid += per_session
        index.add([IndexUnit(uid, "session", " ".join(texts), vecs.mean(0), f"s{s}")])
        uid += 1
    return index, emb


def test_candidate_pool_is_bounded_by_its_sizes_not_the_index():
    cfg = RouterConfig(dense_pool=20, lexical_pool=20, session_pool=2, graph_pool=2,
                       exhaustive_max_turns=500)
    index, emb = _big_index(60, 20, cfg)  # 1,200 turns
    assert index.uses_candidates()
    q = "where is the zeppelin collection?"
    v = emb.embed([q])[0]
    turns, _ = index.candidate_turns(index.analyzer.tokens(q), v)
    # turn + context channels (dense and BM25), their neighbours, two sessions' turns
    bound = (2 * 20 + 20) * (1 + cfg.graph_pool) + cfg.session_pool * 20
    assert 20 <= len(turns) <= bound < 1200
    res = index.search(q, v, top_k=3)  # default: the pool, since 1,200 > 500 turns
    assert "zeppelin" in index._units[res.turns[0].id].text
    assert res.sessions[0].session_key == "s30"
    small = GranularIndex(config=cfg)
    assert not small.uses_candidates()


def test_dense_ids_from_an_ann_index_join_the_pool_and_unknown_ids_are_ignored():
    cfg = RouterConfig(dense_pool=5, lexical_pool=0, session_pool=0, graph_pool=0)
    index, emb = _big_index(10, 10, cfg)
    q = "nothing in common"
    v = emb.embed([q])[0]
    # 55 is session s4's unit (session_pool 0 takes none); 10^7 is no unit of this index
    given = [7, 55, 30, 10_000_000]
    turns, _ = index.candidate_turns(index.analyzer.tokens(q), v, dense_ids=given)
    assert turns == {7, 30}
    res = index.search(q, v, top_k=5, candidates=True, dense_ids=given)
    assert {h.id for h in res.turns} == {7, 30}
    with_sessions = dataclasses.replace(cfg, session_pool=1)
    index.config = with_sessions
    turns, _ = index.candidate_turns(index.analyzer.tokens(q), v, dense_ids=given)
    assert turns == {7, 30} | set(range(45, 55))  # s4's turns
    with pytest.raises(ValueError, match="exhaustive"):
        index.search(q, v, candidates=True, probe_mass=0.9)


def test_association_past_the_exhaustive_size_uses_the_ann_neighbours_only():
    """A large channel links a new unit among the units an ANN index names, not all."""
    cfg = RouterConfig(exhaustive_max_turns=50)
    index, emb = _big_index(6, 10, cfg)  # 60 turns: past 50
    asked: list[int] = []

    def neighbours(vector: np.ndarray, k: int) -> list[int]:
        asked.append(k)
        return [3, 4, 5, 999_999]  # an id the index does not hold is skipped

    text = "Ana: my grandmother's zeppelin collection moved to Oslo"
    links = index.add([IndexUnit(500, "turn", text, emb.embed([text])[0], "s9",
                                 speaker="Ana")], neighbours=neighbours)
    assert asked and all(link.src == 500 and link.dst in (3, 4, 5) for link in links)
    exact = index.add([IndexUnit(501, "session", text, emb.embed([text])[0], "s9")],
                      neighbours=neighbours)  # 6 session units: an exact scan
    assert all(link.dst < 500 for link in exact) and len(asked) == 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["append", "put", "drop", "read"]),
                          st.lists(st.integers(0, 40), min_size=1, max_size=5)),
                max_size=25))
def test_a_channel_matrix_kept_by_appends_equals_a_rebuild(ops):
    """The exhaustive path's matrix is appended to in place for new (higher) ids; after any
    mix of appends, replacements and drops it holds exactly the channel's vectors in id
    order, and a matrix read earlier is left as it was."""
    from memos.retrieval.granular_index import _Channel

    ch = _Channel(k1=1.2, b=0.75, analyzer=Analyzer())
    rng = np.random.default_rng(0)
    held: dict[int, np.ndarray] = {}
    earlier: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    top = 0
    for op, raw in ops:
        if op == "append":  # what ingest does: ids above every id held, ascending
            ids = list(range(top + 1, top + 1 + len(raw)))
        else:
            ids = list(dict.fromkeys(raw))
        if op in ("append", "put"):
            vecs = rng.standard_normal((len(ids), 4)).astype(np.float32)
            ch.put(ids, [f"t{i}" for i in ids], list(vecs))
            held.update(zip(ids, vecs, strict=True))
            top = max(top, *ids)
        elif op == "drop":
            ch.drop(ids)
            for i in ids:
                held.pop(i, None)
        ids_now, mat_now = ch.matrix()
        want = sorted(held)
        assert ids_now.tolist() == want
        if want:
            np.testing.assert_array_equal(mat_now, np.stack([held[i] for i in want]))
        earlier.append((ids_now, mat_now, ids_now.copy(), mat_now.copy()))
    for ids_then, mat_then, ids_copy, mat_copy in earlier:
        np.testing.assert_array_equal(ids_then, ids_copy)
        np.testing.assert_array_equal(mat_then, mat_copy)
