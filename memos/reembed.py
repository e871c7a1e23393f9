"""Switching a cube's embedder: the durable ``reembed_cube`` job.

    job = reembedder.start("demo", EmbedderSwitch(embedder=spec), tenant="t")  # 202
    Worker(queue, {REEMBED_JOB: reembedder.run}).run_pending()

:meth:`Reembedder.start` validates the new embedder (allowed, loads, right ``dim``) and
queues the job. The job recomputes the vector of every plaintext unit that has one — any
status, so as-of searches keep working — in batches, each batch committed to
``reembed_vectors`` (its progress: a job that crashes resumes after its last batch). Until
the switch, every search and write uses the old vectors and the old model. The switch is
one transaction, under the writer lock (and the cube row's lock on PostgreSQL): the units
written since the last batch are embedded, every staged vector moves into
``memory_units.embedding``, the cube records the new spec, fingerprint and dimension, and
the staging rows go. Then the vector index is rebuilt from SQL and the router cache
dropped. A write that embedded with the old model and commits after the switch is refused
(:func:`memos.store.units.check_model_unchanged`), so vectors of two models never mix.

Vectors are recomputed as ingest and derivation compute them: a turn from
``"speaker: text"``, a session unit as the normalised mean of its active turns, an
extractive (rules) summary as the mean of the turns it summarizes, everything else from its
text — a memory created with a caller-supplied vector included.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from memos.derive.session import turn_embedding_text
from memos.embed import Embedder, embed_texts
from memos.embedders import Embedders
from memos.errors import Conflict, NotFound
from memos.index import VectorIndex
from memos.jobs import REEMBED_JOB, Job, JobQueue
from memos.retrieval.cache import RouterCache
from memos.store.models import CubeRow, JobRow, LinkRow, ReembedVectorRow, UnitRow
from memos.store.units import UnitRepository
from memos.types import EmbedderSwitch, ReembedJob

__all__ = ["Reembedder"]


class Reembedder:
    """Queues and runs the re-embed jobs of every cube of a unit repository."""

    def __init__(self, *, units: UnitRepository, embedders: Embedders, jobs: JobQueue,
                 index: VectorIndex, router: RouterCache | None = None,
                 batch_size: int = 256) -> None:
        self.units = units
        self.embedders = embedders
        self.jobs = jobs
        self.index = index
        self.router = router
        #: units embedded and committed per step (the most a crash can cost again)
        self.batch_size = batch_size

    # ------------------------------------------------------------------ the API side
    def start(self, cube_id: str, body: EmbedderSwitch, *, tenant: str) -> ReembedJob:
        """Queue the switch of the cube to ``body.embedder``. :class:`InvalidInput` when the
        server does not allow it or it does not load; :class:`Conflict` when the cube
        already uses that model or a re-embed job of the cube is queued or running."""
        spec, target = self.embedders.for_request(body.embedder)
        with self.units.store.transaction() as session:
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            if target.name == cube.embedding_model and target.dim == cube.embedding_dim:
                raise Conflict(f"cube {cube_id!r} already embeds with {target.name!r}",
                               details={"embedding_model": target.name})
            running = session.scalar(select(JobRow).where(
                JobRow.kind == REEMBED_JOB, JobRow.cube_key == cube.key,
                JobRow.status.in_(["queued", "running"])))
            if running is not None:
                raise Conflict(f"cube {cube_id!r} is already being re-embedded "
                               f"(job {running.pk}, {running.status})",
                               details={"job_id": running.pk})
            row = self.jobs.enqueue(session, kind=REEMBED_JOB, cube_key=cube.key, payload={
                "tenant": tenant, "spec": spec, "source_model": cube.embedding_model,
                "target_model": target.name, "target_dim": target.dim})
            session.flush()
            public = _public(row)
        self.jobs.wake()
        return public

    def job(self, cube_id: str, job_id: int, *, tenant: str) -> ReembedJob:
        """A re-embed job of the cube (:class:`NotFound` for any other job id)."""
        with self.units.store.transaction() as session:
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            row = session.get(JobRow, job_id)
            if row is None or row.kind != REEMBED_JOB or row.cube_key != cube.key:
                raise NotFound(f"re-embed job {job_id} not found in cube {cube_id!r}",
                               details={"job_id": job_id})
            return _public(row)

    # ------------------------------------------------------------------ the worker side
    def run(self, job: Job, progress: Callable[[float], None]) -> None:
        """The job handler: stage every vector, then switch (idempotent, resumable)."""
        payload = job.payload
        try:
            self._run(job.cube_id or "", payload, progress)
        except NotFound:  # the cube was deleted while its job waited
            return
        progress(1.0)

    def _run(self, cube_id: str, payload: dict[str, Any],
             progress: Callable[[float], None]) -> None:
        tenant, target_model = payload["tenant"], payload["target_model"]
        with self.units.store.transaction() as session:
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            if cube.embedding_model == target_model:
                return  # switched by an earlier attempt that died before marking it done
            self._check_source(cube, payload)
            total = session.scalar(select(func.count()).select_from(UnitRow).where(
                *_reembedded(cube.key))) or 0
        target = self.embedders.resolve(payload["spec"])
        if target.name != target_model or target.dim != payload["target_dim"]:
            raise Conflict(f"the embedder spec now builds {target.name!r} "
                           f"({target.dim}-d), not the queued {target_model!r}; "
                           "queue the switch again")
        done = self._staged_count(cube.key, target_model)
        while True:
            with self.units.store.transaction() as session:
                batch = self._unstaged(session, cube.key, target_model, self.batch_size)
            if not batch:
                break
            vectors = embed_texts(target, [_text_of(row) for row in batch])
            with self.units.store.transaction() as session:
                # A unit deleted meanwhile (purged cubes cascade) is simply not staged.
                alive = set(session.scalars(select(UnitRow.pk).where(
                    UnitRow.pk.in_([row.pk for row in batch]))))
                session.add_all(ReembedVectorRow(unit_pk=row.pk, model=target_model,
                                                 cube_key=cube.key, embedding=vector)
                                for row, vector in zip(batch, vectors) if row.pk in alive)
            done += len(batch)
            progress(0.95 * min(done / max(total, 1), 1.0))
        self._switch(cube_id, payload, target)

    def _switch(self, cube_id: str, payload: dict[str, Any], target: Embedder) -> None:
        """The atomic part: catch up, move the vectors, record the embedder; then rebuild
        the index."""
        model = payload["target_model"]
        with self.units.locked():
            with self.units.store.transaction() as session:
                cube = self.units.cube_row(session, cube_id=cube_id, tenant=payload["tenant"])
                if self.units.store.is_postgres:  # writers of other processes wait for us
                    session.execute(select(CubeRow.key).where(CubeRow.key == cube.key)
                                    .with_for_update())
                    session.refresh(cube)
                if cube.embedding_model == model:
                    return
                self._check_source(cube, payload)
                late = self._unstaged(session, cube.key, model, None)
                staged = {pk: np.asarray(vector, dtype=np.float32) for pk, vector in
                          session.execute(select(ReembedVectorRow.unit_pk,
                                                 ReembedVectorRow.embedding).where(
                              ReembedVectorRow.cube_key == cube.key,
                              ReembedVectorRow.model == model))}
                if late:
                    staged.update(zip([row.pk for row in late],
                                      embed_texts(target, [_text_of(row) for row in late])))
                staged.update(_means(session, cube.key, staged))
                # PostgreSQL reads committed rows per statement: a unit another process
                # committed since ``late`` was read is embedded here.
                missing = [row for row in self._unstaged(session, cube.key, model, None)
                           if row.pk not in staged]
                if missing:
                    staged.update(zip([row.pk for row in missing],
                                      embed_texts(target, [_text_of(r) for r in missing])))
                pks = session.scalars(select(UnitRow.pk).where(*_reembedded(cube.key))).all()
                if pks:  # bulk UPDATE by primary key: no row is loaded or compared
                    session.execute(update(UnitRow), [{"pk": pk, "embedding": staged[pk]}
                                                      for pk in pks])
                cube.embedder = payload["spec"]
                cube.embedding_model, cube.embedding_dim = model, target.dim
                self.units.bump_index_version(cube)
                session.execute(delete(ReembedVectorRow).where(
                    ReembedVectorRow.cube_key == cube.key))
                session.flush()
                session.expunge(cube)
            self.index.drop(cube.key)
            self.index.compact(cube)  # rebuilt from the new vectors now, not at first search
            if self.router is not None:
                self.router.drop(cube.key)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _check_source(cube: CubeRow, payload: dict[str, Any]) -> None:
        if cube.embedding_model != payload["source_model"]:
            raise Conflict(f"cube {cube.id!r} now embeds with {cube.embedding_model!r}, not "
                           f"{payload['source_model']!r} as when the switch was queued")

    def _staged_count(self, cube_key: str, model: str) -> int:
        with self.units.store.transaction() as session:
            return int(session.scalar(select(func.count()).select_from(ReembedVectorRow).where(
                ReembedVectorRow.cube_key == cube_key, ReembedVectorRow.model == model)) or 0)

    @staticmethod
    def _unstaged(session: Session, cube_key: str, model: str,
                  limit: int | None) -> list[Any]:
        staged = select(ReembedVectorRow.unit_pk).where(ReembedVectorRow.cube_key == cube_key,
                                                        ReembedVectorRow.model == model)
        query = (select(UnitRow.pk, UnitRow.granularity, UnitRow.speaker, UnitRow.text)
                 .where(*_reembedded(cube_key), UnitRow.pk.not_in(staged))
                 .order_by(UnitRow.pk))
        if limit is not None:
            query = query.limit(limit)
        return list(session.execute(query).all())


def _reembedded(cube_key: str) -> list[Any]:
    """The units a switch gives new vectors: plaintext ones that have a vector."""
    return [UnitRow.cube_key == cube_key, UnitRow.kind == "plaintext",
            UnitRow.embedding.is_not(None)]


def _text_of(row: Any) -> str:
    """What the unit's vector is computed from (as ingest and the derivers do)."""
    if row.granularity == "turn":
        return turn_embedding_text(row.speaker, row.text or "")
    return row.text or ""


def _mean(vectors: Iterable[np.ndarray]) -> np.ndarray | None:
    stacked = list(vectors)
    if not stacked:
        return None
    mean = np.mean(stacked, axis=0)
    return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)


def _means(session: Session, cube_key: str,
           staged: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """New vectors of the units whose vector is a mean of turn vectors: session units (of
    their session's active turns) and extractive summaries (of the turns they summarize)."""
    turns: dict[str | None, list[int]] = defaultdict(list)
    for pk, session_id in session.execute(select(UnitRow.pk, UnitRow.session_id).where(
            UnitRow.cube_key == cube_key, UnitRow.granularity == "turn",
            UnitRow.status == "active", UnitRow.embedding.is_not(None))):
        turns[session_id].append(pk)
    out: dict[int, np.ndarray] = {}
    for pk, session_id in session.execute(select(UnitRow.pk, UnitRow.session_id).where(
            UnitRow.cube_key == cube_key, UnitRow.granularity == "session",
            UnitRow.embedding.is_not(None))):
        mean = _mean(staged[t] for t in turns.get(session_id, []) if t in staged)
        if mean is not None:
            out[pk] = mean
    summarized: dict[int, list[int]] = defaultdict(list)
    for src, dst in session.execute(
            select(LinkRow.src_pk, LinkRow.dst_pk).join(UnitRow, UnitRow.pk == LinkRow.src_pk)
            .where(LinkRow.cube_key == cube_key, LinkRow.type == "summarizes",
                   UnitRow.granularity == "summary", UnitRow.extractor.like("rules:%"),
                   UnitRow.embedding.is_not(None))):
        summarized[src].append(dst)
    for pk, sources in summarized.items():
        mean = _mean(staged[t] for t in sources if t in staged)
        if mean is not None:
            out[pk] = mean
    return out


def _public(row: JobRow) -> ReembedJob:
    payload = row.payload or {}
    return ReembedJob(job_id=row.pk, status=row.status, progress=row.progress or 0.0,
                      error=row.error, source_model=payload.get("source_model", ""),
                      target_model=payload.get("target_model", ""),
                      target_dim=int(payload.get("target_dim", 0)))
