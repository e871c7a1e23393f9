"""The background side of ingest: units derived from each ingested session.

After ingest (the :data:`DERIVE_JOB` job, or inline when the ingest asked for ``sync``)
every :class:`Deriver` runs for the session: :mod:`memos.derive.granularity` keeps its
``summary`` and ``keyword`` units current, :mod:`memos.derive.facts` extracts, gates and
resolves its ``fact`` units. A deriver gets a :class:`DeriveContext` — the unit repository,
the embedder, the job queue and the router's term statistics — never the whole cube, and
must be idempotent: a job can run again after a crash.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from memos.embed import Embedder, embed_texts
from memos.granularity.units import TermStats
from memos.jobs import JobQueue
from memos.store.models import CubeRow
from memos.store.units import UnitRepository

__all__ = ["DERIVE_JOB", "DeriveContext", "Deriver"]

#: The background job that runs every deriver for one ingested session.
DERIVE_JOB = "derive_session"


@dataclass(frozen=True)
class DeriveContext:
    """What a deriver may use: rows and writes, the embedder, the job queue, and
    ``term_stats(cube)``: the document frequencies of the cube's session units as the router
    cache keeps them, or None when it holds none current (the deriver then counts them)."""

    units: UnitRepository
    embedder: Embedder
    jobs: JobQueue
    term_stats: Callable[[CubeRow], TermStats | None] = lambda cube: None

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return embed_texts(self.embedder, texts)


class Deriver(Protocol):
    """Builds derived memory (summaries, keywords, facts, …) for one session after ingest."""

    name: str

    def derive_session(self, ctx: DeriveContext, *, cube_id: str, session_id: str,
                       tenant: str) -> None: ...
