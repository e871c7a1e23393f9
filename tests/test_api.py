"""The REST surface over SQLite and PostgreSQL: every route, versions, deletes, bad input."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from fastapi.testclient import TestClient

CONVERSATION = [
    {"id": "m1", "role": "user", "speaker": "Ana", "content": "I moved to Berlin last spring.",
     "timestamp": "2023-05-08T10:00:00Z"},
    {"id": "m2", "role": "assistant", "content": "How are you finding Berlin so far?",
     "timestamp": "2023-05-08T10:00:05Z"},
    {"id": "m3", "role": "user", "speaker": "Ana",
     "content": "I adopted a rescue dog called Pixel and we walk by the canal every day.",
     "timestamp": "2023-05-08T10:01:00Z"},
]


def _cube_with_conversation(client: TestClient, cube: str = "c1") -> dict:
    assert client.post("/v1/cubes", json={"id": cube, "name": "Ana"}).status_code == 201
    r = client.post(f"/v1/cubes/{cube}/messages",
                    json={"session_id": "s1", "messages": CONVERSATION})
    assert r.status_code == 201, r.text
    return r.json()


def test_cube_crud_and_unknown_cube_is_404(client: TestClient) -> None:
    r = client.post("/v1/cubes", json={"id": "c1", "description": "test"})
    assert r.status_code == 201
    assert r.json()["embedding_dim"] == 384
    assert client.post("/v1/cubes", json={"id": "c1"}).status_code == 409
    assert [c["id"] for c in client.get("/v1/cubes").json()] == ["c1"]
    assert client.get("/v1/cubes/c1").json()["units"] == 0
    r = client.get("/v1/cubes/nope")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"
    # Never created implicitly by writing to it.
    r = client.post("/v1/cubes/nope/messages", json={"session_id": "s", "messages": CONVERSATION})
    assert r.status_code == 404
    assert client.get("/v1/cubes/nope").status_code == 404
    assert client.delete("/v1/cubes/c1").status_code == 204
    assert client.get("/v1/cubes/c1").status_code == 404


def test_ingest_creates_turns_and_session_and_is_idempotent(client: TestClient) -> None:
    first = _cube_with_conversation(client)
    assert first["messages_stored"] == 3 and first["units_created"] == 3
    again = client.post("/v1/cubes/c1/messages",
                        json={"session_id": "s1", "messages": CONVERSATION}).json()
    assert again["messages_stored"] == 0 and again["messages_skipped"] == 3
    # Same content without ids is recognised by its content hash.
    no_ids = [{k: v for k, v in m.items() if k != "id"} for m in CONVERSATION]
    again = client.post("/v1/cubes/c1/messages",
                        json={"session_id": "s1", "messages": no_ids}).json()
    assert again["messages_stored"] == 0
    page = client.get("/v1/cubes/c1/memories", params={"granularity": "turn"}).json()
    assert page["total"] == 3
    sessions = client.get("/v1/cubes/c1/memories", params={"granularity": "session"}).json()
    assert sessions["total"] == 1
    assert "Ana: I moved to Berlin" in sessions["items"][0]["text"]
    # More messages in the same session refresh the one session unit.
    client.post("/v1/cubes/c1/messages", json={"session_id": "s1", "messages": [
        {"id": "m4", "role": "user", "speaker": "Ana", "content": "Pixel loves the snow."}]})
    sessions = client.get("/v1/cubes/c1/memories", params={"granularity": "session"}).json()
    assert sessions["total"] == 1 and "Pixel loves the snow" in sessions["items"][0]["text"]


def test_search_ranks_the_relevant_turn_first(client: TestClient) -> None:
    _cube_with_conversation(client)
    r = client.post("/v1/cubes/c1/search", json={
        "query": "What is the name of Ana's dog?", "top_k": 3,
        "filters": {"granularity": ["turn"]}})
    assert r.status_code == 200
    hits = r.json()["hits"]
    assert "Pixel" in hits[0]["unit"]["text"]
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert "embed;dur=" in r.headers["server-timing"]


def test_a_granularity_list_beyond_turns_is_ranked_whole(client: TestClient) -> None:
    """The router's hits are turns: a list that also names facts is ranked by hybrid search
    over the vector index's nearest units (both kinds come back), and asking the router for
    it is a clear 422."""
    _cube_with_conversation(client)
    fact = client.post("/v1/cubes/c1/memories", json={
        "text": "Ana's dog is called Pixel", "granularity": "fact"})
    assert fact.status_code == 201, fact.text
    body = {"query": "What is the name of Ana's dog?", "top_k": 10,
            "filters": {"granularity": ["fact", "turn"]}}
    r = client.post("/v1/cubes/c1/search", json=body)
    assert r.status_code == 200
    assert (r.json()["mode"], r.json()["score_kind"]) == ("hybrid", "hybrid")
    assert {h["unit"]["granularity"] for h in r.json()["hits"]} == {"fact", "turn"}
    turns_only = client.post("/v1/cubes/c1/search", json={**body, "filters": {
        "granularity": ["turn"]}}).json()
    assert turns_only["mode"] == "router"
    r = client.post("/v1/cubes/c1/search", json={**body, "mode": "router"})
    assert r.status_code == 422 and "['turn']" in r.json()["error"]["message"]


def test_provenance_update_history_delete(client: TestClient) -> None:
    _cube_with_conversation(client)
    hit = client.post("/v1/cubes/c1/search", json={
        "query": "Where did Ana move?", "top_k": 1,
        "filters": {"granularity": ["turn"]}}).json()["hits"][0]["unit"]
    prov = client.get(f"/v1/cubes/c1/memories/{hit['id']}/provenance").json()
    assert prov["sources"][0]["message"]["id"] == "m1"
    assert prov["sources"][0]["quote"] == "I moved to Berlin last spring."

    # A fact derived from the turn, citing a span of the message.
    fact = client.post("/v1/cubes/c1/memories", json={
        "text": "Ana lives in Berlin", "granularity": "fact", "tags": ["home"],
        "sources": [{"message_id": "m1", "start": 2, "end": 17}],
        "derived_from": [hit["id"]], "extractor": "test"}).json()
    prov = client.get(f"/v1/cubes/c1/memories/{fact['id']}/provenance").json()
    assert prov["sources"][0]["quote"] == "moved to Berlin"
    assert prov["derived_from"][0]["id"] == hit["id"]

    before_update = datetime.now(timezone.utc)
    time.sleep(0.01)
    new = client.patch(f"/v1/cubes/c1/memories/{fact['id']}",
                       json={"text": "Ana lives in Munich", "reason": "moved again"})
    assert new.status_code == 200
    new = new.json()
    assert new["version"] == 2 and new["lineage_id"] == fact["lineage_id"]
    history = client.get(f"/v1/cubes/c1/memories/{new['id']}/history").json()
    assert [(h["version"], h["status"], h["text"]) for h in history] == [
        (1, "superseded", "Ana lives in Berlin"), (2, "active", "Ana lives in Munich")]
    # The superseded version is out of search at once; the new one is in.
    hits = client.post("/v1/cubes/c1/search", json={
        "query": "Where does Ana live?", "top_k": 10,
        "filters": {"granularity": ["fact"]}}).json()["hits"]
    assert [h["unit"]["text"] for h in hits] == ["Ana lives in Munich"]
    # Editing a superseded version is a conflict that names the current one.
    r = client.patch(f"/v1/cubes/c1/memories/{fact['id']}", json={"text": "x"})
    assert r.status_code == 409 and r.json()["error"]["details"]["current_id"] == new["id"]
    # as_of: what the cube held before the update.
    then = client.get("/v1/cubes/c1/memories", params={
        "granularity": "fact", "as_of": before_update.isoformat()}).json()
    assert [m["text"] for m in then["items"]] == ["Ana lives in Berlin"]
    # Filters by tag carry over to the new version.
    tagged = client.get("/v1/cubes/c1/memories", params={"tag": "home"}).json()
    assert [m["id"] for m in tagged["items"]] == [new["id"]]

    assert client.delete(f"/v1/cubes/c1/memories/{new['id']}").status_code == 200
    assert client.get(f"/v1/cubes/c1/memories/{new['id']}").status_code == 404
    assert client.get("/v1/cubes/c1/memories", params={"granularity": "fact"}).json()[
        "total"] == 0
    hits = client.post("/v1/cubes/c1/search", json={
        "query": "Where does Ana live?", "top_k": 10}).json()["hits"]
    assert new["id"] not in {h["unit"]["id"] for h in hits}
    assert fact["id"] not in {h["unit"]["id"] for h in hits}


def test_purge_erases_text_and_embedding(client: TestClient, service) -> None:
    _cube_with_conversation(client)
    fact = client.post("/v1/cubes/c1/memories", json={"text": "Ana's PIN is 4821"}).json()
    assert client.delete(f"/v1/cubes/c1/memories/{fact['id']}",
                         params={"purge": "true"}).status_code == 200
    from sqlalchemy import select

    from memos.store.models import UnitRow

    with service.store.transaction() as session:
        row = session.scalar(select(UnitRow).where(UnitRow.id == fact["id"]))
        assert row.text is None and row.embedding is None and row.status == "deleted"
    future = datetime(2100, 1, 1, tzinfo=timezone.utc).isoformat()
    past = client.get("/v1/cubes/c1/memories", params={"as_of": future, "granularity": "fact"})
    assert past.json()["total"] == 0


def test_context_cites_unit_ids_within_budget(client: TestClient) -> None:
    _cube_with_conversation(client)
    r = client.post("/v1/cubes/c1/context", json={"query": "Ana's dog", "max_tokens": 40})
    body = r.json()
    assert r.status_code == 200 and body["unit_ids"]
    assert body["tokens"] <= 40
    for line, unit_id in zip(body["text"].splitlines(), body["unit_ids"]):
        assert line.endswith(f"[{unit_id}]")


def test_bad_input_gets_clear_errors_and_writes_nothing(client: TestClient) -> None:
    _cube_with_conversation(client)
    units_before = client.get("/v1/cubes/c1").json()["units"]

    def err(r, status: int, kind: str) -> str:
        assert r.status_code == status, r.text
        assert r.json()["error"]["type"] == kind
        return r.json()["error"]["message"]

    malformed = client.post("/v1/cubes/c1/search", content=b"{not json",
                            headers={"content-type": "application/json"})
    err(malformed, 422, "invalid_input")  # one status for every bad body
    err(client.post("/v1/cubes/c1/messages", json={"messages": CONVERSATION}), 422,
        "invalid_input")
    err(client.post("/v1/cubes/c1/search", json={"query": "   "}), 422, "invalid_input")
    err(client.post("/v1/cubes/c1/search", json={"query": "x", "top_k": 0}), 422,
        "invalid_input")
    err(client.post("/v1/cubes/c1/search", json={"query": "x", "top_k": 101}), 422,
        "invalid_input")
    err(client.get("/v1/cubes/c1/memories/nope"), 404, "not_found")
    err(client.post("/v1/cubes/ghost/search", json={"query": "x"}), 404, "not_found")
    msg = err(client.post("/v1/cubes/c1/memories", json={"text": "x" * 40_000}), 413,
              "payload_too_large")
    assert "32,000" in msg and "MEMOS_MAX_TEXT_CHARS" in msg
    msg = err(client.post("/v1/cubes/c1/memories", json={"text": "x", "embedding": [0.1] * 5}),
              422, "invalid_input")
    assert "384" in msg
    err(client.post("/v1/cubes/c1/messages", json={"session_id": "s2", "messages": [
        {"content": "hi", "timestamp": "yesterday-ish"}]}), 422, "invalid_input")
    err(client.get("/v1/cubes/c1/memories", params={"as_of": "not-a-date"}), 422,
        "invalid_input")
    # A batch with one bad message stores none of it.
    r = client.post("/v1/cubes/c1/messages", json={"session_id": "s3", "messages": [
        {"content": "fine"}, {"content": ""}]})
    err(r, 422, "invalid_input")
    err(client.post("/v1/cubes/c1/memories", json={
        "text": "x", "sources": [{"message_id": "missing"}]}), 404, "not_found")
    err(client.post("/v1/cubes/c1/memories", json={
        "text": "x", "sources": [{"message_id": "m1", "start": 0, "end": 999}]}), 422,
        "invalid_input")
    err(client.patch("/v1/cubes/c1/memories/whatever", json={}), 422, "invalid_input")
    assert client.get("/v1/cubes/c1").json()["units"] == units_before
    assert client.get("/v1/cubes/c1/memories", params={"session_id": "s3"}).json()["total"] == 0


def test_openapi_lists_every_route(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ["/v1/cubes", "/v1/cubes/{cube_id}", "/v1/cubes/{cube_id}/messages",
                 "/v1/cubes/{cube_id}/memories", "/v1/cubes/{cube_id}/memories/{memory_id}",
                 "/v1/cubes/{cube_id}/memories/{memory_id}/history",
                 "/v1/cubes/{cube_id}/memories/{memory_id}/provenance",
                 "/v1/cubes/{cube_id}/search", "/v1/cubes/{cube_id}/context", "/healthz",
                 "/metrics"]:
        assert path in paths
    assert client.get("/healthz").json()["status"] == "ok"
    client.get("/v1/cubes/nope")
    metrics = client.get("/metrics").text
    assert "memos_units" in metrics
    assert 'memos_requests_total{method="GET",path="/healthz",status="200"} 1' in metrics
    assert 'path="/v1/cubes/{cube_id}",status="404"} 1' in metrics


def test_session_memories_read_back(client: TestClient) -> None:
    _cube_with_conversation(client)
    fact = client.post("/v1/cubes/c1/memories", json={
        "text": "Ana has a dog named Pixel", "session_id": "s1",
        "sources": [{"message_id": "m3"}]}).json()
    other = client.post("/v1/cubes/c1/memories", json={
        "text": "Unrelated", "session_id": "s9"}).json()
    got = client.get("/v1/cubes/c1/sessions/s1/memories").json()
    assert [m["id"] for m in got] == [fact["id"]]
    assert other["id"] not in {m["id"] for m in got}
    turns = client.get("/v1/cubes/c1/sessions/s1/memories", params={"granularity": "turn"})
    assert len(turns.json()) == 3
    assert client.get("/v1/cubes/zz/sessions/s1/memories").status_code == 404


def test_export_then_import_keeps_history_and_provenance(client: TestClient) -> None:
    _cube_with_conversation(client)
    fact = client.post("/v1/cubes/c1/memories", json={
        "text": "Ana lives in Berlin", "sources": [{"message_id": "m1", "start": 2,
                                                     "end": 17}]}).json()
    client.patch(f"/v1/cubes/c1/memories/{fact['id']}", json={"text": "Ana lives in Munich"})
    exported = client.get("/v1/cubes/c1/export")
    assert exported.status_code == 200
    data = exported.json()
    assert data["format"] == "memos.cube.v1" and len(data["messages"]) == 3
    # Unit ids are unique per cube: a plain import keeps them; new_ids gives fresh ones.
    r = client.post("/v1/cubes/import", json={"id": "same", "data": data})
    assert r.status_code == 201, r.text
    assert client.get(f"/v1/cubes/same/memories/{fact['id']}").json()["text"] == \
        "Ana lives in Berlin"
    r = client.post("/v1/cubes/import", json={"id": "c2", "data": data, "new_ids": True})
    assert r.status_code == 201, r.text
    hits = client.post("/v1/cubes/c2/search", json={
        "query": "Where does Ana live?", "filters": {"granularity": ["fact"]}}).json()["hits"]
    assert [h["unit"]["text"] for h in hits] == ["Ana lives in Munich"]
    new_id = hits[0]["unit"]["id"]
    assert new_id != fact["id"]
    history = client.get(f"/v1/cubes/c2/memories/{new_id}/history").json()
    assert [h["text"] for h in history] == ["Ana lives in Berlin", "Ana lives in Munich"]
    prov = client.get(f"/v1/cubes/c2/memories/{new_id}/provenance").json()
    assert prov["sources"][0]["quote"] == "moved to Berlin"
    bad = client.post("/v1/cubes/import", json={"id": "c3", "data": {"format": "other"}})
    assert bad.status_code == 422


def test_a_session_unit_quotes_every_message_it_cites(client: TestClient) -> None:
    _cube_with_conversation(client)
    session_unit = client.get("/v1/cubes/c1/memories", params={"granularity": "session"}
                              ).json()["items"][0]
    prov = client.get(f"/v1/cubes/c1/memories/{session_unit['id']}/provenance").json()
    assert [s["quote"] for s in prov["sources"]] == [m["content"] for m in CONVERSATION]
    assert all(s["quote"] == s["message"]["content"] for s in prov["sources"])
