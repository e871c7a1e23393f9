"""Retrieval counts: how often each memory unit comes back from a search.

Search must stay read-only and fast, so a hit is counted in memory (a dict under a lock:
microseconds per search) and the counts reach SQL later, in one batched statement,

    UPDATE memory_units SET retrievals = retrievals + :n WHERE pk = :pk   -- executemany

run by :meth:`RetrievalCounter.flush` from the API's background loop every few seconds,
before each scheduler tick and at shutdown. The increment is relative, so any number of API
processes (each with its own counter) can flush into one PostgreSQL database without lost
updates. A process that dies loses at most the counts since its last flush: they steer the
scheduler's "hot" heuristic, they are not a ledger.

    counter = RetrievalCounter()
    counter.record(cube.key, [17, 42])        # unit row keys, on the search path
    counter.flush(store)                       # → {cube.key: 2}; rows updated in one batch
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from typing import cast

from sqlalchemy import Table, bindparam, update

from memos.store.models import UnitRow
from memos.store.sql import Store

__all__ = ["RetrievalCounter"]


class RetrievalCounter:
    """Thread-safe in-memory retrieval counts, flushed to ``memory_units.retrievals``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._units: Counter[int] = Counter()
        self._cubes: Counter[str] = Counter()

    def record(self, cube_key: str, unit_pks: Iterable[int]) -> None:
        """Count one retrieval of each unit (a search hit), by row key (``UnitRow.pk``) and
        the cube's internal key. No I/O."""
        pks = list(unit_pks)
        if not pks:
            return
        with self._lock:
            self._units.update(pks)
            self._cubes[cube_key] += len(pks)

    def pending(self) -> int:
        """Distinct units with counts not yet flushed."""
        with self._lock:
            return len(self._units)

    def flush(self, store: Store) -> dict[str, int]:
        """Add the pending counts to SQL in one batched UPDATE; returns the hits flushed per
        cube (by internal key). On a database error the counts are put back (and the error
        raised)."""
        with self._lock:
            units, cubes = self._units, self._cubes
            self._units, self._cubes = Counter(), Counter()
        if not units:
            return {}
        table = cast(Table, UnitRow.__table__)
        statement = (update(table).where(table.c.pk == bindparam("unit_pk"))
                     .values(retrievals=table.c.retrievals + bindparam("hits")))
        try:
            with store.transaction() as session:
                session.execute(statement, [{"unit_pk": pk, "hits": n}
                                            for pk, n in sorted(units.items())])
        except BaseException:
            with self._lock:
                self._units.update(units)
                self._cubes.update(cubes)
            raise
        return dict(cubes)
