"""pgvector: the index is the ``memory_units.embedding`` column itself.

Any number of API workers on any number of machines share one consistent state, because a
committed row is searchable at once and a deleted one is gone at once. Migration 0001 builds
an HNSW (inner product) partial index for 384-dimensional vectors; the query below uses the
same expression so the planner can choose it, and sets ``hnsw.ef_search`` high enough that
SQL filters applied after the graph walk still leave ``k`` hits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sqlalchemy import Float, cast, func, select, text
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from memos.index.faiss import searchable
from memos.store.models import CubeRow, UnitRow


class PgVectorIndex:
    name = "pgvector"

    def __init__(self, ef_search: int = 200) -> None:
        self.ef_search = ef_search

    def apply(self, cube: CubeRow, *, remove: Sequence[int] = (), add: Sequence[int] = (),
              vectors: np.ndarray | None = None) -> None:
        """Nothing to do: a committed row is its own index entry, visible to the next query."""

    def search(self, session: Session, cube: CubeRow, query: np.ndarray, k: int,
               conditions: Sequence[ColumnElement[bool]]) -> list[tuple[UnitRow, float]]:
        from pgvector.sqlalchemy import Vector

        dim = cube.embedding_dim
        vector = cast(UnitRow.embedding, Vector(dim))
        distance = vector.max_inner_product(np.asarray(query, dtype=np.float32).ravel())
        session.execute(text(f"SET LOCAL hnsw.ef_search = {max(self.ef_search, k * 4)}"))
        rows = session.execute(
            select(UnitRow, cast(-distance, Float))
            .where(*searchable(cube.key), func.vector_dims(UnitRow.embedding) == dim, *conditions)
            .order_by(distance)
            .limit(k)
        ).all()
        return [(row, float(score)) for row, score in rows]

    def nearest(self, session: Session, cube: CubeRow, query: np.ndarray,
                k: int) -> list[int]:
        from pgvector.sqlalchemy import Vector

        if k < 1:
            return []
        dim = cube.embedding_dim
        vector = cast(UnitRow.embedding, Vector(dim))
        distance = vector.max_inner_product(np.asarray(query, dtype=np.float32).ravel())
        session.execute(text(f"SET LOCAL hnsw.ef_search = {max(self.ef_search, k)}"))
        return [int(pk) for pk in session.scalars(
            select(UnitRow.pk).where(*searchable(cube.key),
                                     func.vector_dims(UnitRow.embedding) == dim)
            .order_by(distance).limit(k))]

    def drop(self, cube_key: str) -> None:
        """Rows go with the cube (ON DELETE CASCADE)."""

    def compact(self, cube: CubeRow) -> None:
        """The vectors are the rows' column: a purge nulls it, ``Store.reclaim`` vacuums."""

    def stats(self) -> dict[str, int]:
        return {"vectors": -1, "bytes": 0}

    def flush(self) -> None:
        """Nothing is held in memory."""
