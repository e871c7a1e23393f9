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
(train / attach / detach LoRA adapters). This module holds what they share: the blob store,
the fingerprint, the lazy backbone provider, staleness marking, and
:func:`queue_stale_rebuild`, which the store's writes call so that a changed source queues
the ``rebuild_activation`` job (pure SQL: importing this module never imports torch).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import select

from memos.errors import BackendUnavailable, Conflict, InvalidInput, NotFound
from memos.store.models import JobRow, LinkRow, UnitRow, utcnow

if TYPE_CHECKING:
    import torch
    from sqlalchemy.orm import Session

    from memos.cube import MemCube
    from memos.jobs import JobQueue

__all__ = [
    "LanguageModel",
    "BackboneProvider",
    "BlobStore",
    "model_fingerprint",
    "check_fingerprint",
    "source_rows",
    "mark_stale",
    "queue_stale_rebuild",
    "read_safetensors_metadata",
    "REBUILD_ACTIVATION_JOB",
    "STALE_REASON",
    "BACKBONE_HINT",
    "ModelMemory",
    "blob_root",
]

BACKBONE_HINT = ("the bundled model needs the `backbone` extra "
                 "(pip install 'memos-memory[backbone]') and a prepared checkpoint "
                 "(`memos backbone prepare`)")

#: ``status_reason`` of an activation/parametric unit whose sources changed.
STALE_REASON = "stale: source changed"
#: The background job that archives stale model memory and recompiles stale KV caches.
REBUILD_ACTIVATION_JOB = "rebuild_activation"


class LanguageModel(Protocol):
    """What model memory needs from a backbone (:class:`memos.backbone.Backbone` fits).

    ``model`` is a :class:`memos.backbone.model.Llama`; ``tokenizer`` a ``tokenizers``
    tokenizer; ``config`` the checkpoint config (``llama``, ``variants``, …).
    """

    model: Any
    tokenizer: Any
    config: dict[str, Any]
    variant: str

    @property
    def fingerprint(self) -> str: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int], *, skip_special_tokens: bool = False) -> str: ...


class BackboneProvider:
    """The backbone, loaded once on first use, plus the lock every user of it holds.

    ``lock`` serialises everything that runs or modifies the shared model (generation,
    prefix compilation, adapter attach/train): routing state and LoRA wrappers are global
    to the module tree. Pass ``backbone=`` to use an already built model (tests, benches).
    """

    def __init__(self, data_dir: str | os.PathLike[str] | None = None, *,
                 backbone: LanguageModel | None = None) -> None:
        self.data_dir = data_dir
        self._backbone = backbone
        self._load_lock = threading.Lock()
        self.lock = threading.RLock()

    def __call__(self) -> LanguageModel:
        with self._load_lock:
            if self._backbone is None:
                self._backbone = self._load()
            return self._backbone

    def available(self) -> bool:
        """Whether the backbone is loaded or could be (torch installed, checkpoint prepared),
        without loading it: cheap enough to ask before queueing work that needs the model."""
        if self._backbone is not None:
            return True
        if importlib.util.find_spec("torch") is None:
            return False
        from memos.backbone.checkpoint import CONFIG_FILE, WEIGHTS_FILE, resolve_data_dir

        d = resolve_data_dir(self.data_dir)
        return (d / CONFIG_FILE).is_file() and (d / WEIGHTS_FILE).is_file()

    def _load(self) -> LanguageModel:
        try:
            from memos.backbone.checkpoint import load_backbone
        except ImportError as exc:
            raise BackendUnavailable(f"{BACKBONE_HINT}: {exc}",
                                     details={"model": "bundled"}) from exc
        try:
            return load_backbone(self.data_dir)  # type: ignore[return-value]
        except (FileNotFoundError, ValueError) as exc:
            raise BackendUnavailable(f"{BACKBONE_HINT}: {exc}",
                                     details={"model": "bundled"}) from exc


def blob_root(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """``<data_dir>/blobs``, with the same default data directory as the backbone."""
    root = data_dir or os.environ.get("MEMOS_DATA_DIR") or "./memos-data"
    return Path(root).expanduser() / "blobs"


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


# --------------------------------------------------------------------------- blobs
class BlobStore:
    """Content-addressed safetensors payloads: ``<root>/<sha[:2]>/<sha>.safetensors``.

    ``sha`` is the sha256 of the file's bytes. Writes go to a temporary file in the same
    directory and are renamed into place, so a reader never sees half a blob and two
    writers of the same content agree. Never pickle.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise InvalidInput(f"not a sha256: {sha256!r}")
        return self.root / sha256[:2] / f"{sha256}.safetensors"

    def put(self, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
        """Store tensors (+ string metadata); returns the blob's sha256."""
        from safetensors.torch import save_file

        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
        os.close(fd)
        try:
            save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
            h = hashlib.sha256()
            with open(tmp, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            sha = h.hexdigest()
            final = self.path(sha)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return sha

    def put_bytes(self, data: bytes) -> str:
        """Store an already serialised safetensors file (an import); returns its sha256.
        Needs no torch."""
        sha = hashlib.sha256(data).hexdigest()
        final = self.path(sha)
        if final.is_file():
            return sha
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=final.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return sha

    def read_bytes(self, sha256: str) -> bytes:
        """The payload file's bytes (an export); ``Conflict`` if it is missing."""
        path = self.path(sha256)
        if not path.is_file():
            raise Conflict(f"payload {sha256} is missing from the blob store {self.root}",
                           details={"payload_sha256": sha256})
        return path.read_bytes()

    def get(self, sha256: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """Tensors and metadata of a blob; ``NotFound``-like ``Conflict`` if it is missing."""
        from safetensors import safe_open

        path = self.path(sha256)
        if not path.is_file():
            raise Conflict(f"payload {sha256} is missing from the blob store {self.root}",
                           details={"payload_sha256": sha256})
        tensors = {}
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            for key in f.keys():
                tensors[key] = f.get_tensor(key)
        return tensors, metadata


def read_safetensors_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's header, read without torch.

    A safetensors file starts with an 8-byte little-endian header length and a JSON header;
    ``InvalidInput`` when ``data`` is not one.
    """
    if len(data) < 8:
        raise InvalidInput("payload is not a safetensors file (too short)")
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8 or size > 100_000_000:
        raise InvalidInput("payload is not a safetensors file (bad header length)")
    try:
        header = json.loads(data[8:8 + size])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput("payload is not a safetensors file (bad header)") from exc
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return {str(k): str(v) for k, v in (meta or {}).items()}


# --------------------------------------------------------------------------- fingerprint
def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def model_fingerprint(lm: LanguageModel) -> dict[str, str]:
    """What a KV cache or adapter depends on, as strings (safetensors metadata is str→str).

    ``backbone``: checkpoint fingerprint; ``tokenizer``: sha256 of the tokenizer JSON;
    ``rope``: theta / head_dim / layers / kv heads; ``dtype``; ``variant``: the routing
    variant's name and spec (a cache computed under other routing gives other keys).
    """
    cfg = lm.model.config
    rope = {"rope_theta": cfg.rope_theta, "head_dim": cfg.head_dim, "n_layer": cfg.n_layer,
            "n_kv_head": cfg.n_kv_head, "n_embd": cfg.n_embd}
    variants = (lm.config or {}).get("variants", {})
    variant = {"name": lm.variant, "spec": variants.get(lm.variant)}
    dtype = str(next(lm.model.parameters()).dtype).removeprefix("torch.")
    return {
        "backbone": str(lm.fingerprint),
        "tokenizer": _sha(lm.tokenizer.to_str()),
        "rope": json.dumps(rope, sort_keys=True),
        "dtype": dtype,
        "variant": json.dumps(variant, sort_keys=True),
    }


def check_fingerprint(stored: dict[str, Any], current: dict[str, str], *, what: str) -> None:
    """Raise :class:`Conflict` naming every field where ``stored`` differs from ``current``."""
    diff = {k: {"stored": stored.get(k), "current": v} for k, v in current.items()
            if stored.get(k) != v}
    if diff:
        raise Conflict(f"{what} was built for another model ({', '.join(sorted(diff))} "
                       "differ); rebuild it for the running backbone",
                       details={"mismatch": diff})


# --------------------------------------------------------------------------- staleness
def source_rows(cube: MemCube, session: Any, unit: UnitRow) -> list[UnitRow]:
    """The units ``unit`` was derived from (its ``derived_from`` links), any status."""
    return list(session.scalars(select(UnitRow).join(LinkRow, LinkRow.dst_pk == UnitRow.pk)
                                .where(LinkRow.src_pk == unit.pk,
                                       LinkRow.type == "derived_from")
                                .order_by(LinkRow.pk)).all())


def mark_stale(cube: MemCube, cube_id: str, *, tenant: str,
               kinds: Sequence[str] = ("activation", "parametric"),
               on_stale: Callable[[UnitRow, list[UnitRow]], None] | None = None) -> list[str]:
    """Archive active model-memory units any of whose sources is no longer active.

    A source that was superseded (a new version), deleted or archived changes what the
    derived KV cache / adapter should contain, so the derived unit is archived with
    ``status_reason`` :data:`STALE_REASON` and ``metadata.stale_sources`` listing the
    source ids. Returns the ids archived. ``on_stale(row, sources)`` is called inside the
    transaction (the rebuild job uses it to plan a replacement).
    """
    archived: list[str] = []
    with cube.write() as (session, _publish):
        cube.cube_row(session, tenant, cube_id)
        rows = session.scalars(select(UnitRow).where(
            UnitRow.cube_id == cube_id, UnitRow.kind.in_(list(kinds)),
            UnitRow.status == "active")).all()
        now = utcnow()
        for row in rows:
            sources = source_rows(cube, session, row)
            changed = [s.id for s in sources if s.status != "active"]
            if not changed:
                continue
            row.status, row.status_reason = "archived", STALE_REASON
            row.meta = {**(row.meta or {}), "stale_sources": changed,
                        "stale_at": now.isoformat()}
            archived.append(row.id)
            if on_stale is not None:
                on_stale(row, sources)
    return archived


def model_unit_ids(cube: MemCube, cube_id: str, kind: str, *, tenant: str,
                   active_only: bool = True) -> list[str]:
    """Ids of the tenant's cube's units of ``kind`` (``activation`` or ``parametric``),
    active ones unless ``active_only`` is false, newest first."""
    with cube.store.transaction() as session:
        cube.cube_row(session, tenant, cube_id)
        query = select(UnitRow.id).where(UnitRow.cube_id == cube_id, UnitRow.kind == kind)
        if active_only:
            query = query.where(UnitRow.status == "active")
        return list(session.scalars(query.order_by(UnitRow.created_at.desc(),
                                                   UnitRow.pk.desc())))


def active_plaintext_units(cube: MemCube, cube_id: str, unit_ids: Sequence[str], *,
                           tenant: str) -> list[UnitRow]:
    """The units ``unit_ids`` (duplicates dropped, order kept) of the tenant's cube, each an
    active plaintext unit with text: the sources of a KV cache or an adapter. An unknown or
    deleted id is :class:`NotFound`; any other unit is :class:`InvalidInput`."""
    ids = list(dict.fromkeys(unit_ids))
    with cube.store.transaction() as session:
        cube.cube_row(session, tenant, cube_id)
        rows = {r.id: r for r in session.scalars(select(UnitRow).where(
            UnitRow.cube_id == cube_id, UnitRow.id.in_(ids)))}
    out = []
    for uid in ids:
        row = rows.get(uid)
        if row is None or row.status == "deleted":
            raise NotFound(f"memory {uid!r} not found in cube {cube_id!r}",
                           details={"memory_id": uid})
        if row.kind != "plaintext" or row.status != "active" or not row.text:
            raise InvalidInput(f"memory {uid!r} is not an active plaintext unit",
                               details={"memory_id": uid, "kind": row.kind,
                                        "status": row.status})
        out.append(row)
    return out


def queue_stale_rebuild(session: Session, jobs: JobQueue, *, cube_id: str, tenant: str,
                        changed: Sequence[int]) -> bool:
    """Queue the rebuild of model memory derived from units that just changed.

    Call it inside the write transaction that superseded, deleted or archived the plaintext
    units whose row keys are ``changed``. When an active activation or parametric unit has a
    ``derived_from`` link to one of them, one :data:`REBUILD_ACTIVATION_JOB` is queued for
    the cube (committed with the write), unless one is already queued. Returns whether a job
    was queued (wake the worker after the commit).

    Cheap when nothing depends on the units: one query on the links' ``dst_pk`` index. Pure
    SQL: works without torch.
    """
    if not changed:
        return False
    dependent = session.scalar(
        select(LinkRow.pk).join(UnitRow, UnitRow.pk == LinkRow.src_pk)
        .where(LinkRow.dst_pk.in_(list(changed)), LinkRow.type == "derived_from",
               UnitRow.kind.in_(["activation", "parametric"]), UnitRow.status == "active")
        .limit(1))
    if dependent is None:
        return False
    queued = session.scalar(select(JobRow.pk).where(
        JobRow.kind == REBUILD_ACTIVATION_JOB, JobRow.cube_id == cube_id,
        JobRow.status == "queued").limit(1))
    if queued is not None:
        return False
    jobs.enqueue(session, kind=REBUILD_ACTIVATION_JOB, cube_id=cube_id,
                 payload={"tenant": tenant})
    return True
