"""Fact extraction wired into ingest: gate, quarantine, version chains, idempotent replay."""

from __future__ import annotations

from conftest import cube_key
from fastapi.testclient import TestClient

from memos.cube import MemCube
from memos.derive.facts import FactDeriver

SESSION_1 = [
    {"id": "m1", "role": "user", "speaker": "Ana",
     "content": "I work as a nurse at St. Mary's hospital. I live in Berlin.",
     "timestamp": "2023-05-08T10:00:00Z"},
    {"id": "m2", "role": "assistant", "content": "That's great! How long have you been a nurse?"},
    {"id": "m3", "role": "user", "speaker": "Ana",
     "content": "If I were rich I would buy a boat. My sister Lena adopted a cat last week.",
     "timestamp": "2023-05-08T10:01:00Z"},
]


def _ingest(client: TestClient, session_id: str, messages: list[dict]) -> None:
    r = client.post("/v1/cubes/a/messages",
                    json={"session_id": session_id, "messages": messages, "sync": True})
    assert r.status_code == 201, r.text


def _facts(client: TestClient, session_id: str) -> list[dict]:
    return client.get(f"/v1/cubes/a/sessions/{session_id}/memories").json()


def test_extracts_resolves_and_skips_hypotheticals(service: MemCube, client: TestClient) -> None:
    service.derivers = [FactDeriver()]
    client.post("/v1/cubes", json={"id": "a"})
    _ingest(client, "s1", SESSION_1)
    facts = {f["text"]: f for f in _facts(client, "s1")}
    assert "Ana lives in Berlin." in facts
    assert "Ana's sister Lena adopted a cat in the week of 2023-05-01." in facts
    assert not any("boat" in t for t in facts)  # hypothetical: not a memory
    assert not any("How long" in t for t in facts)  # questions and assistant turns: nothing
    berlin = facts["Ana lives in Berlin."]
    prov = client.get(f"/v1/cubes/a/memories/{berlin['id']}/provenance").json()
    assert prov["sources"][0]["quote"].rstrip(".") == "I live in Berlin"
    assert berlin["extractor"].startswith("rules")
    assert berlin["tags"] == ["persona"]


def test_update_makes_a_version_chain_and_replay_changes_nothing(
        service: MemCube, client: TestClient) -> None:
    service.derivers = [FactDeriver()]
    client.post("/v1/cubes", json={"id": "a"})
    _ingest(client, "s1", SESSION_1)
    _ingest(client, "s2", [{"id": "n1", "role": "user", "speaker": "Ana",
                            "content": "Big news: I moved to Munich last month.",
                            "timestamp": "2023-09-08T10:00:00Z"}])
    (moved,) = _facts(client, "s2")
    history = client.get(f"/v1/cubes/a/memories/{moved['id']}/history").json()
    assert [(h["text"], h["status"]) for h in history] == [
        ("Ana lives in Berlin.", "superseded"), (moved["text"], "active")]
    assert history[0]["valid_to"].startswith("2023-08")  # stopped being true when she moved
    hits = client.post("/v1/cubes/a/search", json={
        "query": "Where does Ana live?", "filters": {"granularity": ["fact"]}}).json()["hits"]
    assert "Ana lives in Berlin." not in [h["unit"]["text"] for h in hits]

    before = client.get("/v1/cubes/a/memories", params={"granularity": "fact",
                                                         "limit": 500}).json()
    service.derive_session("a", "s1", tenant="default")  # a job re-run after a crash
    service.derive_session("a", "s2", tenant="default")
    after = client.get("/v1/cubes/a/memories", params={"granularity": "fact",
                                                        "limit": 500}).json()
    assert [m["id"] for m in after["items"]] == [m["id"] for m in before["items"]]


def test_retiring_supersedes_the_job_and_the_employment_status(
        service: MemCube, client: TestClient) -> None:
    service.derivers = [FactDeriver()]
    client.post("/v1/cubes", json={"id": "a"})
    _ingest(client, "s1", [{"id": "e1", "role": "user", "speaker": "Ana",
                            "content": "I work at Acme Labs as an engineer. I'm currently "
                                       "employed full-time.",
                            "timestamp": "2023-05-08T10:00:00Z"}])
    before = {f["text"]: f for f in _facts(client, "s1")}
    assert set(before) == {"Ana works at Acme Labs as an engineer.",
                           "Ana is currently employed full-time."}
    _ingest(client, "s2", [{"id": "e2", "role": "user", "speaker": "Ana",
                            "content": "I've finally retired from my role at Acme Labs.",
                            "timestamp": "2024-01-10T10:00:00Z"}])
    (retired,) = _facts(client, "s2")
    for old in before.values():
        now = client.get(f"/v1/cubes/a/memories/{old['id']}").json()
        assert now["status"] == "superseded" and now["valid_to"].startswith("2024-01-10"), now
        assert "retired" in now["status_reason"]
    hits = client.post("/v1/cubes/a/search", json={
        "query": "Is Ana employed?", "filters": {"granularity": ["fact"]}}).json()["hits"]
    assert [h["unit"]["id"] for h in hits] == [retired["id"]]


def test_unsupported_facts_are_quarantined_and_never_searchable(
        service: MemCube, client: TestClient) -> None:
    from memos.extract import PERSONA, ExtractedFact

    class Liar:
        """An extractor that invents a number its source does not say."""

        name, version = "liar", "1"

        def extract(self, messages, *, session_time=None):
            m = messages[0]
            return [ExtractedFact(text="Ana has 7 cats", subject="Ana", attribute="pets",
                                  value="7 cats", memory_type=PERSONA,
                                  source_message_id=m.id, span=(0, len(m.content)))]

    service.derivers = [FactDeriver(extractor=Liar())]
    client.post("/v1/cubes", json={"id": "a"})
    _ingest(client, "s1", [{"id": "q1", "role": "user", "speaker": "Ana",
                            "content": "I have two cats."}])
    (fact,) = _facts(client, "s1")
    assert fact["status"] == "quarantined" and "unsupported" in fact["status_reason"]
    hits = client.post("/v1/cubes/a/search", json={"query": "How many cats does Ana have?",
                                                    "top_k": 20}).json()["hits"]
    assert fact["id"] not in {h["unit"]["id"] for h in hits}
    listed = client.get("/v1/cubes/a/memories", params={"status": "quarantined"}).json()
    assert [m["id"] for m in listed["items"]] == [fact["id"]]


def test_background_job_derives_after_ingest(service: MemCube, tmp_path) -> None:
    from api.main import create_app
    from memos.config import Settings
    from memos.jobs import Worker

    service.derivers = [FactDeriver()]
    app = create_app(Settings(data_dir=tmp_path, run_worker=False), service=service)
    with TestClient(app) as client:
        client.post("/v1/cubes", json={"id": "a"})
        r = client.post("/v1/cubes/a/messages", json={"session_id": "s1",
                                                       "messages": SESSION_1})
        assert r.status_code == 201
        assert _facts(client, "s1") == [] and service.jobs.pending(cube_key(service, "a")) == 1
        Worker(service.jobs, {"derive_session": service.run_derive_job}).run_pending()
        assert any(f["text"] == "Ana lives in Berlin." for f in _facts(client, "s1"))
        assert service.jobs.pending(cube_key(service, "a")) == 0


def test_the_speaker_supports_facts_about_themselves(service: MemCube,
                                                      client: TestClient) -> None:
    """The README's own example: Ana's "My dog Pixel…" is a fact about Ana, stored active."""
    service.derivers = [FactDeriver()]
    client.post("/v1/cubes", json={"id": "a"})
    _ingest(client, "2023-05-08", [
        {"id": "m1", "role": "user", "speaker": "Ana", "content": "I moved to Berlin last spring.",
         "timestamp": "2023-05-08T10:00:00Z"},
        {"id": "m2", "role": "user", "speaker": "Ana", "content": "My dog Pixel loves the canal."}])
    facts = {f["text"]: f for f in _facts(client, "2023-05-08")}
    assert facts["Ana's dog Pixel loves the canal."]["status"] == "active", facts


def test_the_cube_user_name_supports_a_user_message_without_speaker(
        service: MemCube, client: TestClient) -> None:
    service.derivers = [FactDeriver()]
    client.post("/v1/cubes", json={"id": "a", "metadata": {"user_name": "Ana"}})
    _ingest(client, "s1", [{"id": "m1", "role": "user",
                            "content": "My dog Pixel loves the canal."}])
    (fact,) = _facts(client, "s1")
    assert (fact["text"], fact["status"]) == ("Ana's dog Pixel loves the canal.", "active")


def test_a_fact_about_someone_nobody_mentioned_is_still_quarantined() -> None:
    from memos.extract import check

    assert check("Ana's dog Pixel loves the canal.", "My dog Pixel loves the canal.",
                 speakers=["Ana"]).supported
    verdict = check("Ben's dog Pixel loves the canal.", "My dog Pixel loves the canal.",
                    speakers=["Ana"])
    assert not verdict.supported and "name 'Ben' not in source" in verdict.reasons
    # the speaker excuses only their own name, not every name
    assert not check("Ana's dog Pixel loves the canal.", "My dog Pixel loves the canal.",
                     speakers=["Ben"]).supported


def test_a_turned_preference_is_the_next_version_valid_from_when_it_was_said(
        service: MemCube, client: TestClient) -> None:
    service.derivers = [FactDeriver()]
    client.post("/v1/cubes", json={"id": "a"})
    _ingest(client, "s1", [{"id": "p1", "role": "user", "speaker": "Ana",
                            "content": "I don't like to play puzzle games.",
                            "timestamp": "2023-05-08T10:00:00Z"}])
    _ingest(client, "s2", [{"id": "p2", "role": "user", "speaker": "Ana",
                            "content": "I have started to appreciate puzzle games for their "
                                       "strategy.",
                            "timestamp": "2023-09-08T10:00:00Z"}])
    (now,) = _facts(client, "s2")
    history = client.get(f"/v1/cubes/a/memories/{now['id']}/history").json()
    assert [(h["text"], h["status"]) for h in history] == [
        ("Ana dislikes playing puzzle games.", "superseded"), (now["text"], "active")]
    assert history[0]["valid_to"].startswith("2023-09-08")
    assert now["valid_from"].startswith("2023-09-08")
    prov = client.get(f"/v1/cubes/a/memories/{now['id']}/provenance").json()
    assert [link["type"] for link in prov["links"]] == ["supersedes"]
