"""Activation and parametric memory of one service, over one backbone and blob store."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from memos.memory.backbone import BackboneProvider
from memos.store.blobs import BlobStore, blob_root
from memos.store.lineage import REBUILD_ACTIVATION_JOB

if TYPE_CHECKING:
    from memos.cube import MemCube

__all__ = ["ModelMemory"]


class ModelMemory:
    """Activation and parametric memory of one service, over one backbone and blob store.

    ``handlers()`` are the job handlers to register with the API worker.
    """

    def __init__(self, cube: MemCube, provider: BackboneProvider, blobs: BlobStore) -> None:
        from memos.memory.activation import ActivationMemory
        from memos.memory.parametric import ParametricMemory

        self.cube = cube
        self.provider = provider
        self.blobs = blobs
        self.activations = ActivationMemory(cube, provider, blobs)
        self.adapters = ParametricMemory(cube, provider, blobs)

    @classmethod
    def for_loader(cls, cube: MemCube, loader: Any = None) -> ModelMemory:
        """Share the backbone of a chat loader (:class:`memos.chat.BundledLoader`): its
        ``provider`` and ``data_dir``, when it has them."""
        data_dir = getattr(loader, "data_dir", None)
        provider = getattr(loader, "provider", None) or BackboneProvider(data_dir)
        return cls(cube, provider, BlobStore(blob_root(data_dir)))

    def handlers(self) -> dict[str, Callable[..., None]]:
        from memos.memory.parametric import TRAIN_ADAPTER_JOB

        return {REBUILD_ACTIVATION_JOB: self.activations.run_rebuild_job,
                TRAIN_ADAPTER_JOB: self.adapters.run_train_job}
