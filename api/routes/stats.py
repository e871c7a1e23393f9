"""``/v1/cubes/{cube_id}/stats``: what a cube holds, counted (the inspector's cube page)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import MemosDep, TenantDep
from api.responses import ERRORS
from memos.types import CubeStats

router = APIRouter(prefix="/v1/cubes/{cube_id}", tags=["cubes"], responses=ERRORS)


@router.get("/stats", response_model=CubeStats)
def cube_stats(cube_id: str, memos: MemosDep, tenant: TenantDep) -> CubeStats:
    """Units per granularity and kind (active) and per status, every name listed; one
    grouped SQL count, so as quick on 100,000 units as a list page."""
    return memos.stats(cube_id, tenant=tenant)
