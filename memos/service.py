"""Wiring, in one place: a deployment's settings → every object the service runs on.

    services = build_services(Settings())          # what `memos serve` runs
    services.cube.search(...); services.chat.answer(...); services.handlers

:func:`open_cube` opens the storage a deployment describes — SQLite + FAISS under
``data_dir`` by default, locked to this process (:mod:`memos.store.lock`), or PostgreSQL
+ pgvector when ``MEMOS_DATABASE_URL`` is set (the schema is upgraded first) — with the
configured embedder, derivers and router cache.
:func:`build_services` adds what runs over it: model memory over the lazily loaded bundled
backbone, chat, the scheduler with the configured default policy, and the job handlers
the worker registers. Each object is built once; the API keeps them on ``app.state``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memos.chat import BundledLoader, Chat
from memos.config import Settings
from memos.cube import MemCube
from memos.derive import DERIVE_JOB, Deriver
from memos.embed import Embedder
from memos.embedders import Embedders, build_embedder, parse_embedder_setting
from memos.index import VectorIndex
from memos.jobs import REEMBED_JOB
from memos.keys import KeyRing
from memos.limits import Limits
from memos.memory import BackboneProvider, ModelMemory
from memos.retrieval.cache import RouterCache
from memos.scheduler import Scheduler
from memos.store.blobs import BlobStore, blob_root
from memos.store.lock import DataDirLock
from memos.store.sql import Store
from memos.types import SchedulerPolicy

__all__ = ["Services", "open_cube", "build_services", "embedders_for"]


def open_cube(settings: Settings, *, embedders: Embedders | None = None) -> MemCube:
    """The cube service over the storage ``settings`` describe (schema upgraded first),
    embedding with ``embedders`` (default: :func:`embedders_for` ``settings``).

    An embedded data directory is locked to this process first (:class:`Conflict` if
    another holds it); the lock is released with ``cube.store.dispose()``, or here if
    anything after it fails.
    """
    # One process per embedded data directory: its FAISS indexes live in this process.
    lock = DataDirLock.acquire(settings.data_dir) if settings.is_sqlite else None
    store = Store(settings.database_url, durability=settings.durability,
                  sqlite_cache_mb=settings.sqlite_cache_mb, data_dir_lock=lock)
    try:
        store.upgrade()
        return _cube_over(store, settings, embedders or embedders_for(settings))
    except BaseException:
        store.dispose()
        raise


def _cube_over(store: Store, settings: Settings, embedder: Embedders) -> MemCube:
    from memos.derive.facts import FactDeriver
    from memos.derive.granularity import GranularityDeriver
    from memos.index.faiss import FaissIndex
    from memos.index.pgvector import PgVectorIndex

    index: VectorIndex
    if store.is_postgres:
        index = PgVectorIndex()
    else:
        index = FaissIndex(settings.data_dir / "index", store.session_factory,
                           snapshot_every=settings.index_snapshot_every)
    derivers: list[Deriver] = [GranularityDeriver()]
    facts = FactDeriver.from_setting(settings.extractor)
    if facts is not None:
        derivers.append(facts)
    router = RouterCache(max_units=settings.router_max_units,
                         max_cached_units=settings.router_cache_units) \
        if settings.router_max_units else None
    return MemCube(store=store, index=index, embedder=embedder, derivers=derivers,
                   router=router, blobs=BlobStore(blob_root(settings.data_dir)),
                   limits=Limits.from_settings(settings),
                   query_cache_size=settings.query_cache_size)


def embedders_for(settings: Settings, **build_options: Any) -> Embedders:
    """The default embedder ``MEMOS_EMBEDDER`` names, and what cubes may ask for
    (``MEMOS_ONNX_MODEL_DIRS``, ``MEMOS_LITELLM_EMBEDDING_MODELS``). ``build_options`` pass
    to :func:`memos.embedders.build_embedder` (``litellm_options`` in tests)."""
    spec = parse_embedder_setting(settings.embedder)
    def build(spec: Mapping[str, Any]) -> Embedder:
        return build_embedder(spec, models_dir=settings.models_path,
                              batch_size=settings.embed_batch_size, **build_options)

    return Embedders(default=build(spec), default_spec=spec, build=build,
                     onnx_dirs=[Path(d) for d in _items(settings.onnx_model_dirs)],
                     litellm_models=_items(settings.litellm_embedding_models))


def _items(value: str) -> list[str]:
    return [item for item in (part.strip() for part in value.split(",")) if item]


@dataclass
class Services:
    """Everything one service process runs on, built once."""

    cube: MemCube
    keys: KeyRing
    model_memory: ModelMemory
    chat: Chat
    scheduler: Scheduler

    @property
    def handlers(self) -> dict[str, Callable[..., Any]]:
        """Job kind → handler, for the worker."""
        return {DERIVE_JOB: self.cube.run_derive_job, REEMBED_JOB: self.cube.run_reembed_job,
                **self.model_memory.handlers(),
                **self.scheduler.handlers()}


def build_services(settings: Settings, *, cube: MemCube | None = None) -> Services:
    """The cube (``cube``, or :func:`open_cube`) and everything over it."""
    cube = cube or open_cube(settings)
    provider = BackboneProvider(settings.data_dir)
    model_memory = cube.model_memory(provider,
                                     cube.blobs or BlobStore(blob_root(settings.data_dir)))
    chat = Chat(cube, bundled=BundledLoader(settings.data_dir, provider=provider),
                model_memory=model_memory)
    scheduler = Scheduler(model_memory, SchedulerPolicy(
        tick_every_retrievals=settings.scheduler_tick_every_retrievals))
    keys = KeyRing(cube.store, settings.static_keys(), admin_keys=settings.admin_key_list())
    return Services(cube=cube, keys=keys, model_memory=model_memory, chat=chat,
                    scheduler=scheduler)
