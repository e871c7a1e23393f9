"""Vectors keyed by int64 id in one growable array: a set of ids gathers in one step.

:class:`Rows` is what a router channel keeps its unit vectors in. A candidate pool names
a few thousand ids per query; gathering their vectors (and, for turns, their session,
speaker and time) with one fancy index instead of stacking a Python list of arrays is
what keeps the pool's scoring off the interpreter.

>>> import numpy as np
>>> rows = Rows(columns={"t": np.float64})
>>> rows.put([7, 3], np.eye(2, dtype=np.float32), t=[1.5, 2.5])
>>> rows.gather(np.array([3, 7])).tolist(), rows.column("t", np.array([3])).tolist()
([[0.0, 1.0], [1.0, 0.0]], [2.5])
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["Rows"]


class Rows(Mapping[int, np.ndarray]):
    """A mapping id → float32 vector (a read-only view) over growable arrays, with optional
    scalar ``columns`` (name → dtype) stored per id beside each vector.

    ``put`` appends (an id already present is replaced: its old row dies), ``drop`` kills
    rows; dead rows are reclaimed by a compaction once they outnumber the live ones, and
    the arrays grow by a quarter when full (both amortised O(1) per write). A row is never
    overwritten, so a view handed out earlier keeps its values. Row numbers are internal (a
    compaction renumbers them): callers hold ids.
    """

    def __init__(self, *, columns: Mapping[str, Any] | None = None) -> None:
        self._dtypes = {name: np.dtype(dt) for name, dt in (columns or {}).items()}
        self._row: dict[int, int] = {}
        self._vecs = np.zeros((0, 0), dtype=np.float32)
        self._ids = np.zeros(0, dtype=np.int64)  # the id of each row, live or dead
        self._cols = {name: np.zeros(0, dtype=dt) for name, dt in self._dtypes.items()}
        self._n = 0  # rows used, live or dead
        self._in_order = True  # rows [0, _n) hold strictly ascending ids

    # ------------------------------------------------------------------ mapping
    def __getitem__(self, unit_id: int) -> np.ndarray:
        view = self._vecs[self._row[int(unit_id)]]
        view.flags.writeable = False
        return view

    def __contains__(self, unit_id: object) -> bool:
        return isinstance(unit_id, (int, np.integer)) and int(unit_id) in self._row

    def __iter__(self) -> Iterator[int]:
        return iter(self._row)

    def __len__(self) -> int:
        return len(self._row)

    # ------------------------------------------------------------------ mutation
    def put(self, ids: Sequence[int], vectors: Sequence[np.ndarray] | np.ndarray,
            **columns: Sequence[Any]) -> None:
        """Store ``vectors[j]`` (and ``columns[name][j]``, every column given) for
        ``ids[j]``; ids must be distinct."""
        if set(columns) != set(self._dtypes):
            raise ValueError(f"columns {sorted(columns)} given, {sorted(self._dtypes)} held")
        m = len(ids)
        if not m:
            return
        vecs = np.asarray(vectors, dtype=np.float32).reshape(m, -1)
        if not self._vecs.shape[1]:
            self._vecs = np.zeros((0, vecs.shape[1]), dtype=np.float32)
        if vecs.shape[1] != self._vecs.shape[1]:
            raise ValueError(f"vectors of dimension {vecs.shape[1]}, "
                             f"{self._vecs.shape[1]} held")
        self.drop(ids)
        self._reserve(self._n + m)
        new = np.asarray(ids, dtype=np.int64)
        self._in_order = bool(self._in_order and np.all(np.diff(new) > 0)
                              and (not self._n or new[0] > self._ids[self._n - 1]))
        self._ids[self._n:self._n + m] = new
        self._vecs[self._n:self._n + m] = vecs
        for name, values in columns.items():
            self._cols[name][self._n:self._n + m] = values
        for j, unit_id in enumerate(ids):
            self._row[int(unit_id)] = self._n + j
        self._n += m

    def drop(self, ids: Iterable[int]) -> None:
        """Forget these ids (unknown ones are ignored)."""
        for unit_id in ids:
            self._row.pop(int(unit_id), None)
        if self._n - len(self._row) > max(1024, len(self._row)):
            self._compact()

    def _reserve(self, n: int) -> None:
        if n <= len(self._vecs):
            return
        cap = max(n, len(self._vecs) + len(self._vecs) // 4, 64)  # slack ≤ 25% of the rows
        vecs = np.zeros((cap, self._vecs.shape[1]), dtype=np.float32)
        vecs[:self._n] = self._vecs[:self._n]
        self._vecs = vecs
        ids = np.zeros(cap, dtype=np.int64)
        ids[:self._n] = self._ids[:self._n]
        self._ids = ids
        for name, col in self._cols.items():
            grown = np.zeros(cap, dtype=col.dtype)
            grown[:self._n] = col[:self._n]
            self._cols[name] = grown

    def _compact(self) -> None:
        ids = list(self._row)
        rows = np.fromiter(self._row.values(), dtype=np.int64, count=len(ids))
        self._vecs = self._vecs[rows]
        self._ids = self._ids[rows]
        self._cols = {name: col[rows] for name, col in self._cols.items()}
        self._row = {unit_id: j for j, unit_id in enumerate(ids)}
        self._n = len(ids)
        self._in_order = bool(np.all(np.diff(self._ids) > 0))

    # ------------------------------------------------------------------ gathering
    def ascending(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(ids ascending (n,), vectors (n, dim))`` of every id, as read-only views (no
        copy) — when all rows are live and were put in ascending id order; else ``None``
        (sort the ids and :meth:`gather` them)."""
        if not self._in_order or len(self._row) != self._n:
            return None
        ids, vecs = self._ids[:self._n], self._vecs[:self._n]
        ids.flags.writeable = False
        vecs.flags.writeable = False
        return ids, vecs

    def rows(self, ids: np.ndarray | Sequence[int]) -> np.ndarray:
        """Internal rows of ``ids`` (all held: ``KeyError`` otherwise), valid until the
        next write."""
        row = self._row
        return np.fromiter((row[int(i)] for i in ids), dtype=np.int64, count=len(ids))

    def gather(self, ids: np.ndarray | Sequence[int]) -> np.ndarray:
        """``(len(ids), dim)`` float32: the vectors of ``ids``, in that order (a copy)."""
        return self.vectors_at(self.rows(ids))

    def vectors_at(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of internal ``rows`` (see :meth:`rows`), a copy."""
        return self._vecs[rows]

    def column(self, name: str, ids: np.ndarray | Sequence[int]) -> np.ndarray:
        """Column ``name`` of ``ids``, in that order (a copy)."""
        return self.column_at(name, self.rows(ids))

    def column_at(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Column ``name`` at internal ``rows`` (see :meth:`rows`), a copy."""
        return self._cols[name][rows]
