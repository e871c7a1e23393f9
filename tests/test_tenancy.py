"""Tenants are separate namespaces (issue 15, failure 5): cube ids are unique per tenant,
unit and message ids per cube, and nothing a tenant can ask tells it whether another
tenant's cube, memory or job exists.

Each test runs on SQLite and PostgreSQL (the ``service`` fixture), through the HTTP API.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi.testclient import TestClient
from sqlalchemy import text

from api.main import create_app
from memos.config import Settings
from memos.cube import MemCube
from memos.errors import NotFound
from memos.index.faiss import FaissIndex
from memos.index.pgvector import PgVectorIndex
from memos.store.models import Base, utcnow
from memos.store.sql import MIGRATIONS_DIR, Store, include_object
from memos.types import CubeCreate

A = {"Authorization": "Bearer key-a"}
B = {"Authorization": "Bearer key-b"}


@pytest.fixture
def api(service: MemCube, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path, api_keys="alpha:key-a,beta:key-b", run_worker=False,
                        retrieval_flush_seconds=0)
    with TestClient(create_app(settings, service=service)) as client:
        yield client


def _ingest(client: TestClient, headers: dict[str, str], cube: str, text: str) -> Any:
    r = client.post(f"/v1/cubes/{cube}/messages", headers=headers, json={
        "session_id": "s1", "sync": True,
        "messages": [{"id": "m1", "role": "user", "speaker": "Ana", "content": text}]})
    assert r.status_code == 201, r.text
    return r.json()


def test_two_tenants_each_have_a_cube_demo(api: TestClient) -> None:
    assert api.post("/v1/cubes", json={"id": "demo"}, headers=A).status_code == 201
    r = api.post("/v1/cubes", json={"id": "demo"}, headers=B)
    assert r.status_code == 201, r.text  # was 409: "cube 'demo' already exists"
    assert api.post("/v1/cubes", json={"id": "demo"}, headers=B).status_code == 409
    _ingest(api, A, "demo", "Ana keeps three goats on her farm.")
    _ingest(api, B, "demo", "Ana flies gliders every weekend.")
    a = api.post("/v1/cubes/demo/search", headers=A,
                 json={"query": "What does Ana do?", "top_k": 10}).json()
    b = api.post("/v1/cubes/demo/search", headers=B,
                 json={"query": "What does Ana do?", "top_k": 10}).json()
    a_texts = " ".join(h["unit"]["text"] or "" for h in a["hits"] + a.get("sessions", []))
    b_texts = " ".join(h["unit"]["text"] or "" for h in b["hits"] + b.get("sessions", []))
    assert "goats" in a_texts and "gliders" not in a_texts
    assert "gliders" in b_texts and "goats" not in b_texts
    for mode in ("dense", "router"):
        hits = api.post("/v1/cubes/demo/search", headers=A, json={
            "query": "gliders", "top_k": 10, "mode": mode}).json()["hits"]
        assert all("gliders" not in (h["unit"]["text"] or "") for h in hits), mode
    assert all(h["unit"]["cube_id"] == "demo" for h in a["hits"])
    # The same message id "m1" lives in both cubes; each tenant sees its own.
    assert [c["units"] for c in api.get("/v1/cubes", headers=A).json()] == [
        api.get("/v1/cubes/demo", headers=A).json()["units"]]
    export_a = api.get("/v1/cubes/demo/export", headers=A).json()
    assert [m["content"] for m in export_a["messages"]] == ["Ana keeps three goats on her farm."]
    assert api.delete("/v1/cubes/demo", headers=A).status_code == 204
    assert api.get("/v1/cubes/demo", headers=A).status_code == 404
    assert api.get("/v1/cubes/demo", headers=B).json()["units"] > 0
    hits = api.post("/v1/cubes/demo/search", headers=B,
                    json={"query": "gliders", "top_k": 3}).json()["hits"]
    assert "gliders" in hits[0]["unit"]["text"]


def _probe(client: TestClient, cube: str, unit_id: str, job_id: int, *,
           create: bool = False) -> list[tuple[int, Any]]:
    """What tenant A gets back from every route that names ``cube``, ``unit_id`` and
    ``job_id``: status and body (timings dropped). ``create``: also create the cube (and
    delete it again)."""
    requests: list[tuple[str, str, Any]] = [
        ("GET", f"/v1/cubes/{cube}", None),
        *([("POST", "/v1/cubes", {"id": cube})] if create else []),
        ("GET", f"/v1/cubes/{cube}/memories/{unit_id}", None),
        ("GET", f"/v1/cubes/{cube}/memories/{unit_id}/history", None),
        ("GET", f"/v1/cubes/{cube}/memories/{unit_id}/provenance", None),
        ("PATCH", f"/v1/cubes/{cube}/memories/{unit_id}", {"text": "x"}),
        ("DELETE", f"/v1/cubes/{cube}/memories/{unit_id}", None),
        ("GET", f"/v1/cubes/{cube}/adapters/jobs/{job_id}", None),
        ("GET", f"/v1/cubes/{cube}/adapters/{unit_id}", None),
        ("GET", f"/v1/cubes/{cube}/activations/{unit_id}", None),
        ("POST", f"/v1/cubes/{cube}/search", {"query": "passport"}),
    ]
    out = []
    for method, path, body in requests:
        r = client.request(method, path, headers=A, json=body)
        payload = r.json() if r.content else None
        if isinstance(payload, dict):
            payload = {k: v for k, v in payload.items() if k not in ("took_ms", "created_at")}
        out.append((r.status_code, payload))
        if method == "POST" and path == "/v1/cubes":
            client.delete(f"/v1/cubes/{cube}", headers=A)
    return out


def test_another_tenants_objects_look_exactly_like_missing_ones(api: TestClient) -> None:
    # A's own cube "mine", to ask it for B's unit and job ids too.
    api.post("/v1/cubes", json={"id": "mine"}, headers=A)
    unit_guess, job_guess = "0" * 32, 1
    before = {c: _probe(api, c, unit_guess, job_guess, create=c == "bsecret")
              for c in ("bsecret", "mine")}
    assert api.post("/v1/cubes", json={"id": "bsecret"}, headers=B).status_code == 201
    fact = api.post("/v1/cubes/bsecret/memories", headers=B,
                    json={"text": "Bea's passport number is ZX9917364."}).json()
    job = api.post("/v1/cubes/bsecret/adapters", headers=B,
                   json={"unit_ids": [fact["id"]]}).json()
    assert job["job_id"] >= 1
    after = {c: _probe(api, c, fact["id"], job["job_id"], create=c == "bsecret")
             for c in ("bsecret", "mine")}
    # Same status codes, and bodies equal once the probed ids are put back to the guesses.
    for cube in ("bsecret", "mine"):
        shown = json.dumps(after[cube]).replace(fact["id"], unit_guess)
        shown = shown.replace(f"job {job['job_id']} not found", f"job {job_guess} not found")
        shown = shown.replace(f'"job_id": {job["job_id"]}', f'"job_id": {job_guess}')
        assert json.loads(shown) == json.loads(json.dumps(before[cube])), cube
    assert [status for status, _ in after["bsecret"]] == [404, 201] + [404] * 9
    assert "ZX9917364" not in json.dumps(after)


def test_import_of_another_tenants_export_names_none_of_its_ids(api: TestClient) -> None:
    api.post("/v1/cubes", json={"id": "b"}, headers=B)
    _ingest(api, B, "b", "Bea moved to Reykjavik in March 2021.")
    fact = api.post("/v1/cubes/b/memories", headers=B, json={"text": "Bea likes tea."}).json()
    export = api.get("/v1/cubes/b/export", headers=B).json()
    # A imports B's export verbatim: the unit and message ids B uses are no obstacle and
    # show up nowhere but in A's own copy (before: 409 naming one of B's unit ids).
    r = api.post("/v1/cubes/import", headers=A, json={"id": "copy", "data": export})
    assert r.status_code == 201, r.text
    assert api.get(f"/v1/cubes/copy/memories/{fact['id']}", headers=A).json()["text"] \
        == "Bea likes tea."
    # and again, into a second cube of A: ids are unique per cube
    assert api.post("/v1/cubes/import", headers=A,
                    json={"id": "copy2", "data": export}).status_code == 201
    # A's corrections stay in A's copy
    api.patch(f"/v1/cubes/copy/memories/{fact['id']}", headers=A, json={"text": "Bea: coffee"})
    assert api.get(f"/v1/cubes/b/memories/{fact['id']}", headers=B).json()["status"] == "active"
    history = api.get(f"/v1/cubes/copy/memories/{fact['id']}/history", headers=A).json()
    assert [h["text"] for h in history] == ["Bea likes tea.", "Bea: coffee"]
    newer = api.patch(f"/v1/cubes/copy2/memories/{fact['id']}", headers=A,
                      json={"text": "Bea: juice"}).json()
    r = api.patch(f"/v1/cubes/copy2/memories/{fact['id']}", headers=A, json={"text": "x"})
    assert r.status_code == 409  # superseded: the current version is copy2's, not copy's
    assert r.json()["error"]["details"] == {"current_id": newer["id"]}
    # B re-importing into a cube id A uses is B's business only
    assert api.post("/v1/cubes/import", headers=B,
                    json={"id": "copy", "data": export}).status_code == 201
    assert api.post("/v1/cubes/import", headers=B,
                    json={"id": "copy", "data": export}).status_code == 409


# --------------------------------------------------------------------------- migration 0005
HEAD = sorted(p.name.split("_")[0] for p in MIGRATIONS_DIR.glob("versions/0*.py"))[-1]
def _fresh_url(backend: str, tmp_path: Path, pg_server: Any) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path}/old.db"
    if pg_server is None:
        pytest.skip("PostgreSQL (pgserver) could not start")
    name = "m_" + uuid.uuid4().hex[:12]
    pg_server.psql(f"CREATE DATABASE {name};")
    return str(pg_server.get_uri()).replace("/postgres?", f"/{name}?")


#: a database at revision 0003: two tenants' cubes, each with messages, units (the same
#: message id in both), a span, a link, a tag and a queued job
ROWS_0003 = [
    "INSERT INTO cubes (id, tenant, name, metadata, embedding_model, embedding_dim, "
    "index_version, created_at) VALUES ('ana', 't1', 'Ana', '{}', 'm', 3, 4, :now), "
    "('bob', 't2', NULL, '{}', 'm', 3, 1, :now)",
    "INSERT INTO messages (pk, id, cube_id, session_id, seq, role, content, content_sha, "
    "created_at) VALUES (1, 'm1', 'ana', 's', 0, 'user', 'I keep bees.', 'h1', :now), "
    "(2, 'm1', 'bob', 's', 0, 'user', 'I fly gliders.', 'h2', :now)",
    "INSERT INTO memory_units (pk, id, cube_id, tenant, lineage_id, version, kind, "
    "granularity, text, extractor, status, tags, metadata, confidence, created_at, "
    "retrievals) VALUES "
    "(1, 'u1', 'ana', 't1', 'u1', 1, 'plaintext', 'turn', 'I keep bees.', 'ingest', "
    "'active', '[\"pinned\"]', '{}', 1.0, :now, 7), "
    "(2, 'u2', 'ana', 't1', 'u2', 1, 'plaintext', 'fact', 'Ana keeps bees', 'rules', "
    "'active', '[]', '{}', 0.9, :now, 0), "
    "(3, 'u3', 'bob', 't2', 'u3', 1, 'plaintext', 'turn', 'I fly gliders.', 'ingest', "
    "'active', '[]', '{}', 1.0, :now, 0)",
    "INSERT INTO provenance_spans (unit_pk, message_pk, start, \"end\") VALUES (2, 1, 2, 12)",
    "INSERT INTO unit_links (cube_id, src_pk, dst_pk, type, weight, created_at) "
    "VALUES ('ana', 2, 1, 'derived_from', 1.0, :now)",
    "INSERT INTO unit_tags (unit_pk, tag) VALUES (1, 'pinned')",
    "INSERT INTO jobs (kind, cube_id, payload, status, attempts, progress, run_after, "
    "created_at) VALUES ('derive_session', 'ana', '{\"tenant\": \"t1\", \"session_id\": "
    "\"s\"}', 'queued', 0, 0.0, :now, :now)",
]

COUNTS = "SELECT (SELECT COUNT(*) FROM cubes), (SELECT COUNT(*) FROM messages), " \
    "(SELECT COUNT(*) FROM memory_units), (SELECT COUNT(*) FROM provenance_spans), " \
    "(SELECT COUNT(*) FROM unit_links), (SELECT COUNT(*) FROM unit_tags), " \
    "(SELECT COUNT(*) FROM jobs)"


def test_upgrade_from_0003_keeps_every_row_and_matches_the_models(
        backend: str, tmp_path: Path, pg_server: Any, embedder: Any) -> None:
    store = Store(_fresh_url(backend, tmp_path, pg_server))
    try:
        store.upgrade("0003")
        now = utcnow().replace(tzinfo=None).isoformat(" ")
        with store.engine.begin() as conn:
            for statement in ROWS_0003:
                conn.execute(text(statement), {"now": now})
        store.upgrade()  # through 0005 (and every later revision)
        with store.engine.connect() as conn:
            assert tuple(conn.execute(text(COUNTS)).one()) == (2, 2, 3, 1, 1, 1, 1)
            # an existing cube's key is its old id, so its rows and snapshots stay its own
            assert conn.execute(text("SELECT key, id, tenant FROM cubes ORDER BY key")).all() \
                == [("ana", "ana", "t1"), ("bob", "bob", "t2")]
            assert conn.execute(text(
                "SELECT m.cube_key, m.content, u.id, u.retrievals FROM provenance_spans s "
                "JOIN messages m ON m.pk = s.message_pk JOIN memory_units u ON u.pk = s.unit_pk"
            )).all() == [("ana", "I keep bees.", "u2", 0)]
            assert conn.execute(text("SELECT cube_key FROM unit_links")).scalar() == "ana"
            assert conn.execute(text("SELECT retrievals FROM memory_units WHERE id = 'u1'")) \
                .scalar() == 7
            assert conn.execute(text("SELECT cube_key FROM jobs")).scalar() == "ana"
            context = MigrationContext.configure(conn, opts={"include_object": include_object})
            assert compare_metadata(context, Base.metadata) == []
        index = PgVectorIndex() if store.is_postgres else FaissIndex(tmp_path / "index",
                                                                     store.session_factory)
        memos = MemCube(store=store, index=index, embedder=embedder)
        assert memos.get_memory("ana", "u1", tenant="t1").tags == ["pinned"]
        assert memos.provenance("ana", "u2", tenant="t1").sources[0].quote == "keep bees."
        assert memos.get_cube("ana", tenant="t1").pending_jobs == 1
        with pytest.raises(NotFound):
            memos.get_cube("ana", tenant="t2")
        memos.create_cube(CubeCreate(id="ana"), tenant="t2")  # t2's own "ana" now
        job = memos.jobs.claim("w")
        assert job is not None and (job.cube_id, job.payload["tenant"]) == ("ana", "t1")
        with pytest.raises(RuntimeError, match="cube ids \\['ana'\\]"):
            store.downgrade("0003")
        memos.delete_cube("ana", tenant="t2")
        store.downgrade("0003")
        with store.engine.connect() as conn:
            assert tuple(conn.execute(text(COUNTS)).one()) == (2, 2, 3, 1, 1, 1, 1)
            assert conn.execute(text("SELECT cube_id FROM memory_units ORDER BY pk")).scalars() \
                .all() == ["ana", "ana", "bob"]
        store.upgrade()  # and back up: the round trip is repeatable
        assert store.current_revision() == HEAD
    finally:
        store.dispose()


def test_migration_0007_makes_session_spans_cite_whole_messages(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/m.db")
    try:
        store.upgrade("0006")
        now = utcnow().replace(tzinfo=None).isoformat(" ")
        with store.engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO cubes (key, id, tenant, metadata, embedding_model, embedding_dim, "
                "index_version, created_at) VALUES ('k', 'c', 't', '{}', 'm', 3, 0, :now)"),
                {"now": now})
            for pk, content in ((1, "hello there"), (2, "second message")):
                conn.execute(text(
                    "INSERT INTO messages (pk, id, cube_key, session_id, seq, role, content, "
                    "content_sha, created_at) VALUES (:pk, :id, 'k', 's', :seq, 'user', "
                    ":content, :id, :now)"),
                    {"pk": pk, "id": f"m{pk}", "seq": pk - 1, "content": content, "now": now})
            for pk, granularity in ((1, "session"), (2, "fact")):
                conn.execute(text(
                    "INSERT INTO memory_units (pk, id, cube_key, tenant, lineage_id, version, "
                    "kind, granularity, extractor, status, tags, metadata, confidence, "
                    "created_at, retrievals) VALUES (:pk, :id, 'k', 't', :id, 1, 'plaintext', "
                    ":g, 'ingest', 'active', '[]', '{}', 1.0, :now, 0)"),
                    {"pk": pk, "id": f"u{pk}", "g": granularity, "now": now})
            # the old transcript offsets ("user: hello there\nuser: second message"), and a
            # fact's span, which must not change
            for unit_pk, message_pk, start, end in ((1, 1, 6, 17), (1, 2, 24, 38),
                                                     (2, 2, 0, 6)):
                conn.execute(text(
                    'INSERT INTO provenance_spans (unit_pk, message_pk, start, "end") '
                    "VALUES (:u, :m, :s, :e)"), {"u": unit_pk, "m": message_pk, "s": start,
                                                  "e": end})
        store.upgrade()
        with store.engine.connect() as conn:
            spans = conn.execute(text(
                'SELECT unit_pk, message_pk, start, "end" FROM provenance_spans '
                "ORDER BY unit_pk, message_pk")).all()
        assert [tuple(s) for s in spans] == [(1, 1, 0, 11), (1, 2, 0, 14), (2, 2, 0, 6)]
    finally:
        store.dispose()
