"""``/v1/cubes/{cube_id}/memories``: CRUD, versions (history) and provenance."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from api.deps import MemosDep, TenantDep
from api.responses import ERRORS
from memos.types import (
    MAX_INT,
    DeletionReport,
    Filters,
    Granularity,
    Kind,
    ListedStatus,
    MemoryCreate,
    MemoryPage,
    MemoryPublic,
    MemoryUpdate,
    ProvenancePublic,
    Timestamp,
)

router = APIRouter(prefix="/v1/cubes/{cube_id}/memories", tags=["memories"],
                   responses=ERRORS)


@router.post("", response_model=MemoryPublic, status_code=status.HTTP_201_CREATED)
def create_memory(cube_id: str, body: MemoryCreate, memos: MemosDep,
                  tenant: TenantDep) -> MemoryPublic:
    """Add a memory unit, with provenance spans into stored messages if given."""
    return memos.create_memory(cube_id, body, tenant=tenant)


@router.get("", response_model=MemoryPage)
def list_memories(
    cube_id: str, memos: MemosDep, tenant: TenantDep,
    kind: Kind | None = None,
    granularity: Annotated[list[Granularity] | None, Query()] = None,
    status_: Annotated[ListedStatus | None, Query(alias="status")] = None,
    session_id: str | None = None,
    tags: Annotated[list[str] | None, Query(alias="tag")] = None,
    created_after: Timestamp | None = None,
    created_before: Timestamp | None = None,
    as_of: Timestamp | None = None,
    offset: Annotated[int, Query(ge=0, le=MAX_INT)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> MemoryPage:
    """List units, oldest first. ``as_of`` answers "what did the cube hold then"."""
    filters = Filters(kind=kind, granularity=granularity, status=status_, session_id=session_id,
                      tags=tags, created_after=created_after, created_before=created_before,
                      as_of=as_of)
    return memos.list_memories(cube_id, filters, tenant=tenant, offset=offset, limit=limit)


@router.get("/{memory_id}", response_model=MemoryPublic)
def get_memory(cube_id: str, memory_id: str, memos: MemosDep, tenant: TenantDep) -> MemoryPublic:
    return memos.get_memory(cube_id, memory_id, tenant=tenant)


@router.patch("/{memory_id}", response_model=MemoryPublic)
def update_memory(cube_id: str, memory_id: str, body: MemoryUpdate, memos: MemosDep,
                  tenant: TenantDep) -> MemoryPublic:
    """Write a new version; the old one is superseded and kept in the history."""
    return memos.update_memory(cube_id, memory_id, body, tenant=tenant)


@router.delete("/{memory_id}", response_model=DeletionReport)
def delete_memory(cube_id: str, memory_id: str, memos: MemosDep, tenant: TenantDep,
                  purge: bool = False) -> DeletionReport:
    """Tombstone the memory (every version) and what was derived from it alone: deleting a
    turn rewrites its session unit, re-derives summary, keywords and facts, and retires the
    facts that cited only it. ``?purge=true`` erases all of that instead — text, vectors,
    metadata, the message's content, model memory built from it — from SQL, the vector index
    files and the blob store. The report says what changed and where."""
    return memos.delete_memory(cube_id, memory_id, tenant=tenant, purge=purge)


@router.get("/{memory_id}/history", response_model=list[MemoryPublic])
def history(cube_id: str, memory_id: str, memos: MemosDep,
            tenant: TenantDep) -> list[MemoryPublic]:
    """Every version of the memory, oldest first."""
    return memos.history(cube_id, memory_id, tenant=tenant)


@router.get("/{memory_id}/provenance", response_model=ProvenancePublic)
def provenance(cube_id: str, memory_id: str, memos: MemosDep,
               tenant: TenantDep) -> ProvenancePublic:
    """Source messages with the cited spans, the derived-from chain and links."""
    return memos.provenance(cube_id, memory_id, tenant=tenant)
