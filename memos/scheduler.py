"""The memory scheduler: moves memory between kinds, as background jobs, and says why.

One :meth:`Scheduler.tick` per cube (job kind ``schedule_model_memory``) applies the
:class:`SchedulerPolicy`, in this order:

1. **rebuild** — activation units whose sources changed are archived and recompiled from
   the sources' current versions; adapters whose facts changed are archived (their facts
   flow back into step 3);
2. **compile** — *hot* plaintext units (tagged ``pinned``, or with ``metadata.retrievals``
   ≥ ``hot_min_retrievals``), best first, are compiled into one activation unit (KV cache)
   within ``activation_max_tokens``, unless the newest scheduler-built cache already holds
   exactly them;
3. **consolidate** — *stable* facts (active ``fact`` units, version ≥ 1, unchanged for
   ``stable_after_s`` seconds, confidence ≥ ``stable_min_confidence``) that no active
   adapter covers are trained into a LoRA adapter (a ``train_adapter`` job) once there are
   at least ``adapter_min_facts`` of them.

Every decision (what, why, which units, the resulting unit or job) is appended to the
cube's metadata under ``scheduler.history`` (the newest ``history_size`` kept), so
``GET /v1/cubes/{cube_id}/scheduler`` can show state and history without a new table.

Retrieval counts are read from ``metadata.retrievals`` when something records them; the
store does not count retrievals itself, so out of the box "hot" means pinned.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from sqlalchemy import select

from memos.errors import NotFound
from memos.store.models import CubeRow, UnitRow, utcnow

if TYPE_CHECKING:
    from memos.jobs import Job
    from memos.memory import ModelMemory

__all__ = ["SCHEDULE_JOB", "SchedulerPolicy", "Decision", "SchedulerState", "Scheduler"]

SCHEDULE_JOB = "schedule_model_memory"
EXTRACTOR = "scheduler"


class SchedulerPolicy(BaseModel):
    """Thresholds of the scheduler; per cube, ``metadata.scheduler_policy`` overrides them."""

    pinned_tag: str = "pinned"
    hot_min_retrievals: int = Field(default=5, ge=1)
    activation_max_tokens: int = Field(default=1024, ge=16, le=8_000)
    stable_after_s: float = Field(default=24 * 3600, ge=0)
    stable_min_confidence: float = Field(default=0.8, ge=0, le=1)
    adapter_min_facts: int = Field(default=5, ge=1)
    adapter_steps: int = Field(default=60, ge=1)
    adapter_rank: int = Field(default=8, ge=1, le=64)
    rebuild_on_change: bool = True
    history_size: int = Field(default=200, ge=1)


class Decision(BaseModel):
    action: str  # rebuild_activation | archive_adapter | compile_activation | train_adapter
    reason: str
    unit_ids: list[str] = Field(default_factory=list)
    result: dict[str, Any] = Field(default_factory=dict)
    at: str = Field(default_factory=lambda: utcnow().isoformat())


class SchedulerState(BaseModel):
    policy: SchedulerPolicy
    activations: list[str]
    adapters: list[str]
    hot_units: list[str]
    stable_facts: list[str]
    history: list[Decision]


class Scheduler:
    """Applies a :class:`SchedulerPolicy` to one cube at a time over :class:`ModelMemory`."""

    def __init__(self, mm: ModelMemory, policy: SchedulerPolicy | None = None) -> None:
        self.mm = mm
        self.cube = mm.cube
        self.policy = policy or SchedulerPolicy()

    def _policy(self, cube_id: str, *, tenant: str) -> SchedulerPolicy:
        with self.cube.store.transaction() as session:
            cube = self.cube.cube_row(session, tenant, cube_id)
            override = (cube.meta or {}).get("scheduler_policy") or {}
        return self.policy.model_copy(update=dict(override)) if override else self.policy

    # ---------------------------------------------------------------- selection
    def hot_units(self, cube_id: str, *, tenant: str,
                  policy: SchedulerPolicy | None = None) -> list[str]:
        """Pinned or frequently retrieved active plaintext units, most retrieved first."""
        p = policy or self.policy
        with self.cube.store.transaction() as session:
            rows = session.scalars(select(UnitRow).where(
                UnitRow.cube_id == cube_id, UnitRow.kind == "plaintext",
                UnitRow.status == "active").order_by(UnitRow.pk)).all()
            hot = [(int((r.meta or {}).get("retrievals", 0)), r.pk, r.id) for r in rows
                   if p.pinned_tag in (r.tags or [])
                   or int((r.meta or {}).get("retrievals", 0)) >= p.hot_min_retrievals]
        return [uid for _, _, uid in sorted(hot, key=lambda h: (-h[0], h[1]))]

    def stable_facts(self, cube_id: str, *, tenant: str,
                     policy: SchedulerPolicy | None = None) -> list[str]:
        """Active facts unchanged for ``stable_after_s`` that no active adapter covers."""
        p = policy or self.policy
        cutoff = utcnow() - timedelta(seconds=p.stable_after_s)
        with self.cube.store.transaction() as session:
            covered: set[str] = set()
            for meta in session.scalars(select(UnitRow.meta).where(
                    UnitRow.cube_id == cube_id, UnitRow.kind == "parametric",
                    UnitRow.status == "active")):
                covered.update((meta or {}).get("sources", []))
            rows = session.scalars(select(UnitRow).where(
                UnitRow.cube_id == cube_id, UnitRow.kind == "plaintext",
                UnitRow.granularity == "fact", UnitRow.status == "active",
                UnitRow.created_at <= cutoff,
                UnitRow.confidence >= p.stable_min_confidence).order_by(UnitRow.pk)).all()
            return [r.id for r in rows if r.id not in covered and r.text]

    # ---------------------------------------------------------------- the tick
    def tick(self, cube_id: str, *, tenant: str,
             train_inline: bool = False) -> list[Decision]:
        """Apply the policy once; returns (and records) the decisions taken."""
        from memos.memory.activation import ActivationCreate
        from memos.memory.parametric import AdapterCreate

        p = self._policy(cube_id, tenant=tenant)
        decisions: list[Decision] = []
        if p.rebuild_on_change:
            out = self.mm.activations.refresh(cube_id, tenant=tenant)
            for old in out["archived"]:
                new = out["rebuilt"].get(old)
                decisions.append(Decision(
                    action="rebuild_activation", unit_ids=[old],
                    reason="a source unit was superseded, deleted or archived",
                    result={"archived": old, "rebuilt": new}))
            for old in self.mm.adapters.refresh(cube_id, tenant=tenant):
                decisions.append(Decision(action="archive_adapter", unit_ids=[old],
                                          reason="a source fact changed; its facts return "
                                                 "to the consolidation pool"))
        hot = self.hot_units(cube_id, tenant=tenant, policy=p)
        if hot:
            self._fit(cube_id, hot, p, tenant=tenant)
        if hot and sorted(hot) != sorted(self._scheduled_activation_sources(cube_id)):
            built = self.mm.activations.create(cube_id, ActivationCreate(
                unit_ids=hot, max_tokens=8_000), tenant=tenant)
            self._mark_scheduled(built.unit.id)
            decisions.append(Decision(
                action="compile_activation", unit_ids=hot,
                reason=f"{len(hot)} hot units (tag {p.pinned_tag!r} or ≥ "
                       f"{p.hot_min_retrievals} retrievals)",
                result={"unit_id": built.unit.id, "n_tokens": built.n_tokens}))
        stable = self.stable_facts(cube_id, tenant=tenant, policy=p)
        if len(stable) >= p.adapter_min_facts:
            body = AdapterCreate(unit_ids=stable, steps=p.adapter_steps, rank=p.adapter_rank)
            if train_inline:
                trained = self.mm.adapters.train(cube_id, body, tenant=tenant)
                result: dict[str, Any] = {"unit_id": trained.unit.id}
            else:
                result = {"job_id": self.mm.adapters.enqueue_training(
                    cube_id, body, tenant=tenant).job_id}
            decisions.append(Decision(
                action="train_adapter", unit_ids=stable, result=result,
                reason=f"{len(stable)} stable facts (unchanged ≥ {p.stable_after_s:.0f} s, "
                       f"confidence ≥ {p.stable_min_confidence}) not in any adapter"))
        self._record(cube_id, decisions, p, tenant=tenant)
        return decisions

    def _fit(self, cube_id: str, unit_ids: list[str], p: SchedulerPolicy, *,
             tenant: str) -> None:
        """Trim ``unit_ids`` in place (weakest last) until the prefix fits the budget."""
        from memos.memory.activation import ActivationCreate, render_prefix

        lm = self.mm.provider()
        texts = dict(self.mm.activations.select_sources(
            cube_id, ActivationCreate(unit_ids=unit_ids), tenant=tenant))
        while unit_ids and len(lm.encode(render_prefix(
                lm, [texts[u] for u in unit_ids]))) > p.activation_max_tokens:
            unit_ids.pop()

    def _scheduled_activation_sources(self, cube_id: str) -> list[str]:
        with self.cube.store.transaction() as session:
            row = session.scalar(select(UnitRow).where(
                UnitRow.cube_id == cube_id, UnitRow.kind == "activation",
                UnitRow.status == "active").order_by(UnitRow.pk.desc()))
            if row is None or not (row.meta or {}).get("scheduled"):
                return []
            return list((row.meta or {}).get("sources", []))

    def _mark_scheduled(self, unit_id: str) -> None:
        with self.cube.write() as (session, _publish):
            row = session.scalar(select(UnitRow).where(UnitRow.id == unit_id))
            if row is not None:
                row.meta = {**(row.meta or {}), "scheduled": True}

    def _record(self, cube_id: str, decisions: list[Decision], p: SchedulerPolicy, *,
                tenant: str) -> None:
        with self.cube.write() as (session, _publish):
            cube: CubeRow = self.cube.cube_row(session, tenant, cube_id)
            meta = dict(cube.meta or {})
            state = dict(meta.get("scheduler") or {})
            history = list(state.get("history") or [])
            history += [d.model_dump(mode="json") for d in decisions]
            state["history"] = history[-p.history_size:]
            state["last_tick"] = utcnow().isoformat()
            meta["scheduler"] = state
            cube.meta = meta

    # ---------------------------------------------------------------- jobs and state
    def enqueue(self, cube_id: str, *, tenant: str) -> int:
        with self.cube.store.transaction() as session:
            self.cube.cube_row(session, tenant, cube_id)
            job = self.cube.jobs.enqueue(session, kind=SCHEDULE_JOB, cube_id=cube_id,
                                         payload={"tenant": tenant})
            session.flush()
            job_id = int(job.pk)
        if self.cube.on_enqueue is not None:
            self.cube.on_enqueue()
        return job_id

    def run_job(self, job: Job, progress: Callable[[float], None]) -> None:
        """Handler of ``schedule_model_memory`` jobs (payload ``{"tenant": …}``)."""
        try:
            self.tick(job.cube_id or "", tenant=job.payload["tenant"])
        except NotFound:
            return
        progress(1.0)

    def state(self, cube_id: str, *, tenant: str) -> SchedulerState:
        p = self._policy(cube_id, tenant=tenant)
        with self.cube.store.transaction() as session:
            cube = self.cube.cube_row(session, tenant, cube_id)
            history = ((cube.meta or {}).get("scheduler") or {}).get("history") or []
        return SchedulerState(
            policy=p, activations=self.mm.activations.unit_ids(cube_id, tenant=tenant),
            adapters=self.mm.adapters.unit_ids(cube_id, tenant=tenant),
            hot_units=self.hot_units(cube_id, tenant=tenant, policy=p),
            stable_facts=self.stable_facts(cube_id, tenant=tenant, policy=p),
            history=[Decision(**d) for d in history])
