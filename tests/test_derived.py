"""Summary and keyword units derived per session on ingest, with links and provenance."""

from __future__ import annotations

from conftest import cube_key
from fastapi.testclient import TestClient

from memos.cube import MemCube
from memos.derive.granularity import GranularityDeriver

TURNS = ["I adopted a rescue dog named Pixel last week.", "That's lovely, what breed is Pixel?",
         "A border collie mix, very energetic, we go running by the canal.",
         "I started training for a marathon in Berlin.",
         "Pixel might enjoy the marathon training too!",
         "My sister Lena is visiting next month from Lisbon."]


def test_summary_and_keywords_link_to_their_turns(service: MemCube, client: TestClient) -> None:
    service.derivers = [GranularityDeriver()]
    client.post("/v1/cubes", json={"id": "a"})
    msgs = [{"id": f"m{i}", "role": "user", "speaker": ["Ana", "Ben"][i % 2], "content": t}
            for i, t in enumerate(TURNS)]
    client.post("/v1/cubes/a/messages", json={"session_id": "s1", "sync": True,
                                              "messages": msgs})
    (summary,) = client.get("/v1/cubes/a/memories", params={"granularity": "summary"}).json()[
        "items"]
    (keywords,) = client.get("/v1/cubes/a/memories", params={"granularity": "keyword"}).json()[
        "items"]
    assert "pixel" in keywords["text"] and "marathon" in keywords["text"]
    assert summary["extractor"].startswith("rules:mmr")
    prov = client.get(f"/v1/cubes/a/memories/{summary['id']}/provenance").json()
    assert {link["type"] for link in prov["links"]} >= {"summarizes"}
    assert all(s["quote"] in TURNS for s in prov["sources"]) and prov["sources"]
    # Replaying the session rewrites nothing; a new turn refreshes (replaces) the units.
    client.post("/v1/cubes/a/messages", json={"session_id": "s1", "sync": True,
                                              "messages": msgs})
    again = client.get("/v1/cubes/a/memories", params={"granularity": "summary"}).json()
    assert [m["id"] for m in again["items"]] == [summary["id"]]
    client.post("/v1/cubes/a/messages", json={"session_id": "s1", "sync": True, "messages": [
        {"id": "m9", "role": "user", "speaker": "Ana", "content": "Pixel learned to swim!"}]})
    after = client.get("/v1/cubes/a/memories", params={"granularity": "keyword"}).json()
    assert after["total"] == 1 and after["items"][0]["id"] != keywords["id"]
    hits = client.post("/v1/cubes/a/search", json={"query": "What breed is Pixel?",
                                                    "explain": True}).json()
    assert hits["mode"] == "router" and abs(sum(hits["router"]["weights"].values()) - 1) < 1e-6
    assert "collie" in hits["hits"][0]["unit"]["text"] or "breed" in hits["hits"][0]["unit"][
        "text"]


def test_term_stats_follow_session_changes_incrementally(service: MemCube,
                                                         client: TestClient) -> None:
    """The deriver's cached document frequencies match a recount after appends and deletes."""
    deriver = GranularityDeriver()
    service.derivers = [deriver]
    client.post("/v1/cubes", json={"id": "tf"})
    for s, text in enumerate(["Pixel loves the canal.", "The canal froze in winter.",
                              "Lena visits from Lisbon."]):
        client.post("/v1/cubes/tf/messages", json={"session_id": f"s{s}", "sync": True,
                    "messages": [{"role": "user", "content": text}]})
    stats, _ = deriver._stats[cube_key(service, "tf")]
    assert stats.n_docs == 3 and stats.df["canal"] == 2
    # An appended turn changes session s2's text: only that session is recounted.
    client.post("/v1/cubes/tf/messages", json={"session_id": "s2", "sync": True,
                "messages": [{"role": "user", "content": "We walked along the canal."}]})
    assert stats.df["canal"] == 3 and stats.df["lisbon"] == 1
    # A cube created anew under a deleted one's id counts from zero.
    client.delete("/v1/cubes/tf")
    client.post("/v1/cubes", json={"id": "tf"})
    client.post("/v1/cubes/tf/messages", json={"session_id": "s9", "sync": True,
                "messages": [{"role": "user", "content": "A new start."}]})
    stats, _ = deriver._stats[cube_key(service, "tf")]
    assert stats.n_docs == 1 and "canal" not in stats.df


def test_granularity_filter_selects_hits_not_router_evidence(service: MemCube,
                                                             client: TestClient) -> None:
    """Asking for turns returns the turns the full router ranks (all channels as evidence)."""
    service.derivers = [GranularityDeriver()]
    client.post("/v1/cubes", json={"id": "g"})
    client.post("/v1/cubes/g/messages", json={"session_id": "s1", "sync": True, "messages": [
        {"role": "user", "speaker": "Ana", "content": t} for t in TURNS]})
    query = {"query": "Where is Lena coming from?", "top_k": 3}
    everything = client.post("/v1/cubes/g/search", json=query).json()
    turns = client.post("/v1/cubes/g/search", json={
        **query, "filters": {"granularity": ["turn"]}}).json()
    assert turns["mode"] == "router" and turns["router"] == everything["router"]
    assert [h["unit"]["id"] for h in turns["hits"]] == [
        h["unit"]["id"] for h in everything["hits"] if h["unit"]["granularity"] == "turn"]
