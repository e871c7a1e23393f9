"""The MemCube service: every cube of every tenant, over one store, index and embedder.

    MemCube(store=Store(url), index=FaissIndex(...), embedder=OnnxMiniLM())
        .create_cube / list_cubes / get_cube / delete_cube
        .ingest                      messages → turn units + one session unit per session
                                     (memos.ingest), then derivation (memos.derive)
        .create_memory / get_memory / list_memories / update_memory / delete_memory
        .history / provenance        (memos.memories)
        .search / context            (memos.retrieval.search)
        .model_memory                activation and parametric memory (memos.memory)

A facade: the work happens in the collaborators it composes — the unit repository
(:mod:`memos.store.units`), the job queue, the router cache, and the modules above — which
receive the parts they need, never the cube.

Every method takes ``tenant`` (keyword-only): a cube of another tenant is reported as not
found, exactly like a cube that does not exist. Writes commit to SQL first (the commit is
the acknowledgement), then update the vector index, which is a cache of SQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from memos import structure
from memos.derive import DeriveContext, Deriver
from memos.embed import Embedder, embed_texts
from memos.embedders import Embedders
from memos.errors import Conflict
from memos.index import VectorIndex
from memos.ingest import Ingester
from memos.jobs import Job, JobQueue, run_for_cube
from memos.limits import Limits
from memos.memories import Memories
from memos.memory import BackboneProvider, ModelMemory
from memos.reembed import Reembedder
from memos.retrieval.cache import RouterCache
from memos.retrieval.granular_index import RouterConfig
from memos.retrieval.search import (
    Searcher,
    Timings,
    TokenCounter,
    estimate_tokens,
)
from memos.store.blobs import BlobStore
from memos.store.models import (
    CubeRow,
    LinkRow,
    MessageRow,
    SpanRow,
    TagRow,
    UnitRow,
    utcnow,
)
from memos.store.sql import Store
from memos.store.units import UnitRepository, new_cube_key
from memos.types import (
    AssociationMixture,
    ClusterMap,
    ContextRequest,
    ContextResponse,
    CubeCreate,
    CubePublic,
    CubeStats,
    DeletionReport,
    EmbedderSwitch,
    Filters,
    Granularity,
    IngestResult,
    JobPage,
    JobPublic,
    JobStatus,
    Kind,
    ListedStatus,
    MemoryCreate,
    MemoryPage,
    MemoryPublic,
    MemoryUpdate,
    MessagesIngest,
    ProvenancePublic,
    ReembedJob,
    SearchRequest,
    SearchResponse,
)
from memos.usage import RetrievalCounter

__all__ = [
    "MemCube",
]

class MemCube:
    """The MemCube service. Collaborators come in through the constructor."""

    def __init__(self, *, store: Store, index: VectorIndex, embedder: Embedder,
                 derivers: Sequence[Deriver] = (),
                 router: RouterCache | None = None, blobs: BlobStore | None = None,
                 limits: Limits = Limits(), query_cache_size: int = 4096) -> None:
        """``embedder``: the server's :class:`memos.embedders.Embedders` (each cube embeds
        with its own), or one embedder for every cube."""
        self.store = store
        #: request limits every write and query is checked against (memos.limits)
        self.limits = limits
        self.index = index
        self.router = router
        self.embedder: Embedder = embedder
        #: the default embedder and each cube's own (a single embedder: one for all cubes)
        self.embedders = embedder if isinstance(embedder, Embedders) else Embedders(
            default=embedder)
        self.derivers = list(derivers)
        self.jobs = JobQueue(store)
        #: rows, writes and their index changes; the router cache follows every write
        self.units = UnitRepository(store, index, on_publish=self._route)
        #: search hits, counted in memory and flushed in batches (the scheduler's "hot")
        self.retrievals = RetrievalCounter()
        self.searcher = Searcher(units=self.units, embedder=self.embedders, index=index,
                                 router=router, retrievals=self.retrievals,
                                 query_cache_size=query_cache_size)
        self.ingester = Ingester(units=self.units, embedder=self.embedders, jobs=self.jobs)
        #: payload files of model memory (what a purge erases with it); ``None``: none kept
        self.blobs = blobs
        self.memories = Memories(units=self.units, embedder=self.embedders, jobs=self.jobs,
                                 blobs=blobs)
        #: switching a cube's embedder: the ``reembed_cube`` job (memos.reembed)
        self.reembedder = Reembedder(units=self.units, embedders=self.embedders,
                                     jobs=self.jobs, index=index, router=router)

    # ================================================================== cubes
    def _cube_public(self, session: Session, cube: CubeRow) -> CubePublic:
        units = session.scalar(select(func.count()).select_from(UnitRow).where(
            UnitRow.cube_key == cube.key, UnitRow.status == "active")) or 0
        return CubePublic(id=cube.id, name=cube.name, description=cube.description,
                          tenant=cube.tenant, embedding_model=cube.embedding_model,
                          embedding_dim=cube.embedding_dim, embedder=cube.embedder,
                          metadata=dict(cube.meta or {}),
                          created_at=cube.created_at, units=units,
                          pending_jobs=self.jobs.pending(cube.key))

    def create_cube(self, body: CubeCreate, *, tenant: str) -> CubePublic:
        """A new cube of the tenant; :class:`Conflict` only when *this tenant* has one of
        that id (ids of other tenants' cubes are another namespace)."""
        self.limits.check_cube(body)
        spec, embedder = self.embedders.for_request(body.embedder)
        cube_id = body.id or f"cube_{uuid.uuid4().hex[:16]}"
        try:
            with self.store.transaction() as session:
                if session.scalar(select(CubeRow.key).where(CubeRow.tenant == tenant,
                                                            CubeRow.id == cube_id)):
                    raise Conflict(f"cube {cube_id!r} already exists",
                                   details={"cube_id": cube_id})
                cube = CubeRow(key=new_cube_key(), id=cube_id, tenant=tenant, name=body.name,
                               description=body.description, meta=body.metadata,
                               embedding_model=embedder.name, embedding_dim=embedder.dim,
                               embedder=spec, index_version=0,
                               created_at=utcnow())
                session.add(cube)
                session.flush()
                return self._cube_public(session, cube)
        except IntegrityError as exc:
            raise Conflict(f"cube {cube_id!r} already exists") from exc

    def list_cubes(self, *, tenant: str) -> list[CubePublic]:
        with self.store.transaction() as session:
            cubes = session.scalars(select(CubeRow).where(CubeRow.tenant == tenant)
                                    .order_by(CubeRow.created_at, CubeRow.id)).all()
            return [self._cube_public(session, c) for c in cubes]

    def get_cube(self, cube_id: str, *, tenant: str) -> CubePublic:
        with self.store.transaction() as session:
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            return self._cube_public(session, cube)

    def delete_cube(self, cube_id: str, *, tenant: str) -> None:
        """Delete the cube and everything in it, leaving no copy on disk: rows (zeroed by
        SQLite's ``secure_delete``, then the WAL emptied), index files, payload blobs no other
        cube shares."""
        with self.units.locked(), self.store.transaction() as session:
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            payloads = {sha for sha in session.scalars(select(UnitRow.payload_sha256).where(
                UnitRow.cube_key == cube.key, UnitRow.payload_sha256.is_not(None))) if sha}
            # Children first: SQLite honours ON DELETE CASCADE only with foreign_keys=ON, and
            # explicit deletes keep PostgreSQL and SQLite identical.
            key = cube.key
            unit_pks = select(UnitRow.pk).where(UnitRow.cube_key == key)
            session.execute(delete(SpanRow).where(SpanRow.unit_pk.in_(unit_pks)))
            session.execute(delete(TagRow).where(TagRow.unit_pk.in_(unit_pks)))
            session.execute(delete(LinkRow).where(LinkRow.cube_key == key))
            session.execute(delete(UnitRow).where(UnitRow.cube_key == key))
            session.execute(delete(MessageRow).where(MessageRow.cube_key == key))
            session.delete(cube)
        self.index.drop(key)
        if self.router is not None:
            self.router.drop(key)
        self.memories.delete_blobs(payloads)
        self.store.reclaim()

    # ================================================================== embedders
    def switch_embedder(self, cube_id: str, body: EmbedderSwitch, *,
                        tenant: str) -> ReembedJob:
        """Queue the cube's re-embed job (:meth:`memos.reembed.Reembedder.start`); the cube
        keeps searching with its old vectors until the job switches it."""
        return self.reembedder.start(cube_id, body, tenant=tenant)

    def reembed_job(self, cube_id: str, job_id: int, *, tenant: str) -> ReembedJob:
        return self.reembedder.job(cube_id, job_id, tenant=tenant)

    def run_reembed_job(self, job: Job, progress: Callable[[float], None]) -> None:
        self.reembedder.run(job, progress)

    # ================================================================== helpers
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return embed_texts(self.embedder, texts)

    def _route(self, cube: CubeRow, *, remove: Sequence[int], add: Sequence[int]) -> None:
        """Keep the router cache current; persist the associations new units formed."""
        if self.router is None:
            return
        with self.store.transaction() as session:
            if not self.router.usable(session, cube):
                return
            links = self.router.apply(
                session, cube, remove=remove, add=add,
                neighbours=lambda v, k: self.index.nearest(session, cube, v, k))
            if not links:
                return
            stored = session.execute(select(LinkRow.src_pk, LinkRow.dst_pk).where(
                LinkRow.src_pk.in_({link.src for link in links}),
                LinkRow.type == "associated"))
            have = {(a, b) for a, b in stored}
            now = utcnow()
            for link in links:
                if (link.src, link.dst) not in have:
                    have.add((link.src, link.dst))
                    session.add(LinkRow(cube_key=cube.key, src_pk=link.src, dst_pk=link.dst,
                                        type="associated", weight=link.weight, created_at=now))

    # ================================================================== ingest
    def ingest(self, cube_id: str, body: MessagesIngest, *, tenant: str) -> IngestResult:
        """Store a session's new messages as turn units and refresh its session unit
        (:class:`memos.ingest.Ingester`); then derive it inline (``sync``) or in the queued
        ``derive_session`` job."""
        self.limits.check_ingest(body)
        result = self.ingester.ingest(cube_id, body, tenant=tenant,
                                      enqueue_derive=bool(self.derivers) and not body.sync)
        if self.derivers and result.messages_stored:
            if body.sync:
                self.derive_session(cube_id, body.session_id, tenant=tenant)
            else:
                self.jobs.wake()
        return result

    def derive_session(self, cube_id: str, session_id: str, *, tenant: str) -> None:
        """Run every deriver for one session (what the ``derive_session`` job does)."""
        with self.store.transaction() as session:
            embedder = self.units.check_embedder(
                self.units.cube_row(session, cube_id=cube_id, tenant=tenant), self.embedders)
        router = self.router
        ctx = DeriveContext(units=self.units, embedder=embedder, jobs=self.jobs,
                            term_stats=router.current_stats if router else lambda cube: None)
        for deriver in self.derivers:
            deriver.derive_session(ctx, cube_id=cube_id, session_id=session_id, tenant=tenant)

    def run_derive_job(self, job: Job, progress: Callable[[float], None]) -> None:
        run_for_cube(progress, lambda: self.derive_session(
            job.cube_id or "", job.payload["session_id"], tenant=job.payload["tenant"]))

    # ================================================================== memories
    def create_memory(self, cube_id: str, body: MemoryCreate, *, tenant: str) -> MemoryPublic:
        self.limits.check_memory(body)
        return self.memories.create_memory(cube_id, body, tenant=tenant)

    def get_memory(self, cube_id: str, memory_id: str, *, tenant: str) -> MemoryPublic:
        return self.memories.get_memory(cube_id, memory_id, tenant=tenant)

    def list_memories(self, cube_id: str, filters: Filters, *, tenant: str, offset: int = 0,
                      limit: int = 50) -> MemoryPage:
        return self.memories.list_memories(cube_id, filters, tenant=tenant, offset=offset,
                                           limit=limit)

    def update_memory(self, cube_id: str, memory_id: str, body: MemoryUpdate, *,
                      tenant: str) -> MemoryPublic:
        """Write a new version; the old one is kept, marked superseded, in the history."""
        self.limits.check_memory(body)
        return self.memories.update_memory(cube_id, memory_id, body, tenant=tenant)

    def delete_memory(self, cube_id: str, memory_id: str, *, tenant: str,
                      purge: bool = False) -> DeletionReport:
        """Tombstone the memory (every version) and what derives from it alone; ``purge``
        erases them from every store (:meth:`memos.memories.Memories.delete_memory`)."""
        return self.memories.delete_memory(cube_id, memory_id, tenant=tenant, purge=purge)

    def session_memories(self, cube_id: str, session_id: str, *, tenant: str,
                         granularity: Granularity = Granularity.fact) -> list[MemoryPublic]:
        return self.memories.session_memories(cube_id, session_id, tenant=tenant,
                                              granularity=granularity)

    def history(self, cube_id: str, memory_id: str, *, tenant: str) -> list[MemoryPublic]:
        return self.memories.history(cube_id, memory_id, tenant=tenant)

    def provenance(self, cube_id: str, memory_id: str, *, tenant: str) -> ProvenancePublic:
        return self.memories.provenance(cube_id, memory_id, tenant=tenant)

    # ================================================================== search
    def search(self, cube_id: str, body: SearchRequest, *, tenant: str,
               timings: Timings | None = None) -> SearchResponse:
        """The most relevant units for a query, best first
        (see :class:`memos.retrieval.search.Searcher`)."""
        self.limits.check_query(body.query)
        return self.searcher.search(cube_id, body, tenant=tenant, timings=timings)

    def context(self, cube_id: str, body: ContextRequest, *, tenant: str,
                count_tokens: TokenCounter = estimate_tokens) -> ContextResponse:
        """Prompt-ready memory within a token budget (as ``count_tokens`` counts), each line
        citing its unit id."""
        self.limits.check_query(body.query)
        return self.searcher.context(cube_id, body, tenant=tenant, count_tokens=count_tokens)

    # ================================================================== model memory
    def model_memory(self, provider: BackboneProvider, blobs: BlobStore) -> ModelMemory:
        """Activation and parametric memory over this cube's parts and ``provider``'s model
        (``blobs`` must be the cube's blob store when it has one: a purge erases there)."""
        if self.blobs is not None and self.blobs.root != blobs.root:
            raise ValueError(f"model memory blobs {blobs.root} are not this cube's "
                             f"{self.blobs.root}")
        self.memories.blobs = self.memories.blobs or blobs
        return ModelMemory(units=self.units, jobs=self.jobs, searcher=self.searcher,
                           provider=provider, blobs=blobs)

    # ================================================================== misc
    def stats(self, cube_id: str, *, tenant: str) -> CubeStats:
        """Unit counts per granularity, kind (active units) and status, in one query."""
        with self.store.transaction() as session:
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            groups = session.execute(
                select(UnitRow.kind, UnitRow.granularity, UnitRow.status, func.count())
                .where(UnitRow.cube_key == cube.key, UnitRow.status != "deleted")
                .group_by(UnitRow.kind, UnitRow.granularity, UnitRow.status)).all()
        gran = dict.fromkeys((g.value for g in Granularity), 0)
        kind = dict.fromkeys((k.value for k in Kind), 0)
        status = dict.fromkeys((s.value for s in ListedStatus), 0)
        for k, g, st, n in groups:
            status[st] = status.get(st, 0) + n
            if st == "active":
                gran[g] = gran.get(g, 0) + n
                kind[k] = kind.get(k, 0) + n
        return CubeStats(granularity=gran, kind=kind, status=status)

    # ================================================================== structure
    def cluster_map(self, cube_id: str, *, tenant: str, granularity: Granularity,
                    limit: int = 2000) -> ClusterMap:
        """The GMM clustering of the newest ``limit`` units of ``granularity``, in 2-D."""
        with self.store.transaction() as session:
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            return structure.cluster_map(session, cube=cube, granularity=granularity,
                                         limit=limit)

    def association_mixture(self, cube_id: str, memory_id: str, *,
                            tenant: str) -> AssociationMixture:
        """How GMM association decided ``memory_id``'s links (:mod:`memos.structure`)."""
        top_k = (self.router.config if self.router else RouterConfig()).association_top_k
        with self.store.transaction() as session:
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            unit = self.units.unit_row(session, cube=cube, unit_id=memory_id)
            return structure.association_mixture(
                session, cube=cube, unit=unit, top_k=top_k,
                nearest=lambda vec, k: self.index.nearest(session, cube, vec, k))

    # ================================================================== jobs
    def list_jobs(self, cube_id: str, *, tenant: str, status: JobStatus | None = None,
                  offset: int = 0, limit: int = 50) -> JobPage:
        """The cube's background jobs, newest first, with their errors."""
        key = self._cube_key(cube_id, tenant=tenant)
        items, total = self.jobs.page(cube_key=key, status=status.value if status else None,
                                      offset=offset, limit=limit)
        return JobPage(items=items, total=total, offset=offset, limit=limit)

    def retry_job(self, cube_id: str, job_id: int, *, tenant: str) -> JobPublic:
        """Queue a failed job of the cube again (see :meth:`JobQueue.retry`)."""
        return self.jobs.retry(cube_key=self._cube_key(cube_id, tenant=tenant), job_id=job_id)

    def _cube_key(self, cube_id: str, *, tenant: str) -> str:
        with self.store.transaction() as session:
            return self.units.cube_row(session, cube_id=cube_id, tenant=tenant).key

    def counts(self) -> dict[str, Any]:
        with self.store.transaction() as session:
            units = session.scalar(select(func.count()).select_from(UnitRow)) or 0
            cubes = session.scalar(select(func.count()).select_from(CubeRow)) or 0
        return {"units": units, "cubes": cubes}
