"""Vector indexes: FAISS per cube (embedded default) and pgvector (PostgreSQL).

Both answer the same question — the ``k`` active units nearest a query vector that also
match SQL conditions — so the cube never knows which one it talks to. SQL holds every
embedding; an index is a cache that can be rebuilt from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from memos.store.models import CubeRow, UnitRow


class VectorIndex(Protocol):
    name: str

    def apply(self, cube: CubeRow, *, remove: Sequence[int] = (), add: Sequence[int] = (),
              vectors: np.ndarray | None = None) -> None:
        """Apply one committed write: forget ``remove``, make ``add`` (with ``vectors``)
        searchable. ``cube.index_version`` must be the version that commit wrote."""

    def search(self, session: Session, cube: CubeRow, query: np.ndarray, k: int,
               conditions: Sequence[ColumnElement[bool]]) -> list[tuple[UnitRow, float]]:
        """Up to ``k`` ``(row, score)`` pairs, best first; score = inner product (cosine)."""
        ...

    def nearest(self, session: Session, cube: CubeRow, query: np.ndarray,
                k: int) -> list[int]:
        """Row keys (``memory_units.pk``) of up to ``k`` units near ``query``, best first, by
        the approximate graph alone: no SQL re-check, so a key may be a unit removed since
        (callers keep the ones they hold). The router's dense candidates."""
        ...

    def drop(self, cube_key: str) -> None:
        """Forget everything about a deleted cube."""

    def compact(self, cube: CubeRow) -> None:
        """Hold no trace of removed vectors, in memory or on disk (after a purge)."""

    def stats(self) -> dict[str, int]:
        """Vectors held and bytes on disk."""
        ...

    def flush(self) -> None:
        """Persist whatever is only in memory (called on shutdown)."""
