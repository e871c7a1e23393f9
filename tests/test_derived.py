"""Summary and keyword units derived per session on ingest, with links and provenance."""

from __future__ import annotations

from conftest import cube_key
from fastapi.testclient import TestClient

from memos.cube import MemCube
from memos.derive.granularity import GranularityDeriver
from memos.store.models import CubeRow

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


def _recount(service: MemCube, cube_id: str) -> dict[str, int]:
    """Document frequencies over the cube's active session units, counted afresh."""
    deriver = GranularityDeriver()
    with service.store.transaction() as session:
        return dict(deriver._term_stats(session, cube_key(service, cube_id)).df)


def _cube(service: MemCube, cube_id: str) -> CubeRow:
    with service.store.transaction() as session:
        return service.units.cube_row(session, cube_id=cube_id, tenant="default")


def _say(client: TestClient, cube_id: str, session_id: str, text: str) -> None:
    client.post(f"/v1/cubes/{cube_id}/messages", json={"session_id": session_id, "sync": True,
                "messages": [{"role": "user", "content": text}]})


def test_term_stats_follow_session_changes_incrementally(service: MemCube,
                                                         client: TestClient) -> None:
    """Without a router cache the deriver keeps its own document frequencies, matching a
    recount after appends and a cube recreated under the same id."""
    deriver = GranularityDeriver()
    service.derivers = [deriver]
    service.router = None
    client.post("/v1/cubes", json={"id": "tf"})
    for s, text in enumerate(["Pixel loves the canal.", "The canal froze in winter.",
                              "Lena visits from Lisbon."]):
        _say(client, "tf", f"s{s}", text)
    stats, _ = deriver._stats[cube_key(service, "tf")]
    assert stats.n_docs == 3 and stats.df["canal"] == 2
    # An appended turn changes session s2's text: only that session is recounted.
    _say(client, "tf", "s2", "We walked along the canal.")
    assert stats.df["canal"] == 3 and stats.df["lisbon"] == 1
    assert dict(stats.df) == _recount(service, "tf")
    # A cube created anew under a deleted one's id counts from zero.
    client.delete("/v1/cubes/tf")
    client.post("/v1/cubes", json={"id": "tf"})
    _say(client, "tf", "s9", "A new start.")
    stats, _ = deriver._stats[cube_key(service, "tf")]
    assert stats.n_docs == 1 and "canal" not in stats.df


def test_the_deriver_reads_the_routers_term_stats_without_counting_sessions(
        service: MemCube, client: TestClient) -> None:
    """With the router cache current, keyword extraction uses the statistics the router
    keeps on every write — equal to a recount after appends and an emptied session — and
    the deriver runs no query over the cube's session units."""
    from sqlalchemy import event

    deriver = GranularityDeriver()
    service.derivers = [deriver]
    assert service.router is not None
    client.post("/v1/cubes", json={"id": "rs"})
    _say(client, "rs", "s0", "Pixel loves the canal.")
    client.post("/v1/cubes/rs/search", json={"query": "canal"})  # the router cache exists
    reads: list[str] = []

    def seen(conn, cursor, statement, *args) -> None:
        if statement.startswith("SELECT memory_units.session_id, memory_units.content_sha"):
            reads.append(statement)  # the deriver's own recount

    event.listen(service.store.engine, "before_cursor_execute", seen)
    try:
        _say(client, "rs", "s1", "The canal froze in winter.")
        _say(client, "rs", "s2", "Lena visits from Lisbon.")
    finally:
        event.remove(service.store.engine, "before_cursor_execute", seen)
    assert reads == [] and cube_key(service, "rs") not in deriver._stats
    stats = service.router.current_stats(_cube(service, "rs"))
    assert stats is not None and stats.df["canal"] == 2
    assert dict(stats.df) == _recount(service, "rs")
    # s2's only turn deleted: its session unit goes, and its terms with it.
    (turn,) = [m for m in client.get("/v1/cubes/rs/memories",
                                      params={"granularity": "turn"}).json()["items"]
               if "Lisbon" in m["text"]]
    assert client.delete(f"/v1/cubes/rs/memories/{turn['id']}").status_code == 200
    stats = service.router.current_stats(_cube(service, "rs"))
    assert stats is not None and "lisbon" not in stats.df and stats.n_docs == 2
    assert dict(stats.df) == _recount(service, "rs")


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
