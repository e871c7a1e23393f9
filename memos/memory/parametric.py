"""Parametric memory: LoRA adapters trained on plaintext facts, attached per request.

    mem = ParametricMemory(cube, provider, BlobStore(data_dir / "blobs"))
    job_id = mem.enqueue_training(cube_id, AdapterCreate(unit_ids=[...]), tenant=t)
    # the API worker runs the ``train_adapter`` job; tests call mem.train(...) directly
    with mem.attached(cube_id, unit_id, tenant=t):      # delta applied, base untouched
        bb.generate(...)

An adapter is ``ΔW = (alpha / rank) · B @ A`` on the attention projections named in
``targets`` (default ``q_proj``, ``v_proj``, ``o_proj``) of the top ``n_layers`` blocks.
:func:`attach` wraps each target :class:`torch.nn.Linear` in a :class:`LoRALinear` that
adds ``x Aᵀ Bᵀ · scale`` to the untouched base output; :func:`detach` puts the original
module objects back, so the base weights are bit-identical afterwards. :func:`merge` /
:func:`unmerge` instead fold the delta into the weights for speed, keeping a copy of every
touched weight and restoring it exactly.

Training data, per fact: the statement as the assistant's reply to "What do you remember?",
the statement on its own, and each ``metadata.qa`` pair (``{"question", "answer"}``) as a
chat turn; plus *rehearsal*: windows of generic text (:func:`rehearsal_examples`, half as
many as fact examples by default), which keep the model's NLL on unrelated text flat
(``memos bench model-memory``: held-out NLL within +5% with rehearsal, +42–57% without).
Only the lower blocks run once (no grad); the adapted top blocks train.
"""

from __future__ import annotations

import json
import math
import random
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from memos.errors import Conflict, InvalidInput, NotFound
from memos.jobs import JobQueue
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
from memos.store.blobs import BlobStore
from memos.store.models import CubeRow, JobRow, LinkRow, UnitRow, utcnow
from memos.store.units import UnitRepository, new_unit
from memos.types import AdapterCreate, AdapterPublic, TrainingJob

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

    from memos.jobs import Job

__all__ = [
    "TRAIN_ADAPTER_JOB",
    "FORMAT",
    "LoRAConfig",
    "LoRALinear",
    "ParametricMemory",
    "init_lora",
    "attach",
    "detach",
    "merge",
    "unmerge",
    "render_examples",
    "rehearsal_examples",
    "train_lora",
    "Adapter",
]

TRAIN_ADAPTER_JOB = "train_adapter"
FORMAT = "memos.lora.v1"
RECALL_PROMPT = "What do you remember about me?"


@dataclass
class LoRAConfig:
    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("q_proj", "v_proj", "o_proj")
    n_layers: int = 12  # adapt the top n blocks (0: all)

    def layers(self, n_layer: int) -> list[int]:
        n = n_layer if self.n_layers <= 0 else min(self.n_layers, n_layer)
        return list(range(n_layer - n, n_layer))

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def _lora_module() -> type:
    import torch.nn as nn

    class _LoRALinear(nn.Module):
        """``base(x) + (x @ Aᵀ @ Bᵀ) · scale``; ``base`` is never modified."""

        def __init__(self, base: nn.Linear, a: torch.Tensor, b: torch.Tensor,
                     scale: float) -> None:
            super().__init__()
            self.base = base
            self.lora_a = nn.Parameter(a)  # (r, in)
            self.lora_b = nn.Parameter(b)  # (out, r)
            self.scale = scale

        @property
        def weight(self) -> torch.Tensor:  # code that reads .weight sees the base weight
            return self.base.weight

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.base(x) + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scale

    return _LoRALinear


_LORA_CLS: type | None = None


def LoRALinear(base: Any, a: Any, b: Any, scale: float) -> Any:  # noqa: N802 - a class
    """Build the LoRA wrapper (a ``torch.nn.Module``; torch is imported on first use)."""
    global _LORA_CLS
    if _LORA_CLS is None:
        _LORA_CLS = _lora_module()
    return _LORA_CLS(base, a, b, scale)


def _targets(model: Any, cfg: LoRAConfig) -> Iterator[tuple[str, nn.Module, str]]:
    """``(key, parent module, attribute)`` of each adapted linear: key ``{layer}.{name}``."""
    for i in cfg.layers(len(model.layers)):
        attn = model.layers[i].self_attn
        for name in cfg.targets:
            if not hasattr(attn, name):
                raise InvalidInput(f"layer {i} has no projection {name!r}")
            yield f"{i}.{name}", attn, name


def init_lora(model: Any, cfg: LoRAConfig, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """Fresh adapter tensors: ``A`` Kaiming-uniform, ``B`` zero (so ΔW starts at 0)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, attn, name in _targets(model, cfg):
        lin = getattr(attn, name)
        bound = 1.0 / math.sqrt(lin.in_features)
        out[f"{key}.a"] = (torch.rand(cfg.rank, lin.in_features, generator=gen) * 2 - 1) * bound
        out[f"{key}.b"] = torch.zeros(lin.out_features, cfg.rank)
    return out


def attach(model: Any, tensors: dict[str, torch.Tensor], cfg: LoRAConfig) -> list[Any]:
    """Wrap each target projection in a :class:`LoRALinear`; returns the wrappers (their
    ``lora_a``/``lora_b`` parameters alias ``tensors`` only when trained in place)."""
    wrappers = []
    for key, attn, name in _targets(model, cfg):
        base = getattr(attn, name)
        if not hasattr(base, "in_features"):
            raise Conflict(f"{key} already carries an adapter; detach it first")
        wrapper = LoRALinear(base, tensors[f"{key}.a"], tensors[f"{key}.b"], cfg.scale)
        setattr(attn, name, wrapper)
        wrappers.append(wrapper)
    return wrappers


def detach(model: Any) -> None:
    """Put every original projection back (the exact module objects: weights untouched)."""
    for block in model.layers:
        attn = block.self_attn
        for name, child in list(attn.named_children()):
            base = getattr(child, "base", None)
            if base is not None and hasattr(child, "lora_a"):
                setattr(attn, name, base)


def merge(model: Any, tensors: dict[str, torch.Tensor],
          cfg: LoRAConfig) -> dict[str, torch.Tensor]:
    """Add ΔW into the target weights in place; returns the saved originals for
    :func:`unmerge` (copies, so restoring them is bit-exact)."""
    import torch

    saved = {}
    with torch.no_grad():
        for key, attn, name in _targets(model, cfg):
            weight = getattr(attn, name).weight
            saved[key] = weight.detach().clone()
            weight += (tensors[f"{key}.b"] @ tensors[f"{key}.a"]) * cfg.scale
    return saved


def unmerge(model: Any, saved: dict[str, torch.Tensor], cfg: LoRAConfig) -> None:
    """Restore the weights :func:`merge` saved, bit for bit."""
    import torch

    with torch.no_grad():
        for key, attn, name in _targets(model, cfg):
            getattr(attn, name).weight.copy_(saved[key])


# --------------------------------------------------------------------------- training
def render_examples(lm: LanguageModel, facts: Sequence[tuple[str, Sequence[dict[str, str]]]]
                    ) -> list[tuple[list[int], int]]:
    """Token ids and the index where the loss starts, per training example.

    ``facts``: ``(statement, qa pairs)``. Each fact gives a recall chat turn and a bare
    statement; each QA pair a chat turn whose answer is the target.
    """
    chat = lm.chat_prompt  # type: ignore[attr-defined]
    end = lm.encode("<|im_end|>")
    out = []
    for text, qa in facts:
        statement = " ".join(text.split())
        turns = [(RECALL_PROMPT, statement)] + [(p["question"], p["answer"]) for p in qa]
        for question, answer in turns:
            prompt = lm.encode(chat([{"role": "user", "content": question}]))
            out.append((prompt + lm.encode(answer) + end, len(prompt)))
        out.append((lm.encode(statement), 1))
    return out


def rehearsal_examples(lm: LanguageModel, count: int, *,
                       window: int = 48) -> list[tuple[list[int], int]]:
    """Up to ``count`` windows of ``window`` tokens of generic English (the backbone's
    calibration corpus, never the held-out evaluation text), scored from the second token.

    Mixed into adapter training they anchor the adapted layers on ordinary text, so the
    adapter learns the facts without raising NLL elsewhere. Both the API's training path
    (:meth:`ParametricMemory.train`) and the benchmark use this one function.
    """
    if count <= 0:
        return []
    from memos.backbone.prepare import CALIBRATION_FILE, read_data_text

    ids = lm.encode(read_data_text(CALIBRATION_FILE))
    return [(ids[i:i + window], 1) for i in range(0, window * count, window)
            if len(ids[i:i + window]) == window]


def train_lora(lm: LanguageModel, examples: Sequence[tuple[list[int], int]], cfg: LoRAConfig, *,
               steps: int = 60, lr: float = 2e-3, batch_size: int = 16, seed: int = 0,
               progress: Callable[[float], None] | None = None,
               report: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """Train an adapter; returns its tensors (``{layer}.{target}.a|b``).

    The blocks below the first adapted one are frozen and adapter-free, so their outputs
    are computed once; each step runs only the adapted blocks, the final norm and the head.
    ``report``, when given, receives ``loss_curve`` (the training loss of every step, nats
    per target token) and ``nll_before`` / ``nll_after``: the mean NLL of every example
    before training (the adapter starts as the identity: B = 0) and after it.
    """
    import torch
    import torch.nn.functional as F

    model = lm.model
    layers = cfg.layers(len(model.layers))
    first = layers[0]
    n = len(examples)
    if n == 0:
        raise InvalidInput("no training examples")
    T = max(len(ids) for ids, _ in examples)
    ids = torch.zeros(n, T, dtype=torch.long)
    target = torch.full((n, T), -100, dtype=torch.long)
    for row, (seq, start) in enumerate(examples):
        ids[row, :len(seq)] = torch.tensor(seq)
        target[row, start - 1:len(seq) - 1] = torch.tensor(seq[start:])
    # clone: the model's RoPE table may have been built under inference_mode
    cos, sin = (t.clone() for t in model._rope_slice(0, T))
    with torch.no_grad():  # frozen lower blocks: once (right padding never leaks left)
        x0 = model.embed_tokens(ids)
        for i in range(first):
            x0, _ = model.layers[i](x0, cos, sin, None)
    tensors = init_lora(model, cfg, seed=seed)
    was_training = model.training
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    wrappers = attach(model, tensors, cfg)
    params = [p for w in wrappers for p in (w.lora_a, w.lora_b)]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    rng = random.Random(seed)
    order: list[int] = []

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        width = int((target[idx] != -100).nonzero()[:, 1].max()) + 2
        x = x0[idx, :width]
        c, s = cos[:width], sin[:width]
        for i in layers:
            x, _ = model.layers[i](x, c, s, None)
        tgt = target[idx, :width]
        keep = tgt != -100  # the head (V x C) only where there is a target: ~3x cheaper
        return F.cross_entropy(model.lm_head(model.norm(x)[keep]), tgt[keep],
                               reduction="sum") / keep.sum()

    def mean_nll() -> float:
        with torch.no_grad():
            total = tokens = 0.0
            for start in range(0, n, batch_size):
                idx = torch.arange(start, min(n, start + batch_size))
                count = float((target[idx] != -100).sum())
                total += float(batch_loss(idx)) * count
                tokens += count
            return total / max(tokens, 1.0)

    curve: list[float] = []
    try:
        if report is not None:
            report["nll_before"] = round(mean_nll(), 5)
        for step in range(steps):
            if len(order) < batch_size:
                more = list(range(n))
                rng.shuffle(more)
                order += more
            batch, order = order[:batch_size], order[batch_size:]
            loss = batch_loss(torch.tensor(batch))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            curve.append(round(float(loss.detach()), 5))
            if progress is not None:
                progress((step + 1) / steps)
        if report is not None:
            report["nll_after"] = round(mean_nll(), 5)
            report["loss_curve"] = curve
        return {k: v.detach().clone() for k, v in (
            (f"{key}.{ab}", getattr(w, f"lora_{ab}"))
            for (key, _, _), w in zip(_targets(model, cfg), wrappers) for ab in "ab")}
    finally:
        detach(model)
        for p in frozen:
            p.requires_grad_(True)
        model.train(was_training)


# --------------------------------------------------------------------------- service
@dataclass
class Adapter:
    unit_id: str
    tensors: dict[str, Any]
    config: LoRAConfig
    source_ids: list[str] = field(default_factory=list)


class ParametricMemory:
    """Train, load and attach the parametric units of every cube of ``units``."""

    def __init__(self, *, units: UnitRepository, jobs: JobQueue, provider: BackboneProvider,
                 blobs: BlobStore) -> None:
        self.units = units
        self.jobs = jobs
        self.provider = provider
        self.blobs = blobs

    def _facts(self, cube_id: str, unit_ids: Sequence[str], *,
               tenant: str) -> list[tuple[str, str, list[dict[str, str]]]]:
        out = []
        for row in active_plaintext_units(self.units, cube_id, unit_ids, tenant=tenant):
            qa = [p for p in (row.meta or {}).get("qa", [])
                  if isinstance(p, dict) and p.get("question") and p.get("answer")]
            out.append((row.id, row.text or "", qa))
        return out

    def enqueue_training(self, cube_id: str, body: AdapterCreate, *, tenant: str) -> TrainingJob:
        """Validate the sources now, train later in a ``train_adapter`` job."""
        self._facts(cube_id, body.unit_ids, tenant=tenant)
        with self.units.store.transaction() as session:
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            job = self.jobs.enqueue(session, kind=TRAIN_ADAPTER_JOB, cube_key=cube.key,
                                         payload={"tenant": tenant,
                                                  "request": body.model_dump()})
            session.flush()
            job_id = int(job.pk)
        self.jobs.wake()
        return self.job(cube_id, job_id, tenant=tenant)

    def job(self, cube_id: str, job_id: int, *, tenant: str) -> TrainingJob:
        """A training job of the cube. A job of another cube or tenant is :class:`NotFound`
        exactly like one that does not exist (same message, same details)."""
        with self.units.store.transaction() as session:
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            row = session.get(JobRow, job_id)
            if row is None or row.cube_key != cube.key or row.kind != TRAIN_ADAPTER_JOB:
                raise NotFound(f"job {job_id} not found", details={"job_id": job_id})
            unit_id = None
            for uid, meta in session.execute(select(UnitRow.id, UnitRow.meta).where(
                    UnitRow.cube_key == cube.key, UnitRow.kind == "parametric")):
                if (meta or {}).get("job_id") == job_id:
                    unit_id = uid
        return TrainingJob(job_id=job_id, status=row.status, progress=row.progress,
                           error=row.error, unit_id=unit_id)

    def run_train_job(self, job: Job, progress: Callable[[float], None]) -> None:
        """Handler of ``train_adapter`` jobs; idempotent (a re-run reuses the stored unit)."""
        body = AdapterCreate(**job.payload["request"])
        tenant = job.payload["tenant"]
        cube_id = job.cube_id or ""
        try:
            with self.units.store.transaction() as session:
                cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
                for meta in session.scalars(select(UnitRow.meta).where(
                        UnitRow.cube_key == cube.key, UnitRow.kind == "parametric")):
                    if (meta or {}).get("job_id") == job.id:
                        return
            self.train(cube_id, body, tenant=tenant, progress=progress, job_id=job.id)
        except NotFound:
            return  # cube or sources deleted meanwhile

    def train(self, cube_id: str, body: AdapterCreate, *, tenant: str,
              progress: Callable[[float], None] | None = None,
              job_id: int | None = None) -> AdapterPublic:
        """Train an adapter on the facts and store it as a ``parametric`` unit."""
        facts = self._facts(cube_id, body.unit_ids, tenant=tenant)
        cfg = LoRAConfig(rank=body.rank, alpha=2.0 * body.rank, targets=tuple(body.targets),
                         n_layers=body.n_layers)
        lm = self.provider()
        started = time.perf_counter()
        with self.provider.lock:  # the model's modules are swapped while training
            fingerprint = model_fingerprint(lm)
            examples = render_examples(lm, [(text, qa) for _, text, qa in facts])
            n_facts = len(examples)
            examples += rehearsal_examples(lm, int(n_facts * body.rehearsal))
            training: dict[str, Any] = {}
            tensors = train_lora(lm, examples, cfg, steps=body.steps, lr=body.lr,
                                 progress=progress, report=training)
        train_s = time.perf_counter() - started
        meta = {**fingerprint, "format": FORMAT, "lora": json.dumps(asdict(cfg)),
                "steps": str(body.steps), "examples": str(len(examples)),
                "rehearsal_examples": str(len(examples) - n_facts)}
        sha = self.blobs.put(tensors, meta)
        now = utcnow()
        unit_id = uuid.uuid4().hex
        with self.units.write() as (session, _publish):
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            src = {r.id: r for r in session.scalars(select(UnitRow).where(
                UnitRow.cube_key == cube.key, UnitRow.id.in_([f[0] for f in facts])))}
            changed = [i for i, text, _ in facts if i not in src or src[i].status != "active"
                       or (src[i].text or "") != text]
            if changed:  # deleted, corrected or purged while training: never store it
                self.blobs.delete(sha)
                raise Conflict(f"{len(changed)} source memories changed while the adapter was "
                               "trained; train again", details={"changed_ids": changed})
            row = new_unit(unit_id=unit_id, cube=cube, lineage_id=unit_id,
                          version=1, kind="parametric", granularity="cluster",
                          text="\n".join(f"- {t}" for _, t, _ in facts), extractor="lora",
                          status="active", tags=[], payload_sha256=sha,
                          payload_meta={**meta, "lora": asdict(cfg), "steps": body.steps,
                                        "examples": len(examples),
                                        "rehearsal_examples": len(examples) - n_facts,
                                        "train_s": train_s, **training},
                          meta={"sources": [f[0] for f in facts], "job_id": job_id},
                          confidence=1.0, created_at=now)
            session.add(row)
            session.flush()
            for source in (src[f[0]] for f in facts if f[0] in src):  # in request order
                session.add(LinkRow(cube_key=cube.key, src_pk=row.pk, dst_pk=source.pk,
                                    type="derived_from", weight=1.0, created_at=now))
        return self.get(cube_id, unit_id, tenant=tenant)

    # ---------------------------------------------------------------- read / use
    @staticmethod
    def _row(session: Any, cube: CubeRow, unit_id: str) -> UnitRow:
        row = session.scalar(select(UnitRow).where(UnitRow.cube_key == cube.key,
                                                   UnitRow.id == unit_id))
        if row is None or row.status == "deleted" or row.kind != "parametric":
            raise NotFound(f"parametric memory {unit_id!r} not found in cube {cube.id!r}",
                           details={"memory_id": unit_id})
        return row

    def get(self, cube_id: str, unit_id: str, *, tenant: str) -> AdapterPublic:
        with self.units.store.transaction() as session:
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            row = self._row(session, cube, unit_id)
            sources = [s.id for s in source_rows(session, row)]
            meta = dict(row.payload_meta or {})
        return AdapterPublic(unit=self.units.get_public(cube_id=cube_id, tenant=tenant,
                                                        unit_id=unit_id),
                             payload_meta=meta, source_ids=sources)

    def unit_ids(self, cube_id: str, *, tenant: str, active_only: bool = True) -> list[str]:
        """Ids of the cube's adapters (active ones unless ``active_only`` is false),
        newest first."""
        return model_unit_ids(self.units, cube_id, "parametric", tenant=tenant,
                              active_only=active_only)

    def load(self, cube_id: str, unit_id: str, *, tenant: str) -> Adapter:
        """The verified adapter; ``Conflict`` when stale, archived or for another model."""
        with self.units.store.transaction() as session:
            cube = self.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            row = self._row(session, cube, unit_id)
            status, reason = row.status, row.status_reason
            sources = source_rows(session, row)
            sha, meta = row.payload_sha256, dict(row.payload_meta or {})
        if status == "active" and any(s.status != "active" for s in sources):
            mark_stale(self.units, cube_id, tenant=tenant, kinds=("parametric",))
            status, reason = "archived", STALE_REASON
        if status != "active":
            raise Conflict(f"parametric memory {unit_id!r} is {status} ({reason}); retrain it",
                           details={"memory_id": unit_id, "status": status, "reason": reason})
        current = model_fingerprint(self.provider())
        check_fingerprint(meta, current, what=f"parametric memory {unit_id!r}")
        if sha is None:
            raise Conflict(f"parametric memory {unit_id!r} has no payload")
        tensors, blob_meta = self.blobs.get(sha)
        check_fingerprint(blob_meta, current, what=f"payload of {unit_id!r}")
        raw = json.loads(blob_meta["lora"])
        cfg = LoRAConfig(rank=raw["rank"], alpha=raw["alpha"], targets=tuple(raw["targets"]),
                         n_layers=raw["n_layers"])
        return Adapter(unit_id=unit_id, tensors=tensors, config=cfg,
                       source_ids=[s.id for s in sources])

    def resolve(self, cube_id: str, choice: str, *, tenant: str) -> Adapter | None:
        """A unit id, or ``"auto"``: the newest usable adapter of the cube (None if none)."""
        if choice != "auto":
            return self.load(cube_id, choice, tenant=tenant)
        for unit_id in self.unit_ids(cube_id, tenant=tenant):
            try:
                return self.load(cube_id, unit_id, tenant=tenant)
            except Conflict:
                continue
        return None

    @contextmanager
    def attached(self, adapter: Adapter) -> Iterator[None]:
        """Attach ``adapter`` to the shared model for the block (caller holds
        ``provider.lock``); detached afterwards, base weights untouched."""
        model = self.provider().model
        attach(model, adapter.tensors, adapter.config)
        try:
            yield
        finally:
            detach(model)

    def refresh(self, cube_id: str, *, tenant: str) -> list[str]:
        """Archive adapters whose source facts changed; returns their ids."""
        return mark_stale(self.units, cube_id, tenant=tenant, kinds=("parametric",))

