"""Retrieval counting, automatic scheduler ticks and automatic rebuilds — none needs torch.

Runs on SQLite and PostgreSQL (the ``backend`` fixture). Model-memory units are written as
plain rows here (their payloads are irrelevant to counting and staleness), so the core
install, without the backbone extra, exercises every path.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from memos.cube import MemCube
from memos.errors import BackendUnavailable
from memos.jobs import Worker
from memos.memory import REBUILD_ACTIVATION_JOB, BackboneProvider, ModelMemory
from memos.scheduler import SCHEDULE_JOB, Scheduler
from memos.store.blobs import BlobStore
from memos.store.models import Base, CubeRow, JobRow, LinkRow, UnitRow, utcnow
from memos.store.sql import Store
from memos.types import CubeCreate, MemoryCreate, MemoryUpdate, SchedulerPolicy, SearchRequest
from memos.usage import RetrievalCounter

TEXTS = ["Tom has a dog named Biscuit.", "Aisha lives in Lisbon.",
         "Peter is allergic to peanuts."]


def _cube(service: MemCube, cube_id: str = "c1", **meta: Any) -> list[str]:
    service.create_cube(CubeCreate(id=cube_id, metadata=meta), tenant="t")
    return [service.create_memory(cube_id, MemoryCreate(text=t), tenant="t").id for t in TEXTS]


def _cube_row(service: MemCube, cube_id: str = "c1") -> CubeRow:
    """The cube of that id (one tenant per test here): its internal key is what its rows
    and jobs carry."""
    with service.store.transaction() as session:
        return session.scalars(select(CubeRow).where(CubeRow.id == cube_id)).one()


def _key(service: MemCube, cube_id: str = "c1") -> str:
    return _cube_row(service, cube_id).key


def _counts(service: MemCube) -> dict[str, int]:
    with service.store.transaction() as session:
        return dict(session.execute(select(UnitRow.id, UnitRow.retrievals)).all())


def _search(service: MemCube, query: str, top_k: int = 1, cube_id: str = "c1") -> list[str]:
    found = service.search(cube_id, SearchRequest(query=query, top_k=top_k, mode="dense"),
                           tenant="t")
    return [h.unit.id for h in found.hits]


def _model_memory(service: MemCube, tmp_path: Path, *, backbone: Any = None) -> ModelMemory:
    provider = BackboneProvider(tmp_path, backbone=backbone)
    return service.model_memory(provider, BlobStore(tmp_path / "blobs"))


def _derived(service: MemCube, cube_id: str, kind: str, sources: list[str]) -> str:
    """An active activation/parametric row linked ``derived_from`` the sources."""
    uid = uuid.uuid4().hex
    cube = _cube_row(service, cube_id)
    with service.store.transaction() as session:
        row = UnitRow(id=uid, cube_key=cube.key, tenant=cube.tenant, lineage_id=uid, version=1,
                      kind=kind, granularity="cluster", text="x", extractor=kind,
                      status="active", tags=[], meta={"sources": sources}, confidence=1.0,
                      created_at=utcnow())
        session.add(row)
        session.flush()
        for pk in session.scalars(select(UnitRow.pk).where(UnitRow.cube_key == cube.key,
                                                           UnitRow.id.in_(sources))):
            session.add(LinkRow(cube_key=row.cube_key, src_pk=row.pk, dst_pk=pk,
                                type="derived_from", weight=1.0, created_at=utcnow()))
    return uid


def _jobs(service: MemCube, kind: str) -> list[JobRow]:
    with service.store.transaction() as session:
        return list(session.scalars(select(JobRow).where(JobRow.kind == kind)))


# --------------------------------------------------------------------------- counting
def test_search_counts_in_memory_and_flush_adds_in_one_batch(service: MemCube) -> None:
    ids = _cube(service)
    hits = _search(service, "Which dog does Tom have?") + _search(service, "Tom's dog") \
        + _search(service, "Where does Aisha live?", top_k=2)
    assert hits[:2] == [ids[0], ids[0]] and hits[2] == ids[1]
    assert set(_counts(service).values()) == {0}  # nothing written on the search path
    assert service.retrievals.pending() == len(set(hits)) == 3
    assert service.retrievals.flush(service.store) == {_key(service): 4}
    counts = _counts(service)
    assert counts[ids[0]] == 2 and counts[ids[1]] >= 1 and sum(counts.values()) == 4
    assert service.retrievals.flush(service.store) == {}  # nothing pending: no statement
    _search(service, "Tom's dog")
    service.retrievals.flush(service.store)
    assert _counts(service)[ids[0]] == 3  # relative increments accumulate


def test_flush_keeps_the_counts_when_the_database_fails(tmp_path: Path) -> None:
    counter = RetrievalCounter()
    counter.record("c", [1, 2, 1])
    broken = Store(f"sqlite:///{tmp_path}/missing/dir/x.db")
    with pytest.raises(BackendUnavailable):
        counter.flush(broken)
    assert counter.pending() == 2  # put back for the next flush
    counter.record("c", [])
    assert counter.pending() == 2


def test_context_and_api_search_count_too(client: TestClient) -> None:
    assert client.post("/v1/cubes", json={"id": "c1"}).status_code == 201
    uid = client.post("/v1/cubes/c1/memories", json={"text": TEXTS[0]}).json()["id"]
    client.post("/v1/cubes/c1/search", json={"query": "dog", "top_k": 1, "mode": "dense"})
    client.post("/v1/cubes/c1/context", json={"query": "dog", "top_k": 1,
                                              "filters": {"kind": "plaintext"}})
    state = client.get("/v1/cubes/c1/scheduler").json()  # flushes before reading
    assert state["retrievals"] == {} and state["hot_units"] == []  # 2 < hot_min_retrievals
    app: Any = client.app
    with app.state.memos.store.transaction() as session:
        assert session.scalar(select(UnitRow.retrievals).where(UnitRow.id == uid)) == 2


def test_counts_follow_the_memory_across_versions(service: MemCube, tmp_path: Path) -> None:
    ids = _cube(service)
    for _ in range(3):
        _search(service, "Tom's dog")
    newer = service.update_memory("c1", ids[0], MemoryUpdate(text="Tom has a cat."),
                                  tenant="t")
    sched = Scheduler(_model_memory(service, tmp_path), SchedulerPolicy(hot_min_retrievals=3))
    assert sched.state("c1", tenant="t").retrievals == {newer.id: 3}


# --------------------------------------------------------------------------- automatic ticks
def test_housekeeping_queues_a_tick_after_enough_new_hits(service: MemCube,
                                                          tmp_path: Path) -> None:
    _cube(service)
    _cube(service, "quiet", scheduler_policy={"tick_every_retrievals": 0})
    mm = _model_memory(service, tmp_path, backbone=object())  # "loaded": ticks can run
    sched = Scheduler(mm, SchedulerPolicy(tick_every_retrievals=4))
    for _ in range(3):
        _search(service, "Tom's dog")
        _search(service, "Tom's dog", cube_id="quiet")
    assert sched.housekeeping() == []  # 3 < 4 new hits
    _search(service, "Aisha")
    _search(service, "Aisha", cube_id="quiet")
    jobs = sched.housekeeping()
    assert len(jobs) == 1
    assert [j.cube_key for j in _jobs(service, SCHEDULE_JOB)] == [_key(service)]
    for _ in range(4):
        _search(service, "Peter")
    assert sched.housekeeping() == jobs  # the queued tick is not queued twice
    # without the bundled model there is nothing a tick could do: none is queued
    sched = Scheduler(_model_memory(service, tmp_path), SchedulerPolicy(tick_every_retrievals=1))
    _search(service, "Peter", cube_id="quiet")
    service.delete_cube("c1", tenant="t")
    assert sched.housekeeping() == []


def test_a_bad_cube_policy_is_a_clear_error(client: TestClient) -> None:
    client.post("/v1/cubes", json={"id": "c1",
                                   "metadata": {"scheduler_policy": {"hot_min_retrievals": 0,
                                                                     "nonsense": 1}}})
    r = client.get("/v1/cubes/c1/scheduler")
    assert r.status_code == 422
    message = r.json()["error"]["message"]
    assert "scheduler_policy" in message and "hot_min_retrievals" in message
    assert "nonsense" in message


# --------------------------------------------------------------------------- automatic rebuild
def test_changing_a_source_queues_the_rebuild_job(service: MemCube, tmp_path: Path) -> None:
    ids = _cube(service)
    service.update_memory("c1", ids[2], MemoryUpdate(text="Peter is allergic to cats."),
                          tenant="t")
    assert service.jobs.pending(_key(service)) == 0  # no dependents: no job
    act = _derived(service, "c1", "activation", ids[:2])
    adapter = _derived(service, "c1", "parametric", [ids[1]])
    woken: list[int] = []
    service.jobs.on_enqueue = lambda: woken.append(1)
    service.update_memory("c1", ids[0], MemoryUpdate(text="Tom has a cat."), tenant="t")
    jobs = _jobs(service, REBUILD_ACTIVATION_JOB)
    assert [(j.cube_key, j.payload, j.status) for j in jobs] == [
        (_key(service), {"tenant": "t"}, "queued")]
    assert woken == [1]
    service.delete_memory("c1", ids[1], tenant="t")
    assert len(_jobs(service, REBUILD_ACTIVATION_JOB)) == 1  # one queued job covers both
    # the scheduler's handler: no backbone here, so stale units are archived, not rebuilt
    sched = Scheduler(_model_memory(service, tmp_path))
    assert Worker(service.jobs, sched.handlers()).run_pending() == 1
    history = sched.state("c1", tenant="t").history
    assert {(d.action, d.unit_ids[0]) for d in history} == {("archive_activation", act),
                                                            ("archive_adapter", adapter)}
    with service.store.transaction() as session:
        rows = session.scalars(select(UnitRow).where(UnitRow.id.in_([act, adapter]))).all()
        assert {(r.status, r.status_reason) for r in rows} == {
            ("archived", "stale: source changed")}
    assert _jobs(service, SCHEDULE_JOB) == []  # no model to retrain with


def test_archiving_a_source_through_patch_queues_the_rebuild(client: TestClient) -> None:
    client.post("/v1/cubes", json={"id": "c1"})
    uid = client.post("/v1/cubes/c1/memories", json={"text": TEXTS[0]}).json()["id"]
    app: Any = client.app
    _derived(app.state.memos, "c1", "activation", [uid])
    r = client.patch(f"/v1/cubes/c1/memories/{uid}", json={"status": "archived"})
    assert r.status_code == 200 and client.get("/v1/cubes/c1").json()["pending_jobs"] == 1


def test_an_extracted_update_queues_the_rebuild(service: MemCube, client: TestClient) -> None:
    from memos.derive.facts import FactDeriver

    service.derivers = [FactDeriver()]
    client.post("/v1/cubes", json={"id": "a"})
    said = [("s1", "I live in Berlin.", "2023-05-08T10:00:00Z"),
            ("s2", "Big news: I moved to Munich last month.", "2023-09-08T10:00:00Z")]
    for session_id, content, at in said[:1]:
        client.post("/v1/cubes/a/messages", json={"session_id": session_id, "sync": True,
                    "messages": [{"role": "user", "speaker": "Ana", "content": content,
                                  "timestamp": at}]})
    [berlin] = client.get("/v1/cubes/a/sessions/s1/memories").json()
    _derived(service, "a", "parametric", [berlin["id"]])
    for session_id, content, at in said[1:]:
        client.post("/v1/cubes/a/messages", json={"session_id": session_id, "sync": True,
                    "messages": [{"role": "user", "speaker": "Ana", "content": content,
                                  "timestamp": at}]})
    assert client.get(f"/v1/cubes/a/memories/{berlin['id']}").json()["status"] == "superseded"
    assert [j.cube_key for j in _jobs(service, REBUILD_ACTIVATION_JOB)] == [_key(service, "a")]


# --------------------------------------------------------------------------- schema
def _fresh_url(backend: str, tmp_path: Path, pg_server: Any) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path}/fresh.db"
    if pg_server is None:
        pytest.skip("PostgreSQL (pgserver) could not start")
    name = "m_" + uuid.uuid4().hex[:12]
    pg_server.psql(f"CREATE DATABASE {name};")
    return str(pg_server.get_uri()).replace("/postgres?", f"/{name}?")


def test_migration_0002_adds_the_column_and_matches_the_models(
        backend: str, tmp_path: Path, pg_server: Any) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from memos.store.sql import MIGRATIONS_DIR, include_object

    store = Store(_fresh_url(backend, tmp_path, pg_server))
    try:
        store.upgrade("0001")
        now = utcnow().replace(tzinfo=None).isoformat(" ")
        with store.engine.begin() as conn:
            conn.execute(text("INSERT INTO cubes (id, tenant, metadata, embedding_model, "
                              "embedding_dim, index_version, created_at) VALUES "
                              "('c', 't', '{}', 'm', 3, 0, :now)"), {"now": now})
            conn.execute(text("INSERT INTO memory_units (id, cube_id, tenant, lineage_id, "
                              "version, kind, granularity, extractor, status, tags, metadata, "
                              "confidence, created_at) VALUES ('u', 'c', 't', 'u', 1, "
                              "'plaintext', 'fact', 'user', 'active', '[]', '{}', 1.0, :now)"),
                         {"now": now})
        store.upgrade()
        assert store.current_revision() == ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT retrievals FROM memory_units")).scalar() == 0
            # what `alembic check` verifies: the migrations give exactly the models' schema
            context = MigrationContext.configure(conn, opts={"include_object": include_object})
            assert compare_metadata(context, Base.metadata) == []
        store.downgrade("0001")
        assert store.current_revision() == "0001"
    finally:
        store.dispose()
