"""Activation and parametric memory of one service, over one backbone and blob store."""

from __future__ import annotations

from collections.abc import Callable

from memos.jobs import JobQueue
from memos.memory.backbone import BackboneProvider
from memos.retrieval.search import Searcher
from memos.store.blobs import BlobStore
from memos.store.lineage import REBUILD_ACTIVATION_JOB
from memos.store.units import UnitRepository

__all__ = ["ModelMemory"]


class ModelMemory:
    """Activation and parametric memory of one service, over one backbone and blob store.

    Built from the cube's parts (:meth:`memos.cube.MemCube.model_memory` does it):
    the unit repository, the job queue, the searcher (an activation ``query`` selects its
    sources through it; the scheduler reads its retrieval counts). ``handlers()`` are the
    job handlers to register with the API worker.
    """

    def __init__(self, *, units: UnitRepository, jobs: JobQueue, searcher: Searcher,
                 provider: BackboneProvider, blobs: BlobStore) -> None:
        from memos.memory.activation import ActivationMemory
        from memos.memory.parametric import ParametricMemory

        self.units = units
        self.jobs = jobs
        self.searcher = searcher
        self.provider = provider
        self.blobs = blobs
        self.activations = ActivationMemory(units=units, jobs=jobs, searcher=searcher,
                                            provider=provider, blobs=blobs)
        self.adapters = ParametricMemory(units=units, jobs=jobs, provider=provider,
                                         blobs=blobs)

    def handlers(self) -> dict[str, Callable[..., None]]:
        from memos.memory.parametric import TRAIN_ADAPTER_JOB

        return {REBUILD_ACTIVATION_JOB: self.activations.run_rebuild_job,
                TRAIN_ADAPTER_JOB: self.adapters.run_train_job}
