"""The memory scheduler: moves memory between kinds, as background jobs, and says why.

One :meth:`Scheduler.tick` per cube (job kind ``schedule_model_memory``) applies the
:class:`~memos.types.SchedulerPolicy`, in this order:

1. **rebuild** — activation units whose sources were superseded, deleted or archived are
   archived and (``rebuild_on_change``) recompiled from the sources' current versions;
   adapters whose facts changed are archived (their facts flow back into step 3);
2. **compile** — *hot* plaintext units, best first, are compiled into one activation unit
   (KV cache) within ``activation_max_tokens``, unless the newest scheduler-built cache
   already holds exactly them; the cache it replaces is archived. Hot means tagged
   ``pinned`` (the cube's core memory, always first) or retrieved at least
   ``hot_min_retrievals`` times (search hits summed over the memory's versions), most
   retrieved first;
3. **consolidate** — *stable* facts (active ``fact`` units unchanged for ``stable_after_s``
   seconds, confidence ≥ ``stable_min_confidence``) that no active adapter covers are
   trained into a LoRA adapter (a ``train_adapter`` job) once there are at least
   ``adapter_min_facts`` of them.

What makes it run, with no manual call:

- **retrievals** — every search counts its hits in memory (:mod:`memos.usage`);
  :meth:`Scheduler.housekeeping`, called by the API's background loop every few seconds,
  adds them to ``memory_units.retrievals`` in one batched UPDATE and queues a tick for each
  cube with ``tick_every_retrievals`` new hits since its last tick (when the bundled model
  is installed and prepared; without it a tick could do nothing);
- **source changes** — a PATCH, DELETE or archive of a unit that an active activation or
  parametric unit was derived from queues a ``rebuild_activation`` job in the same
  transaction (:func:`memos.memory.queue_stale_rebuild`; one indexed query when nothing
  depends on the unit). Its handler here (:meth:`Scheduler.run_rebuild_job`) runs step 1,
  records it, and queues a tick when an adapter was archived, so its facts are consolidated
  again.

Every decision (what, why, which units, the resulting unit or job) is appended to the
cube's metadata under ``scheduler.history`` (the newest ``history_size`` kept), so
``GET /v1/cubes/{cube_id}/scheduler`` can show state and history without a new table.
A cube overrides policy fields with ``metadata.scheduler_policy`` (validated on use).

    sched = Scheduler(model_memory, SchedulerPolicy(hot_min_retrievals=3))
    sched.tick("cube", tenant="default")      # → [Decision(action="compile_activation", …)]
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from sqlalchemy import func, select

from memos.errors import InvalidInput
from memos.jobs import run_for_cube
from memos.memory import REBUILD_ACTIVATION_JOB
from memos.store.models import CubeRow, JobRow, TagRow, UnitRow, utcnow
from memos.types import ActivationCreate, AdapterCreate, Decision, SchedulerPolicy, SchedulerState

if TYPE_CHECKING:
    from memos.jobs import Job
    from memos.memory import ModelMemory

__all__ = ["SCHEDULE_JOB", "Scheduler"]

log = logging.getLogger("memos.scheduler")

SCHEDULE_JOB = "schedule_model_memory"
#: Units considered for one compiled prefix (the most retrieved first).
MAX_HOT = 256


class Scheduler:
    """Applies a :class:`~memos.types.SchedulerPolicy` to one cube at a time over
    :class:`~memos.memory.ModelMemory`; ``policy`` is the default for cubes without an
    override."""

    def __init__(self, mm: ModelMemory, policy: SchedulerPolicy | None = None) -> None:
        self.mm = mm
        self.policy = policy or SchedulerPolicy()
        self._lock = threading.Lock()
        # new hits per cube (by internal key) since its last tick
        self._since_tick: Counter[str] = Counter()

    # ---------------------------------------------------------------- policy
    def policy_for(self, meta: Mapping[str, Any] | None) -> SchedulerPolicy:
        """The default policy with a cube's ``metadata.scheduler_policy`` applied."""
        override = (meta or {}).get("scheduler_policy")
        if not override:
            return self.policy
        if not isinstance(override, Mapping):
            raise InvalidInput("cube metadata.scheduler_policy must be an object")
        try:
            return SchedulerPolicy.model_validate({**self.policy.model_dump(), **override})
        except ValidationError as exc:
            problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                        for e in exc.errors()]
            raise InvalidInput("cube metadata.scheduler_policy is invalid: "
                               + "; ".join(problems), details={"errors": problems}) from exc

    def _policy(self, cube_id: str, *, tenant: str) -> SchedulerPolicy:
        with self.mm.units.store.transaction() as session:
            row = self.mm.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            meta = dict(row.meta or {})
        return self.policy_for(meta)

    # ---------------------------------------------------------------- retrieval counts
    def flush(self) -> dict[str, int]:
        """Write the pending retrieval counts to SQL (one batched UPDATE); returns the hits
        flushed per cube, which also count towards each cube's next automatic tick."""
        flushed = self.mm.searcher.retrievals.flush(self.mm.units.store)
        if flushed:
            with self._lock:
                self._since_tick.update(flushed)
        return flushed

    def housekeeping(self) -> list[int]:
        """Flush retrieval counts, then queue a tick for every cube whose new hits reached
        its ``tick_every_retrievals``; returns the tick job ids. Called periodically by the
        API's background loop."""
        self.flush()
        with self._lock:
            due = dict(self._since_tick)
        if not due:
            return []
        if not self.mm.provider.available():
            with self._lock:
                self._since_tick.clear()  # nothing could be compiled or trained anyway
            return []
        with self.mm.units.store.transaction() as session:
            cubes = {c.key: (c.id, c.tenant, dict(c.meta or {})) for c in session.scalars(
                select(CubeRow).where(CubeRow.key.in_(list(due))))}
        jobs = []
        for key, hits in due.items():
            if key not in cubes:
                with self._lock:
                    self._since_tick.pop(key, None)
                continue
            cube_id, tenant, meta = cubes[key]
            try:
                every = self.policy_for(meta).tick_every_retrievals
            except InvalidInput as exc:
                log.warning("cube %s: %s", cube_id, exc.message)
                every = 0
            if every and hits >= every:
                jobs.append(self.enqueue(cube_id, tenant=tenant))
                with self._lock:
                    self._since_tick[key] -= hits
        return jobs

    # ---------------------------------------------------------------- selection
    def retrieval_counts(self, cube_id: str, *, tenant: str,
                         policy: SchedulerPolicy | None = None) -> dict[str, int]:
        """Hot units (active plaintext id → search hits summed over the memory's versions),
        in compile order: pinned first, then most retrieved; ties by age."""
        p = policy or self.policy
        with self.mm.units.store.transaction() as session:
            key = self.mm.units.cube_row(session, cube_id=cube_id, tenant=tenant).key
            sums = dict(session.execute(
                select(UnitRow.lineage_id, func.sum(UnitRow.retrievals)).where(
                    UnitRow.cube_key == key, UnitRow.kind == "plaintext",
                    UnitRow.retrievals > 0).group_by(UnitRow.lineage_id)).all())
            frequent = [lin for lin, n in sums.items() if int(n) >= p.hot_min_retrievals]
            active = select(UnitRow.id, UnitRow.lineage_id, UnitRow.pk).where(
                UnitRow.cube_key == key, UnitRow.kind == "plaintext",
                UnitRow.status == "active")
            pinned = session.execute(active.join(TagRow, TagRow.unit_pk == UnitRow.pk)
                                     .where(TagRow.tag == p.pinned_tag)).all()
            rows = session.execute(active.where(UnitRow.lineage_id.in_(frequent))).all() \
                if frequent else []
        pinned_ids = {uid for uid, _, _ in pinned}
        ranked = sorted({(uid, lin, pk) for uid, lin, pk in [*pinned, *rows]},
                        key=lambda r: (r[0] not in pinned_ids, -int(sums.get(r[1], 0)), r[2]))
        return {uid: int(sums.get(lin, 0)) for uid, lin, _ in ranked[:MAX_HOT]}

    def hot_units(self, cube_id: str, *, tenant: str,
                  policy: SchedulerPolicy | None = None) -> list[str]:
        """Pinned or frequently retrieved active plaintext units, in compile order."""
        return list(self.retrieval_counts(cube_id, tenant=tenant, policy=policy))

    def stable_facts(self, cube_id: str, *, tenant: str,
                     policy: SchedulerPolicy | None = None) -> list[str]:
        """Active facts unchanged for ``stable_after_s`` that no active adapter covers."""
        p = policy or self.policy
        cutoff = utcnow() - timedelta(seconds=p.stable_after_s)
        with self.mm.units.store.transaction() as session:
            key = self.mm.units.cube_row(session, cube_id=cube_id, tenant=tenant).key
            covered: set[str] = set()
            for meta in session.scalars(select(UnitRow.meta).where(
                    UnitRow.cube_key == key, UnitRow.kind == "parametric",
                    UnitRow.status == "active")):
                covered.update((meta or {}).get("sources", []))
            rows = session.scalars(select(UnitRow).where(
                UnitRow.cube_key == key, UnitRow.kind == "plaintext",
                UnitRow.granularity == "fact", UnitRow.status == "active",
                UnitRow.created_at <= cutoff,
                UnitRow.confidence >= p.stable_min_confidence).order_by(UnitRow.pk)).all()
            return [r.id for r in rows if r.id not in covered and r.text]

    # ---------------------------------------------------------------- the tick
    def tick(self, cube_id: str, *, tenant: str,
             train_inline: bool = False) -> list[Decision]:
        """Apply the policy once; returns (and records) the decisions taken."""
        self.flush()
        p = self._policy(cube_id, tenant=tenant)
        with self.mm.units.store.transaction() as session:
            key = self.mm.units.cube_row(session, cube_id=cube_id, tenant=tenant).key
        with self._lock:
            self._since_tick.pop(key, None)
        decisions = self._rebuild(cube_id, p, tenant=tenant)
        hot = self._fit(cube_id, list(self.retrieval_counts(cube_id, tenant=tenant, policy=p)),
                        p, tenant=tenant)
        previous, held = self._scheduled_activation(key)
        if hot and sorted(hot) != sorted(held):
            built = self.mm.activations.create(cube_id, ActivationCreate(
                unit_ids=hot, max_tokens=8_000), tenant=tenant, unit_meta={"scheduled": True})
            result: dict[str, Any] = {"unit_id": built.unit.id, "n_tokens": built.n_tokens}
            if previous is not None:
                self._archive(key, previous, reason=f"replaced by scheduled activation "
                                               f"{built.unit.id}")
                result["replaced"] = previous
            decisions.append(Decision(
                action="compile_activation", unit_ids=hot, result=result,
                reason=f"{len(hot)} hot units (tag {p.pinned_tag!r} or ≥ "
                       f"{p.hot_min_retrievals} retrievals) within "
                       f"{p.activation_max_tokens} tokens"))
        stable = self.stable_facts(cube_id, tenant=tenant, policy=p)
        if len(stable) >= p.adapter_min_facts:
            body = AdapterCreate(unit_ids=stable, steps=p.adapter_steps, rank=p.adapter_rank)
            if train_inline:
                trained = self.mm.adapters.train(cube_id, body, tenant=tenant)
                result = {"unit_id": trained.unit.id}
            else:
                result = {"job_id": self.mm.adapters.enqueue_training(
                    cube_id, body, tenant=tenant).job_id}
            decisions.append(Decision(
                action="train_adapter", unit_ids=stable, result=result,
                reason=f"{len(stable)} stable facts (unchanged ≥ {p.stable_after_s:.0f} s, "
                       f"confidence ≥ {p.stable_min_confidence}) not in any adapter"))
        self._record(cube_id, decisions, p, tenant=tenant)
        return decisions

    def _rebuild(self, cube_id: str, p: SchedulerPolicy, *, tenant: str) -> list[Decision]:
        """Step 1: archive stale model memory; recompile stale KV caches when the policy
        says so and the bundled model is available."""
        rebuild = p.rebuild_on_change and self.mm.provider.available()
        out = self.mm.activations.refresh(cube_id, tenant=tenant, rebuild=rebuild)
        decisions = []
        for old in out["archived"]:
            new = out["rebuilt"].get(old)
            decisions.append(Decision(
                action="rebuild_activation" if new else "archive_activation", unit_ids=[old],
                reason="a source unit was superseded, deleted or archived"
                       + ("" if new else " (no rebuild: " + (
                           "no source is left" if rebuild else
                           "rebuild_on_change is off or the bundled model is unavailable")
                          + ")"),
                result={"archived": old, "rebuilt": new}))
        for old in self.mm.adapters.refresh(cube_id, tenant=tenant):
            decisions.append(Decision(action="archive_adapter", unit_ids=[old],
                                      reason="a source fact changed; its facts return "
                                             "to the consolidation pool"))
        return decisions

    def _fit(self, cube_id: str, unit_ids: list[str], p: SchedulerPolicy, *,
             tenant: str) -> list[str]:
        """The longest prefix-ordered selection of ``unit_ids`` whose memory prefix fits
        ``activation_max_tokens``: each unit is taken if it still fits (a long unit is
        skipped, not a reason to stop)."""
        from memos.memory.activation import render_prefix

        if not unit_ids:
            return []
        lm = self.mm.provider()
        texts = dict(self.mm.activations.select_sources(
            cube_id, ActivationCreate(unit_ids=unit_ids), tenant=tenant))
        used = len(lm.encode(render_prefix(lm, [])))
        chosen = []
        for uid in unit_ids:
            cost = len(lm.encode(f"- {' '.join(texts[uid].split())}\n"))
            if used + cost <= p.activation_max_tokens:
                chosen.append(uid)
                used += cost
        # per-line costs are an estimate (tokens can merge across lines): check the whole
        while chosen and len(lm.encode(render_prefix(
                lm, [texts[u] for u in chosen]))) > p.activation_max_tokens:
            chosen.pop()
        return chosen

    def _scheduled_activation(self, cube_key: str) -> tuple[str | None, list[str]]:
        """The newest active activation unit the scheduler built, and its sources."""
        with self.mm.units.store.transaction() as session:
            for row in session.scalars(select(UnitRow).where(
                    UnitRow.cube_key == cube_key, UnitRow.kind == "activation",
                    UnitRow.status == "active").order_by(UnitRow.pk.desc())):
                if (row.meta or {}).get("scheduled"):
                    return row.id, list((row.meta or {}).get("sources", []))
        return None, []

    def _archive(self, cube_key: str, unit_id: str, *, reason: str) -> None:
        with self.mm.units.write() as (session, _publish):
            row = session.scalar(select(UnitRow).where(UnitRow.cube_key == cube_key,
                                                       UnitRow.id == unit_id))
            if row is not None and row.status == "active":
                row.status, row.status_reason = "archived", reason

    def _record(self, cube_id: str, decisions: list[Decision], p: SchedulerPolicy, *,
                tenant: str) -> None:
        with self.mm.units.write() as (session, _publish):
            cube: CubeRow = self.mm.units.cube_row(session, cube_id=cube_id, tenant=tenant)
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
        """Queue a tick for the cube (or return the id of the one already queued)."""
        with self.mm.units.store.transaction() as session:
            cube = self.mm.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            queued = session.scalar(select(JobRow.pk).where(
                JobRow.kind == SCHEDULE_JOB, JobRow.cube_key == cube.key,
                JobRow.status == "queued").limit(1))
            if queued is not None:
                return int(queued)
            job = self.mm.jobs.enqueue(session, kind=SCHEDULE_JOB, cube_key=cube.key,
                                         payload={"tenant": tenant})
            session.flush()
            job_id = int(job.pk)
        self.mm.jobs.wake()
        return job_id

    def handlers(self) -> dict[str, Callable[..., None]]:
        """Job handlers to register with the worker: the tick, and the rebuild that source
        changes queue (it replaces :meth:`ActivationMemory.run_rebuild_job`: it also
        archives stale adapters and records what it did)."""
        return {SCHEDULE_JOB: self.run_job, REBUILD_ACTIVATION_JOB: self.run_rebuild_job}

    def run_job(self, job: Job, progress: Callable[[float], None]) -> None:
        """Handler of ``schedule_model_memory`` jobs (payload ``{"tenant": …}``)."""
        run_for_cube(progress, lambda: self.tick(job.cube_id or "",
                                                  tenant=job.payload["tenant"]))

    def rebuild(self, cube_id: str, *, tenant: str) -> list[Decision]:
        """Step 1 alone (what a source change triggers); recorded like a tick's decisions.
        When an adapter was archived, a tick is queued so its facts are consolidated anew."""
        p = self._policy(cube_id, tenant=tenant)
        decisions = self._rebuild(cube_id, p, tenant=tenant)
        if decisions:
            self._record(cube_id, decisions, p, tenant=tenant)
        if any(d.action == "archive_adapter" for d in decisions) and \
                self.mm.provider.available():
            self.enqueue(cube_id, tenant=tenant)
        return decisions

    def run_rebuild_job(self, job: Job, progress: Callable[[float], None]) -> None:
        """Handler of ``rebuild_activation`` jobs (payload ``{"tenant": …}``)."""
        run_for_cube(progress, lambda: self.rebuild(job.cube_id or "",
                                                  tenant=job.payload["tenant"]))

    def state(self, cube_id: str, *, tenant: str) -> SchedulerState:
        """Policy, current model memory, hot units with their counts, stable facts and the
        decision history (pending retrieval counts are flushed first)."""
        self.flush()
        with self.mm.units.store.transaction() as session:
            row = self.mm.units.cube_row(session, cube_id=cube_id, tenant=tenant)
            meta = dict(row.meta or {})
        p = self.policy_for(meta)
        sched = meta.get("scheduler") or {}
        counts = self.retrieval_counts(cube_id, tenant=tenant, policy=p)
        return SchedulerState(
            policy=p, activations=self.mm.activations.unit_ids(cube_id, tenant=tenant),
            adapters=self.mm.adapters.unit_ids(cube_id, tenant=tenant),
            hot_units=list(counts), retrievals=counts,
            stable_facts=self.stable_facts(cube_id, tenant=tenant, policy=p),
            last_tick=sched.get("last_tick"),
            history=[Decision(**d) for d in sched.get("history") or []])
