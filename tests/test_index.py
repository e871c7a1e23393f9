"""FAISS snapshots: never trusted blindly; rebuilt from SQL when missing, corrupt or stale."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import cube_key

from memos.cube import MemCube
from memos.embed import HashingEmbedder
from memos.index.faiss import FaissIndex
from memos.store.sql import Store
from memos.types import CubeCreate, MemoryCreate, SearchRequest


def _service(tmp_path: Path, **kw) -> MemCube:
    store = Store(f"sqlite:///{tmp_path}/memos.db")
    store.upgrade()
    index = FaissIndex(tmp_path / "index", store.session_factory, **kw)
    return MemCube(store=store, index=index, embedder=HashingEmbedder(dim=32))


def _fill(svc: MemCube, n: int) -> list[str]:
    svc.create_cube(CubeCreate(id="c"), tenant="t")
    return [svc.create_memory("c", MemoryCreate(text=f"memory number {i} about topic{i}"),
                              tenant="t").id for i in range(n)]


def _top(svc: MemCube, query: str) -> str | None:
    hits = svc.search("c", SearchRequest(query=query, top_k=1), tenant="t").hits
    return hits[0].unit.text if hits else None


def _reopen(tmp_path: Path, svc: MemCube) -> MemCube:
    svc.index.flush()
    svc.store.dispose()
    return _service(tmp_path)


def test_snapshot_is_reused_when_fresh(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    _fill(svc, 5)
    svc = _reopen(tmp_path, svc)
    stamp = json.loads((tmp_path / "index" / f"{cube_key(svc, 'c', tenant='t')}.json")
                       .read_text())
    assert stamp["ntotal"] == 5
    assert _top(svc, "topic3") == "memory number 3 about topic3"


@pytest.mark.parametrize("damage", ["missing", "corrupt", "stale", "other-model"])
def test_damaged_snapshot_is_rebuilt_from_sql(tmp_path: Path, damage: str) -> None:
    svc = _service(tmp_path)
    ids = _fill(svc, 5)
    svc = _reopen(tmp_path, svc)
    key = cube_key(svc, "c", tenant="t")
    index_file, stamp_file = tmp_path / "index" / f"{key}.faiss", tmp_path / "index" / f"{key}.json"
    if damage == "missing":
        index_file.unlink()
    elif damage == "corrupt":
        index_file.write_bytes(b"garbage" * 10)
    elif damage == "stale":
        # SQL moved on after the snapshot (as after a crash before the next snapshot).
        svc.delete_memory("c", ids[3], tenant="t")
        svc.create_memory("c", MemoryCreate(text="a late memory about zebras"), tenant="t")
        svc.store.dispose()
        svc = _service(tmp_path)  # no flush: the snapshot on disk is now older than SQL
    else:
        stamp = json.loads(stamp_file.read_text())
        stamp["embedding_model"] = "some-other-model"
        stamp_file.write_text(json.dumps(stamp))
    svc = _service(tmp_path)
    if damage == "stale":
        assert _top(svc, "zebras") == "a late memory about zebras"
        hits = svc.search("c", SearchRequest(query="topic3", top_k=10), tenant="t").hits
        assert ids[3] not in {h.unit.id for h in hits}
    else:
        assert _top(svc, "topic3") == "memory number 3 about topic3"


def test_snapshots_are_amortised_not_per_write(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    svc.index._snapshot_every = 4  # type: ignore[attr-defined]
    _fill(svc, 12)
    writes = []
    original = svc.index._snapshot  # type: ignore[attr-defined]

    def counting(*args, **kwargs):
        writes.append(1)
        return original(*args, **kwargs)

    svc.index._snapshot = counting  # type: ignore[attr-defined]
    for i in range(40):
        svc.create_memory("c", MemoryCreate(text=f"extra {i}"), tenant="t")
    # Threshold grows with the index (max(every, ntotal)): far fewer snapshots than writes.
    assert 1 <= len(writes) <= 3


def test_wrong_model_cube_is_refused(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    _fill(svc, 1)
    svc.store.dispose()
    store = Store(f"sqlite:///{tmp_path}/memos.db")
    other = MemCube(store=store, index=FaissIndex(tmp_path / "index", store.session_factory),
                    embedder=HashingEmbedder(dim=48))
    from memos.errors import Conflict

    with pytest.raises(Conflict, match="hashing-32"):
        other.search("c", SearchRequest(query="x"), tenant="t")
    with pytest.raises(Conflict):
        other.create_memory("c", MemoryCreate(text="x"), tenant="t")


def test_vectors_are_unit_norm(tmp_path: Path) -> None:
    vectors = HashingEmbedder(dim=16).embed(["a b c", "d"])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)


def _query_plans(svc: MemCube, action: Callable[[], object], marker: str) -> list[str]:
    """SQLite's plans for the ``memory_units`` statements containing ``marker`` that
    ``action`` runs."""
    from sqlalchemy import event

    statements: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        if "FROM memory_units" in statement and marker in statement:
            statements.append((statement, parameters))

    event.listen(svc.store.engine, "before_cursor_execute", capture)
    try:
        action()
    finally:
        event.remove(svc.store.engine, "before_cursor_execute", capture)
    assert statements, f"no statement with {marker!r} ran"
    with svc.store.engine.connect() as conn:
        return [" ".join(str(r[-1]) for r in conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN " + statement, parameters)) for statement, parameters in statements]


def test_candidates_are_fetched_by_primary_key(tmp_path: Path) -> None:
    """SQLite must look the index's candidates up by rowid, not scan the cube's units."""
    svc = _service(tmp_path)
    _fill(svc, 30)
    found: list[str | None] = []
    plans = _query_plans(svc, lambda: found.append(_top(svc, "topic7")), ".pk IN")
    assert found == ["memory number 7 about topic7"]
    assert all("PRIMARY KEY" in plan for plan in plans), plans


def test_session_lookups_use_the_session_index(tmp_path: Path) -> None:
    """Ingest's per-session queries go through ix_units_session, not a scan of the cube."""
    from memos.types import MessagesIngest

    svc = _service(tmp_path)
    svc.create_cube(CubeCreate(id="c"), tenant="t")
    for s in range(3):
        svc.ingest("c", MessagesIngest(session_id=f"s{s}", messages=[
            {"role": "user", "content": f"turn {i} of session {s}"} for i in range(4)]),
            tenant="t")
    plans = _query_plans(svc, lambda: svc.ingest("c", MessagesIngest(
        session_id="s1", messages=[{"role": "user", "content": "one more turn"}]), tenant="t"),
        "memory_units.session_id = ")
    assert all("ix_units_session" in plan for plan in plans), plans


def test_dense_scores_are_exact_and_stale_keys_are_rescored_from_sql(tmp_path: Path) -> None:
    """Live graph entries are scored by the graph (no vector column fetched); a key with a
    dead entry is re-scored from its SQL vector, so a replaced vector never scores."""
    from memos.store.models import UnitRow, vector_of
    from memos.types import MemoryUpdate

    svc = _service(tmp_path)
    ids = _fill(svc, 8)
    svc.update_memory("c", ids[2], MemoryUpdate(text="a kayak trip on the lake"), tenant="t")
    svc.delete_memory("c", ids[3], tenant="t")
    emb = HashingEmbedder(dim=32)
    for query in ("topic2", "kayak lake", "memory number"):
        hits = svc.search("c", SearchRequest(query=query, top_k=8, mode="dense"),
                          tenant="t").hits
        q = emb.embed([query])[0]
        with svc.store.transaction() as session:
            rows = {r.id: r for r in session.query(UnitRow).filter(
                UnitRow.id.in_([h.unit.id for h in hits]))}
            for h in hits:
                assert h.score == pytest.approx(float(vector_of(rows[h.unit.id]) @ q), abs=1e-5)
        assert ids[3] not in {h.unit.id for h in hits}
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    key = cube_key(svc, "c", tenant="t")
    state = svc.index._cubes[key]
    assert state.stale is not None and state.dead >= 1 and len(state.stale) == state.dead
