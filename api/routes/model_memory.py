"""Memory inside the bundled model: ``/v1/cubes/{cube_id}/activations``, ``/adapters``,
``/scheduler``.

Activation units (KV caches) are compiled inside the request (one prefill); adapters are
trained by the ``train_adapter`` background job unless the body asks for ``sync``. Units are
returned without tensors; payloads stay in the blob store.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status

from api.deps import ModelMemoryDep, SchedulerDep, TenantDep
from api.responses import ERRORS
from memos.types import (
    MAX_INT,
    ActivationCreate,
    ActivationPublic,
    ActivationRefresh,
    AdapterCreate,
    AdapterPublic,
    SchedulerState,
    SchedulerTick,
    TrainingJob,
)

router = APIRouter(prefix="/v1/cubes/{cube_id}", tags=["model memory"],
                   responses=ERRORS)



@router.post("/activations", response_model=ActivationPublic,
             status_code=status.HTTP_201_CREATED)
def create_activation(cube_id: str, body: ActivationCreate, mm: ModelMemoryDep,
                      tenant: TenantDep) -> ActivationPublic:
    """Compile plaintext units (``unit_ids``, or a ``query`` within ``max_tokens``) into a
    KV cache stored as an ``activation`` unit linked ``derived_from`` its sources."""
    return mm.activations.create(cube_id, body, tenant=tenant)


@router.get("/activations", response_model=list[ActivationPublic])
def list_activations(cube_id: str, mm: ModelMemoryDep, tenant: TenantDep,
                     include_inactive: bool = False) -> list[ActivationPublic]:
    """Activation units, newest first (active only unless ``include_inactive``)."""
    ids = mm.activations.unit_ids(cube_id, tenant=tenant, active_only=not include_inactive)
    return [mm.activations.get(cube_id, i, tenant=tenant) for i in ids]


@router.get("/activations/{unit_id}", response_model=ActivationPublic)
def get_activation(cube_id: str, unit_id: str, mm: ModelMemoryDep,
                   tenant: TenantDep) -> ActivationPublic:
    """The unit and its payload metadata (fingerprint, tokens, shapes); no tensors."""
    return mm.activations.get(cube_id, unit_id, tenant=tenant)


@router.post("/activations/refresh", response_model=ActivationRefresh)
def refresh_activations(cube_id: str, mm: ModelMemoryDep, tenant: TenantDep,
                        background: bool = False) -> ActivationRefresh:
    """Archive activation units whose sources changed and rebuild them from the sources'
    current versions; ``background=true`` queues a ``rebuild_activation`` job instead.
    (A source change already queues that job; this is for an immediate answer.)"""
    if background:
        return ActivationRefresh(job_id=mm.activations.enqueue_rebuild(cube_id, tenant=tenant))
    return ActivationRefresh(**mm.activations.refresh(cube_id, tenant=tenant))


@router.post("/adapters", status_code=status.HTTP_202_ACCEPTED,
             response_model=TrainingJob | AdapterPublic)
def create_adapter(cube_id: str, body: AdapterCreate, mm: ModelMemoryDep,
                   tenant: TenantDep) -> TrainingJob | AdapterPublic:
    """Train a LoRA adapter on the facts: a ``train_adapter`` job (poll
    ``GET /adapters/jobs/{job_id}``), or inline with ``sync: true``."""
    if body.sync:
        return mm.adapters.train(cube_id, body, tenant=tenant)
    return mm.adapters.enqueue_training(cube_id, body, tenant=tenant)


@router.get("/adapters", response_model=list[AdapterPublic])
def list_adapters(cube_id: str, mm: ModelMemoryDep, tenant: TenantDep,
                  include_inactive: bool = False) -> list[AdapterPublic]:
    """Parametric units, newest first (active only unless ``include_inactive``)."""
    ids = mm.adapters.unit_ids(cube_id, tenant=tenant, active_only=not include_inactive)
    return [mm.adapters.get(cube_id, i, tenant=tenant) for i in ids]


@router.get("/adapters/jobs/{job_id}", response_model=TrainingJob)
def adapter_job(cube_id: str, job_id: Annotated[int, Path(ge=1, le=MAX_INT)],
                mm: ModelMemoryDep, tenant: TenantDep) -> TrainingJob:
    """Status and progress of a training job; ``unit_id`` once the adapter is stored."""
    return mm.adapters.job(cube_id, job_id, tenant=tenant)


@router.get("/adapters/{unit_id}", response_model=AdapterPublic)
def get_adapter(cube_id: str, unit_id: str, mm: ModelMemoryDep,
                tenant: TenantDep) -> AdapterPublic:
    """The adapter unit and its payload metadata (fingerprint, LoRA config); no tensors."""
    return mm.adapters.get(cube_id, unit_id, tenant=tenant)


@router.get("/scheduler", response_model=SchedulerState)
def scheduler_state(cube_id: str, sched: SchedulerDep, tenant: TenantDep) -> SchedulerState:
    """The memory scheduler's policy, current state (model memory, hot units with their
    retrieval counts, stable facts) and decision history for the cube."""
    return sched.state(cube_id, tenant=tenant)


@router.post("/scheduler/tick", response_model=SchedulerTick)
def scheduler_tick(cube_id: str, sched: SchedulerDep, tenant: TenantDep,
                   background: bool = False) -> SchedulerTick:
    """Apply the policy now and return its decisions (adapter training is still queued as
    a job); ``background=true`` queues a ``schedule_model_memory`` job instead. Ticks also
    run on their own, after ``tick_every_retrievals`` new search hits."""
    if background:
        return SchedulerTick(job_id=sched.enqueue(cube_id, tenant=tenant))
    return SchedulerTick(decisions=sched.tick(cube_id, tenant=tenant))
