"""Memory that lives inside the bundled model: activation (KV cache) and parametric (LoRA).

Both kinds are memory units (``kind`` ``activation`` / ``parametric``) whose payload is a
safetensors blob in a content-addressed directory and whose ``derived_from`` links name the
plaintext units they were built from:

    <data_dir>/blobs/<sha256[:2]>/<sha256>.safetensors

Every blob carries the *fingerprint* of what produced it (:func:`model_fingerprint`):
backbone checkpoint, tokenizer, RoPE configuration, dtype and MoE routing variant. Loading
compares it with the running backbone and raises :class:`~memos.errors.Conflict` on any
difference — a KV cache or an adapter is meaningless for another model.

Modules: :mod:`.activation` (compile / load / inject KV caches), :mod:`.parametric`
(train / attach / detach LoRA adapters), :mod:`.model_memory` (both, as one service
object), :mod:`.backbone` (the lazy backbone provider and the fingerprint),
:mod:`.staleness` (archiving model memory whose sources changed). The blob store is
:mod:`memos.store.blobs`; the rebuild job is queued by the store's writes
(:func:`memos.store.lineage.queue_stale_rebuild`). Importing this package never imports
torch.
"""

from memos.memory.backbone import (
    BACKBONE_HINT,
    BackboneProvider,
    LanguageModel,
    check_fingerprint,
    model_fingerprint,
)
from memos.memory.model_memory import ModelMemory
from memos.memory.staleness import (
    STALE_REASON,
    active_plaintext_units,
    mark_stale,
    model_unit_ids,
    source_rows,
)
from memos.store.lineage import REBUILD_ACTIVATION_JOB

__all__ = [
    "LanguageModel",
    "BackboneProvider",
    "model_fingerprint",
    "check_fingerprint",
    "source_rows",
    "mark_stale",
    "model_unit_ids",
    "active_plaintext_units",
    "REBUILD_ACTIVATION_JOB",
    "STALE_REASON",
    "BACKBONE_HINT",
    "ModelMemory",
]
