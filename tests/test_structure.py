"""The structure views (``/v1/cubes/{id}/structure/...``) the inspector plots: the cluster
map of a granularity and the association mixture of one unit, through the SDK against the
real store (SQLite + FAISS and PostgreSQL + pgvector) and the real embedder."""

from __future__ import annotations

from collections import Counter

import pytest

from memos.client import MemosClient
from memos.errors import InvalidInput, NotFound
from memos.structure import density

COOKING = [f"I cooked {dish} with garlic and olive oil for dinner tonight."
           for dish in ("pasta", "risotto", "paella", "lasagna", "gnocchi", "ramen",
                        "curry", "pizza", "soup", "stew")]
HIKING = [f"We hiked up {peak} and camped under the stars near the summit."
          for peak in ("Mont Blanc", "the Matterhorn", "Ben Nevis", "Snowdon", "Triglav",
                       "the Zugspitze", "Etna", "Olympus", "Kilimanjaro", "Rainier")]


def _cube(sdk: MemosClient) -> list[str]:
    sdk.create_cube("a")
    texts = [t for pair in zip(COOKING, HIKING, strict=True) for t in pair]
    sdk.add_messages("a", session_id="s1", sync=True, messages=[
        {"id": f"m{i}", "role": "user", "speaker": "Ana", "content": t}
        for i, t in enumerate(texts)])
    return texts


def test_the_cluster_map_separates_two_topics(sdk: MemosClient) -> None:
    texts = _cube(sdk)
    found = sdk.cluster_map("a", granularity="turn")
    assert found.units == len(texts) == len(found.points) and found.clusters >= 2
    assert set(found.bic) and all(0 <= p.cluster < found.clusters for p in found.points)
    label = {p.text: p.cluster for p in found.points}
    cooking = Counter(label[t] for t in COOKING).most_common(1)[0]
    hiking = Counter(label[t] for t in HIKING).most_common(1)[0]
    assert cooking[0] != hiking[0]  # each topic's main cluster is its own
    assert cooking[1] >= 8 and hiking[1] >= 8
    assert sdk.cluster_map("a", limit=4).units == 4  # the newest `limit` units only


def test_the_association_mixture_is_the_decision_ingest_stored(sdk: MemosClient) -> None:
    texts = _cube(sdk)
    turns = {u.text: u for u in
             sdk.list_memories("a", filters={"granularity": ["turn"]}, limit=100).items}
    last = turns[texts[-1]]  # the last message: every other turn came before it
    mix = sdk.association_mixture("a", last.id)
    assert mix.granularity.value == "turn" and mix.scan == "exact"
    scores = [s.score for s in mix.scores]
    assert scores == sorted(scores, reverse=True) and len(scores) == mix.top_k
    assert mix.threshold is not None
    assert all((s.score >= mix.threshold) == s.accepted for s in mix.scores)
    stored = {link.target_id for link in sdk.provenance("a", last.id).links
              if link.type.value == "associated" and link.source_id == last.id}
    assert stored == {s.id for s in mix.scores if s.accepted}
    if mix.rule == "gmm":
        low, high = mix.components
        assert low.mean <= high.mean and abs(low.weight + high.weight - 1) < 1e-6
        x, d_low, d_high = mix.curve[len(mix.curve) // 2]
        assert d_low == pytest.approx(density(x, weight=low.weight, mean=low.mean,
                                              var=low.var), abs=1e-4)
        assert d_high >= 0
    first = turns[texts[0]]
    assert sdk.association_mixture("a", first.id).scores == []  # nothing came before it


def test_structure_errors_are_clear(sdk: MemosClient) -> None:
    _cube(sdk)
    with pytest.raises(NotFound):
        sdk.association_mixture("a", "no-such-unit")
    with pytest.raises(NotFound):
        sdk.cluster_map("nope")
    with pytest.raises(InvalidInput):
        sdk.cluster_map("a", granularity="sentence")
    with pytest.raises(InvalidInput):
        sdk.cluster_map("a", limit=1)
