"""FAISS per cube, keyed by the SQL row id (``memory_units.pk``).

Each cube has an HNSW graph (M=16, inner product): sub-millisecond search at 100k vectors
where a flat scan costs ~15 ms of memory bandwidth, at ~3k inserts/s (a tenth of what the
embedder costs). HNSW cannot delete, so a removed unit stays in the graph as a dead entry:
every candidate is re-checked against its SQL row (key, cube, status, filters: no vector
column), and a candidate whose key has a dead entry is re-scored from its SQL vector, so
dead or stale vectors can cost recall slack but never return a deleted unit or a wrong
score (HNSWFlat keeps the exact vectors, so a live entry's graph score is exact); the graph
is rebuilt from SQL once dead entries outnumber live ones.

Each cube's index lives in memory and is snapshotted to ``<data_dir>/index/<cube key>.faiss``
with ``faiss.write_index`` (no pickle) next to a JSON stamp naming the cube's
``index_version`` and the embedding model it holds. Every index-changing write bumps
``cubes.index_version`` in the same SQL transaction, so a snapshot that is missing, corrupt,
of another model, or older than SQL (a crash between commit and snapshot) is detected on
load and rebuilt from the embeddings in SQL — it is never trusted blindly.

Snapshots are written after ``snapshot_every`` changes, a threshold that grows with the index,
so persistence costs O(1) amortised per write instead of rewriting the index on every add.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from memos.store.models import CubeRow, UnitRow

log = logging.getLogger(__name__)


HNSW_M = 16
HNSW_EF_CONSTRUCTION = 40
HNSW_EF_SEARCH = 128


def _new_index(dim: int) -> faiss.IndexIDMap2:
    graph = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    return faiss.IndexIDMap2(graph)


@dataclass
class _CubeIndex:
    index: faiss.IndexIDMap2
    version: int
    changes_since_snapshot: int = 0
    size_at_snapshot: int = 0
    dead: int = 0
    #: keys with a dead entry in the graph (removed or replaced), whose graph vector may
    #: not be the unit's; None = unknown (a snapshot with dead entries, loaded)
    stale: set[int] | None = None


def searchable(cube_key: str | None) -> list[ColumnElement[bool]]:
    """The SQL conditions that define which units an index holds (in any cube when
    ``cube_key`` is None)."""
    conds = [UnitRow.status == "active", UnitRow.kind == "plaintext",
             UnitRow.embedding.is_not(None)]
    return conds if cube_key is None else [UnitRow.cube_key == cube_key, *conds]


class FaissIndex:
    name = "faiss"

    def __init__(self, directory: Path, sessions: Callable[[], Session], *,
                 snapshot_every: int = 10_000) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._sessions = sessions
        self._snapshot_every = snapshot_every
        self._cubes: dict[str, _CubeIndex] = {}
        self._lock = threading.RLock()
        # One thread per query: the API already serves requests concurrently, and OpenMP
        # spinning on 2 cores makes a single search many times slower.
        faiss.omp_set_num_threads(1)

    # ------------------------------------------------------------------ loading
    def _paths(self, cube_key: str) -> tuple[Path, Path]:
        return self.directory / f"{cube_key}.faiss", self.directory / f"{cube_key}.json"

    def _get(self, cube: CubeRow) -> _CubeIndex:
        state = self._cubes.get(cube.key)
        if state is None:
            state = self._load(cube) or self._rebuild(cube)
            self._cubes[cube.key] = state
        return state

    def _load(self, cube: CubeRow) -> _CubeIndex | None:
        index_path, stamp_path = self._paths(cube.key)
        if not index_path.exists() or not stamp_path.exists():
            return None
        try:
            stamp = json.loads(stamp_path.read_text())
            index = faiss.read_index(str(index_path))
        except (OSError, ValueError, RuntimeError) as exc:
            log.warning("index snapshot for cube %s is unreadable (%s); rebuilding", cube.key, exc)
            return None
        fresh = (stamp.get("index_version") == cube.index_version
                 and stamp.get("embedding_model") == cube.embedding_model
                 and stamp.get("ntotal") == index.ntotal and index.d == cube.embedding_dim)
        if not fresh:
            log.info("index snapshot for cube %s is stale; rebuilding", cube.key)
            return None
        if not isinstance(index, faiss.IndexIDMap2):
            return None
        dead = int(stamp.get("dead", 0))
        stale = stamp.get("stale")
        return _CubeIndex(index, version=cube.index_version, size_at_snapshot=index.ntotal,
                          dead=dead, stale=set() if dead == 0 else (
                              {int(i) for i in stale} if isinstance(stale, list) else None))

    def _rebuild(self, cube: CubeRow) -> _CubeIndex:
        index = _new_index(cube.embedding_dim)
        with self._sessions() as session:
            rows = session.execute(
                select(UnitRow.pk, UnitRow.embedding).where(*searchable(cube.key))
            ).all()
        if rows:
            pks = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vectors = np.stack([r[1] for r in rows]).astype(np.float32)
            index.add_with_ids(vectors, pks)
        state = _CubeIndex(index, version=cube.index_version,
                           changes_since_snapshot=len(rows) or 1, stale=set())
        self._snapshot(cube.key, state, cube.embedding_model)
        return state

    def _snapshot(self, cube_key: str, state: _CubeIndex, model: str) -> None:
        index_path, stamp_path = self._paths(cube_key)
        tmp_index, tmp_stamp = index_path.with_suffix(".faiss.tmp"), stamp_path.with_suffix(".tmp")
        faiss.write_index(state.index, str(tmp_index))
        stale = (sorted(state.stale) if state.stale is not None
                 and len(state.stale) <= 100_000 else None)
        tmp_stamp.write_text(json.dumps({"index_version": state.version, "ntotal":
                                         state.index.ntotal, "dead": state.dead,
                                         "stale": stale, "embedding_model": model}))
        # Index first, stamp last: a crash in between leaves an old stamp → detected as stale.
        os.replace(tmp_index, index_path)
        os.replace(tmp_stamp, stamp_path)
        state.changes_since_snapshot = 0
        state.size_at_snapshot = state.index.ntotal

    def _after_change(self, cube: CubeRow, state: _CubeIndex, changes: int) -> None:
        state.version = max(state.version, cube.index_version)
        state.changes_since_snapshot += changes
        if state.changes_since_snapshot >= max(self._snapshot_every, state.size_at_snapshot):
            self._snapshot(cube.key, state, cube.embedding_model)

    # ------------------------------------------------------------------ protocol
    def apply(self, cube: CubeRow, *, remove: Sequence[int] = (), add: Sequence[int] = (),
              vectors: np.ndarray | None = None) -> None:
        if not len(remove) and not len(add):
            return
        with self._lock:
            state = self._get(cube)
            if state.version >= cube.index_version:  # a rebuild from SQL already saw this commit
                return
            state.dead += len(remove)
            if state.stale is not None:
                state.stale.update(int(i) for i in remove)
            if state.dead > max(1000, state.index.ntotal // 2):
                self._cubes[cube.key] = self._rebuild(cube)
                return
            if len(add):
                state.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32),
                                         np.asarray(add, dtype=np.int64))
            self._after_change(cube, state, len(remove) + len(add))

    def search(self, session: Session, cube: CubeRow, query: np.ndarray, k: int,
               conditions: Sequence[ColumnElement[bool]]) -> list[tuple[UnitRow, float]]:
        with self._lock:
            state = self._get(cube)
            total = state.index.ntotal
        if total == 0:
            return []
        query = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
        want = min(total, k * 4 + 32 + state.dead)
        while True:
            params = faiss.SearchParametersHNSW(  # type: ignore[attr-defined]
                efSearch=max(HNSW_EF_SEARCH, want))
            with self._lock:
                dist, ids = state.index.search(query, want, params=params)
                stale = None if state.stale is None else set(state.stale)
            graph: dict[int, float] = {}
            for i, d in zip(ids[0].tolist(), dist[0].tolist(), strict=True):
                if i >= 0:
                    graph[int(i)] = max(graph.get(int(i), -np.inf), float(d))
            # The cube is checked here, not in SQL: given ``cube_key = ?``, SQLite plans the
            # lookup through ix_units_cube_status and scans every active unit of the cube
            # (O(cube size)) instead of fetching the candidates by primary key.
            live = [pk for pk, cube_key in session.execute(select(
                UnitRow.pk, UnitRow.cube_key).where(
                UnitRow.pk.in_(graph), *searchable(None), *conditions))
                if cube_key == cube.key]
            # Over-fetch until the post-filter leaves k hits or the whole index was scanned.
            if len(live) >= k or want >= total:
                break
            want = min(total, want * 4)
        if not live:
            return []
        # A key whose graph vector may be an old one (a dead entry) is scored exactly from
        # its SQL row; the others' graph score is the exact inner product with their vector.
        recheck = live if stale is None else [pk for pk in live if pk in stale]
        scores = {pk: graph[pk] for pk in live}
        if recheck:
            for pk, vector in session.execute(select(UnitRow.pk, UnitRow.embedding).where(
                    UnitRow.pk.in_(recheck))):
                if vector is not None:
                    scores[pk] = float(np.asarray(vector, dtype=np.float32) @ query[0])
        best = dict(sorted(scores.items(), key=lambda kv: -kv[1])[:k])
        rows = session.scalars(select(UnitRow).where(
            UnitRow.pk.in_(best), *searchable(None))).all()
        return sorted(((r, best[r.pk]) for r in rows), key=lambda pair: -pair[1])

    def nearest(self, session: Session, cube: CubeRow, query: np.ndarray,
                k: int) -> list[int]:
        with self._lock:
            state = self._get(cube)
            total = state.index.ntotal
            if total == 0 or k < 1:
                return []
            want = min(total, k + min(state.dead, k))
            params = faiss.SearchParametersHNSW(  # type: ignore[attr-defined]
                efSearch=max(HNSW_EF_SEARCH, want))
            _, ids = state.index.search(
                np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32), want,
                params=params)
        return [int(i) for i in ids[0] if i >= 0]

    def drop(self, cube_key: str) -> None:
        with self._lock:
            self._cubes.pop(cube_key, None)
            for path in self._paths(cube_key):
                path.unlink(missing_ok=True)

    def compact(self, cube: CubeRow) -> None:
        """Rebuild the cube's graph from SQL and rewrite its snapshot now: HNSW keeps removed
        vectors as dead entries, and a purged vector must leave memory and disk."""
        with self._lock:
            self._cubes[cube.key] = self._rebuild(cube)

    def stats(self) -> dict[str, int]:
        with self._lock:
            vectors = sum(s.index.ntotal for s in self._cubes.values())
        disk = sum(p.stat().st_size for p in self.directory.glob("*.faiss"))
        return {"vectors": vectors, "bytes": disk}

    def flush(self) -> None:
        with self._lock, self._sessions() as session:
            for cube_key, state in self._cubes.items():
                cube = session.get(CubeRow, cube_key)
                if cube is not None and state.changes_since_snapshot:
                    self._snapshot(cube_key, state, cube.embedding_model)

