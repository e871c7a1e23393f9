"""Activation memory: plaintext units compiled once into a KV cache and injected as a prefix.

    mem = ActivationMemory(units=cube.units, jobs=cube.jobs, searcher=cube.searcher,
                           provider=provider, blobs=BlobStore(data_dir / "blobs"))
    unit = mem.create(cube_id, ActivationCreate(unit_ids=[...]), tenant=t)   # prefill once
    act = mem.load(cube_id, unit.id, tenant=t)                              # checks fingerprint
    generate(model, tok, suffix_ids, prefix_cache=act.cache)                 # no recompute

The prefix is the chat template's system message listing the memories
(:func:`render_prefix`); the cache holds its keys (RoPE-rotated at positions ``0..S-1``)
and values for every layer. Contract, tested: greedy tokens after the injected cache equal
those after recomputing the prefix, and the logits agree within 1e-4 (float32).

The blob (safetensors) holds ``k.{i}``, ``v.{i}`` (``(1, n_kv_head, S, head_dim)``) and
``prefix_ids``; its metadata holds the model fingerprint (:func:`memos.memory.model_fingerprint`)
plus ``prefix_ids_sha256``. A unit whose sources are superseded, deleted or archived is
*stale*: :meth:`ActivationMemory.load` refuses it, and the ``rebuild_activation`` job
archives it and compiles a replacement from the sources' current versions.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from memos.errors import Conflict, InvalidInput, NotFound
from memos.jobs import JobQueue, run_for_cube
from memos.memory.backbone import (
    BackboneProvider,
    LanguageModel,
    check_fingerprint,
    model_fingerprint,
)
from memos.memory.staleness import (
    STALE_REASON,
    active_plaintext_units,
    mark_stale,
    model_unit_ids,
    source_rows,
)
from memos.retrieval.search import Searcher
from memos.store.blobs import BlobStore
from memos.store.lineage import REBUILD_ACTIVATION_JOB
from memos.store.models import CubeRow, LinkRow, UnitRow, utcnow
from memos.store.units import UnitRepository, new_unit
from memos.types import (
    ActivationCreate,
    ActivationPublic,
    Filters,
    Kind,
    SearchMode,
    SearchRequest,
)

if TYPE_CHECKING:
    import torch

    from memos.backbone.model import KVCache
    from memos.jobs import Job

__all__ = [
    "REBUILD_ACTIVATION_JOB",
    "FORMAT",
    "MEMORY_HEADER",
    "Activation",
    "ActivationMemory",
    "render_prefix",
    "render_turns",
    "prefill",
    "greedy",
    "ids_sha256",
]

FORMAT = "memos.activation.v1"
#: A bare header: SmolLM2-135M uses "Memory:" listings far more often than a long instruction
#: (6/12 vs 4/12 on the first 12 memory-QA items, greedy).
MEMORY_HEADER = "Memory:"


@dataclass
class Activation:
    """A loaded, verified KV cache ready to inject."""

    unit_id: str
    cache: KVCache
    prefix_ids: list[int]
    source_ids: list[str]


def ids_sha256(ids: Sequence[int]) -> str:
    return hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()


def render_prefix(lm: LanguageModel, texts: Sequence[str], *, header: str = MEMORY_HEADER) -> str:
    """The memory prefix: one system message, a header then ``- text`` per memory.

    >>> render_prefix(bb, ["Tom has a dog named Biscuit."])  # doctest: +SKIP
    '<|im_start|>system\\nYou are … memories …:\\n- Tom has a dog named Biscuit.<|im_end|>\\n'
    """
    body = header + "\n" + "\n".join(f"- {' '.join(t.split())}" for t in texts)
    return str(lm.chat_prompt([{"role": "system", "content": body}],  # type: ignore[attr-defined]
                              add_generation_prompt=False))


def render_turns(lm: LanguageModel, messages: Sequence[dict[str, str]]) -> str:
    """Chat-template text for ``messages`` continuing after a prefix (no default system
    message is added) and ending with the assistant generation prompt."""
    head = [{"role": "system", "content": ""}]
    empty = lm.chat_prompt(head, add_generation_prompt=False)  # type: ignore[attr-defined]
    full = lm.chat_prompt(head + list(messages))  # type: ignore[attr-defined]
    if not full.startswith(empty):
        raise ValueError("chat template does not compose message by message")
    return str(full[len(empty):])


def prefill(model: Any, ids: Sequence[int]) -> KVCache:
    """The KV cache of ``ids`` at positions ``0..len(ids)-1`` (one forward pass)."""
    import torch

    with torch.inference_mode():
        _, cache = model(torch.tensor([list(ids)]), None, 0, last_only=True)
    return [(k.clone(), v.clone()) for k, v in cache]


def greedy(model: Any, ids: Sequence[int], *, cache: KVCache | None = None,
           max_new_tokens: int = 8,
           stop_ids: Sequence[int] = ()) -> tuple[list[int], torch.Tensor]:
    """Greedy continuation of ``ids`` (after ``cache`` if given): the new token ids and the
    logits each was chosen from, ``(n, V)``. Used to check injected = recomputed."""
    import torch

    start = 0 if cache is None else int(cache[0][0].shape[2])
    out: list[int] = []
    steps: list[torch.Tensor] = []
    with torch.inference_mode():
        logits, kv = model(torch.tensor([list(ids)]), cache, start, last_only=True)
        pos = start + len(ids)
        for _ in range(max_new_tokens):
            steps.append(logits[0, -1].float().clone())
            tok = int(logits[0, -1].argmax())
            out.append(tok)
            if tok in stop_ids:
                break
            logits, kv = model(torch.tensor([[tok]]), kv, pos)
            pos += 1
    return out, torch.stack(steps) if steps else torch.zeros(0)


class ActivationMemory:
    """Compile, load and refresh the activation units of every cube of ``units``; a
    ``query`` selects its source units through ``searcher``."""

    def __init__(self, *, units: UnitRepository, jobs: JobQueue, searcher: Searcher,
                 provider: BackboneProvider, blobs: BlobStore, cache_size: int = 4) -> None:
        self.units = units
        self.jobs = jobs
        self.searcher = searcher
        self.provider = provider
        self.blobs = blobs
        self._loaded: OrderedDict[str, tuple[KVCache, list[int]]] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()

    # ---------------------------------------------------------------- compile
    def select_sources(self, cube_id: str, body: ActivationCreate, *,
                       tenant: str) -> list[tuple[str, str]]:
        """``(unit id, text)`` of the plaintext units to compile, in prefix order."""
        if body.unit_ids is not None:
            rows = active_plaintext_units(self.units, cube_id, body.unit_ids, tenant=tenant)
            return [(row.id, row.text or "") for row in rows]
        assert body.query is not None
        found = self.searcher.search(cube_id, SearchRequest(
            query=body.query, top_k=body.top_k, filters=Filters(kind=Kind.plaintext),
            mode=SearchMode.dense), tenant=tenant)
        return [(h.unit.id, h.unit.text or "") for h in found.hits if h.unit.text]

    def create(self, cube_id: str, body: ActivationCreate, *, tenant: str,
               lineage: tuple[str, int] | None = None,
               unit_meta: dict[str, Any] | None = None) -> ActivationPublic:
        """Render the sources into a prefix, prefill it once, store the cache as a unit
        (``unit_meta``: extra unit metadata, e.g. the scheduler's ``scheduled`` flag)."""
        sources = self.select_sources(cube_id, body, tenant=tenant)
        if not sources:
            raise NotFound("no plaintext memory matched; nothing to compile")
        lm = self.provider()
        ids = lm.encode(render_prefix(lm, [t for _, t in sources]))
        if body.query is not None:  # budgeted: drop the weakest memories until it fits
            while len(ids) > body.max_tokens and len(sources) > 1:
                sources = sources[:-1]
                ids = lm.encode(render_prefix(lm, [t for _, t in sources]))
        if len(ids) > body.max_tokens:
            raise InvalidInput(f"the memory prefix has {len(ids)} tokens, over max_tokens="
                               f"{body.max_tokens}", details={"tokens": len(ids)})
        with self.provider.lock:
            fingerprint = model_fingerprint(lm)
            cache = prefill(lm.model, ids)
        return self._store(cube_id, tenant=tenant, sources=sources, ids=ids, cache=cache,
                           fingerprint=fingerprint, lineage=lineage, unit_meta=unit_meta)

    def _store(self, cube_id: str, *, tenant: str, sources: list[tuple[str, str]],
               ids: list[int], cache: KVCache, fingerprint: dict[str, str],
               lineage: tuple[str, int] | None,
               unit_meta: dict[str, Any] | None = None) -> ActivationPublic:
        import torch

        meta = {**fingerprint, "format": FORMAT, "prefix_ids_sha256": ids_sha256(ids),
                "n_tokens": str(len(ids))}
        tensors = {"prefix_ids": torch.tensor(ids, dtype=torch.int64)}
        for i, (k, v) in enumerate(cache):
            tensors[f"k.{i}"], tensors[f"v.{i}"] = k, v
        sha = self.blobs.put(tensors, meta)
        payload_meta: dict[str, Any] = {**meta, "n_tokens": len(ids),
                                        "shapes": {"k": list(cache[0][0].shape),
                                                   "layers": len(cache)}}
        now = utcnow()
        unit_id = uuid.uuid4().hex
        lineage_id, version = lineage or (unit_id, 1)
        with self.units.write() as (session, _publish):
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            src = {r.id: r for r in session.scalars(select(UnitRow).where(
                UnitRow.cube_key == cube.key, UnitRow.id.in_([s for s, _ in sources])))}
            changed = [s for s, text in sources if s not in src or src[s].status != "active"
                       or (src[s].text or "") != text]
            if changed:  # deleted, corrected or purged while compiling: never store it
                self.blobs.delete(sha)
                raise Conflict(f"{len(changed)} source memories changed while the cache was "
                               "compiled; compile again", details={"changed_ids": changed})
            row = new_unit(unit_id=unit_id, cube=cube, lineage_id=lineage_id,
                          version=version, kind="activation", granularity="cluster",
                          text="\n".join(f"- {t}" for _, t in sources), extractor="activation",
                          status="active", tags=[], payload_sha256=sha,
                          payload_meta=payload_meta,
                          meta={**(unit_meta or {}), "n_tokens": len(ids),
                                "sources": [s for s, _ in sources]},
                          confidence=1.0, created_at=now)
            session.add(row)
            session.flush()
            for source_id, _ in sources:
                if source_id in src:
                    session.add(LinkRow(cube_key=cube.key, src_pk=row.pk,
                                        dst_pk=src[source_id].pk, type="derived_from",
                                        weight=1.0, created_at=now))
        return self.get(cube_id, unit_id, tenant=tenant)

    # ---------------------------------------------------------------- read
    def get(self, cube_id: str, unit_id: str, *, tenant: str) -> ActivationPublic:
        """The unit and its payload metadata (no tensors)."""
        with self.units.store.transaction() as session:
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            row = self._row(session, cube, unit_id)
            sources = [s.id for s in source_rows(session, row)]
            meta = dict(row.payload_meta or {})
        return ActivationPublic(unit=self.units.get_public(cube_id=cube_id, tenant=tenant,
                                                           unit_id=unit_id),
                                payload_meta=meta, source_ids=sources,
                                n_tokens=int(meta.get("n_tokens", 0)))

    def unit_ids(self, cube_id: str, *, tenant: str, active_only: bool = True) -> list[str]:
        """Ids of the cube's activation units, newest first."""
        return model_unit_ids(self.units, cube_id, "activation", tenant=tenant,
                              active_only=active_only)

    @staticmethod
    def _row(session: Any, cube: CubeRow, unit_id: str) -> UnitRow:
        row = session.scalar(select(UnitRow).where(UnitRow.cube_key == cube.key,
                                                   UnitRow.id == unit_id))
        if row is None or row.status == "deleted" or row.kind != "activation":
            raise NotFound(f"activation memory {unit_id!r} not found in cube {cube.id!r}",
                           details={"memory_id": unit_id})
        return row

    def load(self, cube_id: str, unit_id: str, *, tenant: str) -> Activation:
        """The verified KV cache of an activation unit.

        Raises ``Conflict`` when the unit is stale (a source changed; it is archived on
        the spot), archived, or was built for another model (fingerprint mismatch).
        """

        with self.units.store.transaction() as session:
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            row = self._row(session, cube, unit_id)
            status, reason = row.status, row.status_reason
            sources = source_rows(session, row)
            sha, meta = row.payload_sha256, dict(row.payload_meta or {})
        if status == "active" and any(s.status != "active" for s in sources):
            mark_stale(self.units, cube_id, tenant=tenant, kinds=("activation",))
            status, reason = "archived", STALE_REASON
        if status != "active":
            raise Conflict(f"activation memory {unit_id!r} is {status} ({reason}); rebuild it",
                           details={"memory_id": unit_id, "status": status, "reason": reason})
        lm = self.provider()
        current = model_fingerprint(lm)
        check_fingerprint(meta, current, what=f"activation memory {unit_id!r}")
        if sha is None:
            raise Conflict(f"activation memory {unit_id!r} has no payload")
        with self._cache_lock:
            hit = self._loaded.get(sha)
            if hit is not None:
                self._loaded.move_to_end(sha)
        if hit is None:
            tensors, blob_meta = self.blobs.get(sha)
            check_fingerprint(blob_meta, current, what=f"payload of {unit_id!r}")
            ids = [int(i) for i in tensors.pop("prefix_ids").tolist()]
            if ids_sha256(ids) != blob_meta.get("prefix_ids_sha256"):
                raise Conflict(f"payload of {unit_id!r} is corrupt (prefix ids hash)")
            n = lm.model.config.n_layer
            cache: list[tuple[torch.Tensor, torch.Tensor]] = [
                (tensors[f"k.{i}"], tensors[f"v.{i}"]) for i in range(n)]
            if any(k.shape[2] != len(ids) for k, _ in cache):
                raise Conflict(f"payload of {unit_id!r} does not match its prefix length")
            hit = (cache, ids)
            with self._cache_lock:
                self._loaded[sha] = hit
                while len(self._loaded) > self._cache_size:
                    self._loaded.popitem(last=False)
        return Activation(unit_id=unit_id, cache=hit[0], prefix_ids=hit[1],
                          source_ids=[s.id for s in sources])

    def resolve(self, cube_id: str, choice: str, *, tenant: str) -> Activation | None:
        """``choice`` is a unit id, or ``"auto"``: the newest active, usable unit (None if
        the cube has none)."""
        if choice != "auto":
            return self.load(cube_id, choice, tenant=tenant)
        for unit_id in self.unit_ids(cube_id, tenant=tenant):
            try:
                return self.load(cube_id, unit_id, tenant=tenant)
            except Conflict:
                continue
        return None

    # ---------------------------------------------------------------- staleness
    def refresh(self, cube_id: str, *, tenant: str, rebuild: bool = True) -> dict[str, Any]:
        """Archive stale activation units; with ``rebuild``, compile each one's replacement
        from the current versions of its sources (same lineage, next version).

        Returns ``{"archived": [ids], "rebuilt": {old id: new id}}``. A replacement keeps
        the old unit's ``scheduled`` flag (a cache the scheduler compiled stays its own).
        """
        plans: list[tuple[str, str, int, list[str], dict[str, Any]]] = []

        def plan(row: UnitRow, sources: list[UnitRow]) -> None:
            keep = {k: v for k, v in (row.meta or {}).items() if k == "scheduled"}
            plans.append((row.id, row.lineage_id, row.version,
                          [s.lineage_id for s in sources], keep))

        archived = mark_stale(self.units, cube_id, tenant=tenant, kinds=("activation",),
                              on_stale=plan)
        rebuilt: dict[str, str] = {}
        if rebuild:
            for old_id, lineage_id, version, lineages, keep in plans:
                current = self._current_units(cube_id, lineages, tenant=tenant)
                if not current:
                    continue
                new = self.create(cube_id, ActivationCreate(unit_ids=current, max_tokens=8_000),
                                  tenant=tenant, lineage=(lineage_id, version + 1),
                                  unit_meta=keep)
                rebuilt[old_id] = new.unit.id
        return {"archived": archived, "rebuilt": rebuilt}

    def _current_units(self, cube_id: str, lineages: Sequence[str], *,
                       tenant: str) -> list[str]:
        """The active version of each lineage, in the given order (gone ones dropped)."""
        with self.units.store.transaction() as session:
            key = self.units.cube_row(session, cube_id=cube_id, tenant=tenant).key
            rows = session.execute(select(UnitRow.lineage_id, UnitRow.id).where(
                UnitRow.cube_key == key, UnitRow.lineage_id.in_(list(lineages)),
                UnitRow.status == "active", UnitRow.kind == "plaintext")).all()
        by_lineage = dict(rows)
        return [by_lineage[lin] for lin in lineages if lin in by_lineage]

    def enqueue_rebuild(self, cube_id: str, *, tenant: str) -> int:
        """Queue a ``rebuild_activation`` job for the cube; returns the job id."""
        with self.units.store.transaction() as session:
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            job = self.jobs.enqueue(session, kind=REBUILD_ACTIVATION_JOB, cube_key=cube.key,
                                         payload={"tenant": tenant})
            session.flush()
            job_id = int(job.pk)
        self.jobs.wake()
        return job_id

    def run_rebuild_job(self, job: Job, progress: Callable[[float], None]) -> None:
        """Handler of ``rebuild_activation`` jobs (payload ``{"tenant": …}``)."""
        run_for_cube(progress, lambda: self.refresh(job.cube_id or "",
                                                    tenant=job.payload["tenant"]))
