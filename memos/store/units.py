"""The unit repository: the one place that builds unit rows, finds a tenant's cube and
publishes committed writes to the vector index.

    units = UnitRepository(store, index)
    with units.write() as (session, publish):
        cube = units.cube_row(session, cube_id="ana", tenant="default")
        row = new_unit(cube=cube, granularity="fact", text="…")
        session.add(row)
        session.flush()
        units.bump_index_version(cube)
        publish(cube, add=[row.pk], vectors=vector[None, :])

Writes commit to SQL first (the commit is the acknowledgement); the index changes a write
registered with ``publish`` are applied after the commit and before the writer lock is
released, so the in-memory indexes apply commits in commit order. ``on_publish`` (the
router cache's upkeep, set by :class:`memos.cube.MemCube`) runs after each applied change.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from sqlalchemy import bindparam, delete, select
from sqlalchemy.orm import Session

from memos.embed import Embedder
from memos.embedders import Embedders
from memos.errors import Conflict, NotFound
from memos.index import VectorIndex
from memos.public import unit_public
from memos.store.models import CubeRow, TagRow, UnitRow
from memos.store.sql import Store
from memos.types import MemoryPublic

__all__ = ["UnitRepository", "Publish", "new_unit", "new_cube_key", "content_hash",
           "check_model_unchanged"]

#: ``publish(cube, remove=pks, add=pks, vectors=array, erase=False)``: index changes of one
#: write.
Publish = Callable[..., None]


def content_hash(*parts: str | None) -> str:
    """sha256 over the parts, each terminated by a unit separator (``None`` counts as "")."""
    h = hashlib.sha256()
    for part in parts:
        h.update((part or "").encode())
        h.update(b"\x1f")
    return h.hexdigest()


def new_cube_key() -> str:
    """A new cube's internal key: random, so it says nothing about the cube or its tenant."""
    return uuid.uuid4().hex


def new_unit(*, cube: CubeRow, granularity: str, text: str | None,
             kind: str = "plaintext", unit_id: str | None = None, lineage_id: str | None = None,
             version: int = 1, content_sha: str | None = None, **fields: Any) -> UnitRow:
    """A new memory-unit row of ``cube`` (not yet added to a session): the only place rows
    are built.

    Defaults: a fresh hex id, its own lineage (version 1), ``content_sha`` of the text,
    status ``active``, no tags, empty metadata, confidence 1. ``fields`` are the other
    :class:`UnitRow` columns (``session_id``, ``speaker``, ``extractor``, ``status``,
    ``meta``, ``valid_from``, ``created_at``, ``embedding``, ``payload_sha256`` …).
    """
    unit_id = unit_id or uuid.uuid4().hex
    if content_sha is None and text is not None:
        content_sha = content_hash(text)
    fields.setdefault("status", "active")
    fields.setdefault("tags", [])
    fields.setdefault("meta", {})
    fields.setdefault("confidence", 1.0)
    return UnitRow(id=unit_id, cube_key=cube.key, tenant=cube.tenant,
                   lineage_id=lineage_id or unit_id, version=version, kind=kind,
                   granularity=granularity, text=text, content_sha=content_sha, **fields)


def check_model_unchanged(cube: CubeRow, model: str) -> None:
    """:class:`Conflict` when the cube's embedder was switched (a re-embed job committed)
    since this write embedded its texts with ``model``: its vectors would mix two models.
    Called inside the write transaction, after reading the cube row again."""
    if cube.embedding_model != model:
        raise Conflict(f"cube {cube.id!r} switched its embedder to {cube.embedding_model!r} "
                       "while this write was being embedded; retry it",
                       details={"cube_model": cube.embedding_model, "embedded_with": model})


#: A tenant's cube by id, built once: every request starts with it.
_CUBE_OF_TENANT = select(CubeRow).where(CubeRow.tenant == bindparam("tenant"),
                                        CubeRow.id == bindparam("cube_id"))


class UnitRepository:
    """Rows of every cube over one store, and the vector index their writes keep current."""

    def __init__(self, store: Store, index: VectorIndex, *,
                 on_publish: Callable[..., None] | None = None) -> None:
        self.store = store
        self.index = index
        #: ``on_publish(cube, remove=pks, add=pks)`` after each applied index change
        self.on_publish = on_publish
        # One writer per process: commit + index update happen as one step.
        self._write_lock = threading.RLock()

    @staticmethod
    def cube_row(session: Session, *, cube_id: str, tenant: str) -> CubeRow:
        """The tenant's cube named ``cube_id``. Cube ids are the tenant's own namespace:
        another tenant's cube of that id is not even looked at, so it is :class:`NotFound`
        exactly like a missing one (same message, same details)."""
        cube = session.scalar(_CUBE_OF_TENANT, {"tenant": tenant, "cube_id": cube_id})
        if cube is None:
            raise NotFound(f"cube {cube_id!r} not found", details={"cube_id": cube_id})
        return cube

    @staticmethod
    def unit_row(session: Session, *, cube: CubeRow, unit_id: str) -> UnitRow:
        """A unit of the cube, any status but deleted (a deleted unit is :class:`NotFound`)."""
        row = session.scalar(select(UnitRow).where(UnitRow.cube_key == cube.key,
                                                   UnitRow.id == unit_id))
        if row is None or row.status == "deleted":
            raise NotFound(f"memory {unit_id!r} not found in cube {cube.id!r}",
                           details={"cube_id": cube.id, "memory_id": unit_id})
        return row

    def get_public(self, *, cube_id: str, tenant: str, unit_id: str) -> MemoryPublic:
        """The unit as the API shows it (:func:`unit_row`'s rules: deleted is not found)."""
        with self.store.transaction() as session:
            cube = self.cube_row(session, cube_id=cube_id, tenant=tenant)
            return unit_public(self.unit_row(session, cube=cube, unit_id=unit_id), cube.id)

    @staticmethod
    def check_embedder(cube: CubeRow, embedder: Embedder) -> Embedder:
        """The embedder of the cube's vectors: the cube's own when ``embedder`` is the
        server's :class:`memos.embedders.Embedders`, else ``embedder`` itself.
        :class:`Conflict` unless the cube's vectors are that model's (never mix models)."""
        if isinstance(embedder, Embedders):
            return embedder.for_cube(cube)
        if cube.embedding_model != embedder.name or cube.embedding_dim != embedder.dim:
            raise Conflict(
                f"cube {cube.id!r} holds vectors of {cube.embedding_model!r} "
                f"({cube.embedding_dim}-d); this server embeds with {embedder.name!r} "
                f"({embedder.dim}-d)",
                details={"cube_model": cube.embedding_model, "server_model": embedder.name})
        return embedder

    @contextmanager
    def write(self) -> Iterator[tuple[Session, Publish]]:
        """One write: a transaction, then its index changes, under the writer lock.

        ``publish(cube, remove=…, add=…, vectors=…)`` inside the block registers index
        changes; they are applied after the commit, in order. ``erase=True`` (a purge) then
        also compacts the cube's index and reclaims the store's freed space, so no copy of
        what the write erased stays on disk.
        """
        pending: list[tuple[CubeRow, Sequence[int], Sequence[int], np.ndarray | None, bool]] = []

        def publish(cube: CubeRow, *, remove: Sequence[int] = (), add: Sequence[int] = (),
                    vectors: np.ndarray | None = None, erase: bool = False) -> None:
            pending.append((cube, list(remove), list(add), vectors, erase))

        with self._write_lock:
            with self.store.transaction() as session:
                yield session, publish
            for cube, remove, add, vectors, erase in pending:
                self.index.apply(cube, remove=remove, add=add, vectors=vectors)
                if erase:
                    self.index.compact(cube)
                if self.on_publish is not None:
                    self.on_publish(cube, remove=remove, add=add)
            if any(erase for *_, erase in pending):
                self.store.reclaim()

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the writer lock (a cube deletion drops its index under it)."""
        with self._write_lock:
            yield

    @staticmethod
    def bump_index_version(cube: CubeRow) -> None:
        """Mark the cube's indexes stale for other processes (they rebuild from SQL)."""
        cube.index_version = (cube.index_version or 0) + 1

    @staticmethod
    def set_tags(session: Session, row: UnitRow, tags: Iterable[str]) -> None:
        """Replace the unit's tag rows (the searchable copy of ``row.tags``)."""
        session.execute(delete(TagRow).where(TagRow.unit_pk == row.pk))
        for tag in dict.fromkeys(tags):
            session.add(TagRow(unit_pk=row.pk, tag=tag))
