"""Derived data follows its source; a purge erases from every store.

Against the real service (SQLite + FAISS + blobs built from settings, and PostgreSQL): a
deleted or corrected turn is not findable through anything derived from it, the facts it
alone supported are retired (and the value they replaced is current again), and a purge
leaves neither the text nor the vector in any file under the data directory (or any
PostgreSQL row).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from api.main import create_app
from memos.config import Settings
from memos.keys import DEFAULT_TENANT
from memos.store.models import MessageRow, UnitRow

CANARY = "ZX9917364"
SESSION_1 = [
    {"role": "user", "content": "I live in Berlin with my dog Rex.",
     "timestamp": "2020-01-05T10:00:00Z"},
    {"role": "assistant", "content": "Nice, Berlin is lovely."},
    {"role": "user", "content": f"My passport number is {CANARY}.",
     "timestamp": "2020-01-05T10:01:00Z"},
]
SESSION_2 = [
    {"role": "user", "content": "I moved to Reykjavik in March 2021.",
     "timestamp": "2021-04-01T10:00:00Z"},
    {"role": "assistant", "content": "How is Iceland?"},
]
GRANULARITIES = ["turn", "session", "summary", "keyword", "fact"]


def _cube(client: TestClient) -> dict[str, str]:
    """Two sessions ingested and derived; returns turn unit ids by their text."""
    assert client.post("/v1/cubes", json={"id": "c", "metadata": {"user_name": "Ana"}}
                       ).status_code == 201
    turns: dict[str, str] = {}
    for session_id, messages in (("s1", SESSION_1), ("s2", SESSION_2)):
        r = client.post("/v1/cubes/c/messages", json={
            "session_id": session_id, "sync": True, "messages": messages})
        assert r.status_code == 201, r.text
        turns.update(zip((m["content"] for m in messages), r.json()["unit_ids"]))
    return turns


def _texts_found(client: TestClient, query: str) -> list[tuple[str, str]]:
    """(granularity, text) of every hit for ``query`` in any granularity."""
    found = []
    for granularity in GRANULARITIES:
        r = client.post("/v1/cubes/c/search", json={
            "query": query, "top_k": 20, "filters": {"granularity": [granularity]}})
        assert r.status_code == 200, r.text
        found += [(h["unit"]["granularity"], h["unit"]["text"] or "") for h in r.json()["hits"]]
    return found


def _facts(client: TestClient, session_id: str) -> list[dict[str, Any]]:
    return client.get(f"/v1/cubes/c/sessions/{session_id}/memories").json()


def _wait_for_jobs(client: TestClient, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/v1/cubes/c").json()["pending_jobs"]:
        assert time.monotonic() < deadline, "derive jobs did not finish"
        time.sleep(0.1)


@pytest.fixture
def app_client(tmp_path: Path) -> Any:
    """The app as ``memos serve`` builds it (its own store, index, blobs) with a worker."""
    settings = Settings(data_dir=tmp_path, run_worker=True, retrieval_flush_seconds=0)
    with TestClient(create_app(settings)) as client:
        yield client


def test_deleted_turn_is_not_findable_through_what_was_derived_from_it(app_client) -> None:
    client = app_client
    turns = _cube(client)
    assert any("Reykjavik" in t for g, t in _texts_found(client, "Reykjavik") if g != "turn")
    berlin = next(f for f in _facts(client, "s1") if "Berlin" in f["text"])
    assert berlin["status"] == "superseded"  # the move replaced where Ana lives
    moved = next(f for f in _facts(client, "s2") if "Reykjavik" in f["text"])

    r = client.delete(f"/v1/cubes/c/memories/{turns[SESSION_2[0]['content']]}")
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["retired"] == [moved["id"]] and report["sessions"] == ["s2"]
    assert report["restored"] == [berlin["id"]] and not report["purged"]
    # Immediately (before the re-derive job) and after it: nothing derived still says it.
    assert not [hit for hit in _texts_found(client, "Reykjavik") if "Reykjavik" in hit[1]]
    _wait_for_jobs(client)
    assert not [hit for hit in _texts_found(client, "Reykjavik") if "Reykjavik" in hit[1]]
    assert client.get(f"/v1/cubes/c/memories/{berlin['id']}").json()["status"] == "active"
    assert client.get(f"/v1/cubes/c/memories/{moved['id']}").status_code == 404
    # The rest of the session is still there, and the deleted message is not re-ingested.
    assert any(t == "How is Iceland?" for _, t in _texts_found(client, "Iceland"))
    again = client.post("/v1/cubes/c/messages", json={"session_id": "s2", "sync": True,
                                                      "messages": SESSION_2[:1]})
    assert again.json()["messages_stored"] == 0


def test_corrected_turn_is_re_derived_from_the_correction(app_client) -> None:
    client = app_client
    turns = _cube(client)
    r = client.patch(f"/v1/cubes/c/memories/{turns[SESSION_2[0]['content']]}",
                     json={"text": "I moved to Oslo in March 2021."})
    assert r.status_code == 200, r.text
    assert not [hit for hit in _texts_found(client, "Reykjavik") if "Reykjavik" in hit[1]]
    _wait_for_jobs(client)
    assert not [hit for hit in _texts_found(client, "Reykjavik") if "Reykjavik" in hit[1]]
    found = _texts_found(client, "Oslo")
    assert {g for g, t in found if "Oslo" in t} >= {"turn", "session", "fact"}
    active = [f["text"] for f in _facts(client, "s2") if f["status"] == "active"]
    assert active == ["Ana moved to Oslo in March 2021."]
    provenance = client.get(f"/v1/cubes/c/memories/{r.json()['id']}/provenance").json()
    assert [s["quote"] for s in provenance["sources"]] == ["I moved to Oslo in March 2021."]


def _files_containing(root: Path, needles: list[bytes]) -> list[str]:
    hits = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        hits += [f"{path.relative_to(root)}: {needle[:24]!r}" for needle in needles
                 if needle in data]
    return hits


def _canary_needles(vectors: list[np.ndarray]) -> list[bytes]:
    words = [CANARY.encode(), CANARY.lower().encode(), CANARY.encode("utf-16-le")]
    # A vector as FAISS and SQLite store it (float32 little-endian); its first 64 bytes are
    # as unlikely as the whole to occur by chance.
    return words + [np.asarray(v, dtype="<f4").tobytes()[:64] for v in vectors]


def test_purge_leaves_no_copy_in_any_file(app_client, tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="torch is not installed (extra: backbone)")
    from tiny_lm import TinyLM

    from memos.memory import BackboneProvider
    from memos.store.blobs import BlobStore, blob_root

    client = app_client
    app: Any = client.app
    memos = app.state.memos
    model_memory = memos.model_memory(BackboneProvider(backbone=TinyLM()),
                                      BlobStore(blob_root(tmp_path)))
    turns = _cube(client)
    turn_id = turns[SESSION_1[2]["content"]]
    passport = next(f for f in _facts(client, "s1") if CANARY in f["text"])
    kv = model_memory.activations.create(
        "c", _activation_body([passport["id"]]), tenant=DEFAULT_TENANT)
    assert len(list(blob_root(tmp_path).rglob("*.safetensors"))) == 1
    with memos.store.transaction() as session:
        vectors = [row.embedding for row in session.scalars(select(UnitRow).where(
            UnitRow.embedding.is_not(None),
            UnitRow.id.in_([turn_id, passport["id"]])))]
    assert len(vectors) == 2
    memos.index.flush()  # the snapshot on disk holds the vectors now
    needles = _canary_needles(vectors)
    assert len(_files_containing(tmp_path, needles)) >= 3  # the scan does find them

    r = client.delete(f"/v1/cubes/c/memories/{turn_id}", params={"purge": "true"})
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["purged"] and report["retired"] == [passport["id"]]
    assert report["model_memory"] == [kv.unit.id]
    assert set(report["erased_from"]) == {"sql", "vector_index", "blobs"}
    _wait_for_jobs(client)

    assert _files_containing(tmp_path, needles) == []
    assert not [hit for hit in _texts_found(client, "passport number") if CANARY in hit[1]]
    # What the purge did not touch is still there.
    assert any("Berlin" in t for _, t in _texts_found(client, "Berlin"))


def _activation_body(unit_ids: list[str]) -> Any:
    from memos.types import ActivationCreate

    return ActivationCreate(unit_ids=unit_ids, max_tokens=512)


def test_purge_erases_every_postgres_row(tmp_path: Path, embedder: Any, pg_server: Any,
                                         settings: Settings) -> None:
    from conftest import build_service

    service = build_service("postgres", tmp_path, embedder, pg_server)
    with TestClient(create_app(settings, service=service)) as client:
        turns = _cube(client)
        turn_id = turns[SESSION_1[2]["content"]]
        with service.store.transaction() as session:
            vector = session.scalar(select(UnitRow.embedding).where(UnitRow.id == turn_id))
        r = client.delete(f"/v1/cubes/c/memories/{turn_id}", params={"purge": "true"})
        assert r.status_code == 200, r.text
        with service.store.engine.connect() as connection:
            tables = connection.execute(text(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars().all()
            leaks = [table for table in tables if connection.execute(text(
                f"SELECT count(*) FROM {table} t WHERE t::text ILIKE :needle"),
                {"needle": f"%{CANARY}%"}).scalar()]
            near = connection.execute(text(
                "SELECT count(*) FROM memory_units WHERE embedding IS NOT NULL "
                "AND embedding <#> CAST(:v AS vector) < -0.999"),
                {"v": "[" + ",".join(f"{x:.7f}" for x in vector) + "]"}).scalar()
        assert leaks == [] and near == 0
        with service.store.transaction() as session:
            message = session.scalar(select(MessageRow).where(MessageRow.session_id == "s1",
                                                              MessageRow.seq == 2))
            assert message.content == "" and message.deleted_at is not None
    service.store.dispose()


def test_deleted_cube_leaves_no_copy_in_any_file(app_client, tmp_path: Path) -> None:
    client = app_client
    memos = client.app.state.memos  # type: ignore[attr-defined]
    turns = _cube(client)
    with memos.store.transaction() as session:
        vector = session.scalar(select(UnitRow.embedding).where(
            UnitRow.id == turns[SESSION_1[2]["content"]]))
    memos.index.flush()
    needles = _canary_needles([vector])
    assert _files_containing(tmp_path, needles)
    assert client.delete("/v1/cubes/c").status_code == 204
    assert client.get("/v1/cubes").json() == []
    assert _files_containing(tmp_path, needles) == []


def test_a_cube_with_purged_turns_exports_and_imports(app_client) -> None:
    client = app_client
    turns = _cube(client)
    for content in (SESSION_1[0]["content"], SESSION_1[2]["content"]):  # two in one session
        assert client.delete(f"/v1/cubes/c/memories/{turns[content]}",
                             params={"purge": "true"}).status_code == 200
    data = client.get("/v1/cubes/c/export").json()
    purged = [m for m in data["messages"] if m["deleted_at"]]
    assert len(purged) == 2 and {m["content"] for m in purged} == {""}
    for message in purged:  # alike once erased: still two messages, not a duplicate
        message["timestamp"] = None
    r = client.post("/v1/cubes/import", json={"id": "c2", "data": data, "new_ids": True})
    assert r.status_code == 201, r.text
    again = client.get("/v1/cubes/c2/export").json()["messages"]
    assert sorted(bool(m["deleted_at"]) for m in again) == [False, False, False, True, True]


class _PurgeWhileEmbedding:
    """The cube's embedder, purging a unit the first time a deriver embeds: the deriver has
    read the session, the purge commits, then the deriver writes."""

    def __init__(self, client: TestClient, memory_id: str) -> None:
        self.client, self.memory_id = client, memory_id
        self.inner = client.app.state.memos.embedder  # type: ignore[attr-defined]
        self.name, self.dim = self.inner.name, self.inner.dim
        self.purged = False

    def embed(self, texts: list[str]) -> np.ndarray:
        if not self.purged:
            self.purged = True
            r = self.client.delete(f"/v1/cubes/c/memories/{self.memory_id}",
                                   params={"purge": "true"})
            assert r.status_code == 200, r.text
        return self.inner.embed(texts)


@pytest.mark.parametrize("deriver_name", ["granularity", "facts"])
def test_a_derive_job_that_read_before_a_purge_writes_nothing_of_it(
        tmp_path: Path, deriver_name: str) -> None:
    from memos.derive import DeriveContext

    settings = Settings(data_dir=tmp_path, run_worker=False, retrieval_flush_seconds=0)
    with TestClient(create_app(settings)) as client:
        memos = client.app.state.memos  # type: ignore[attr-defined]
        client.post("/v1/cubes", json={"id": "c", "metadata": {"user_name": "Ana"}})
        r = client.post("/v1/cubes/c/messages", json={"session_id": "s1",
                                                      "messages": SESSION_1})
        turn_id = r.json()["unit_ids"][2]  # the passport turn; derivation not run yet
        deriver = next(d for d in memos.derivers if d.name == deriver_name)
        ctx = DeriveContext(units=memos.units, jobs=memos.jobs,
                            embedder=_PurgeWhileEmbedding(client, turn_id))
        deriver.derive_session(ctx, cube_id="c", session_id="s1", tenant=DEFAULT_TENANT)
        assert ctx.embedder.purged  # type: ignore[attr-defined]
        with memos.store.transaction() as session:
            texts = session.scalars(select(UnitRow.text).where(UnitRow.text.is_not(None)))
            assert not [t for t in texts if CANARY.lower() in t.lower()]
        # The job the purge queued derives the session from what is left.
        memos.derive_session("c", "s1", tenant=DEFAULT_TENANT)
        kinds = {u["granularity"] for u in client.get(
            "/v1/cubes/c/memories", params={"limit": 100}).json()["items"]}
        assert {"summary", "keyword", "fact"} <= kinds
