"""``/v1/cubes/{cube_id}/structure/...``: the cube's Gaussian-mixture structure, for
people (the inspector's structure plots): cluster maps and association mixtures."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import MemosDep, TenantDep
from api.responses import ERRORS
from memos.types import AssociationMixture, ClusterMap, Granularity

router = APIRouter(prefix="/v1/cubes/{cube_id}/structure", tags=["structure"],
                   responses=ERRORS)


@router.get("/clusters", response_model=ClusterMap)
def cluster_map(cube_id: str, memos: MemosDep, tenant: TenantDep,
                granularity: Granularity = Granularity.turn,
                limit: Annotated[int, Query(ge=4, le=5000)] = 2000) -> ClusterMap:
    """The GMM clustering of the newest ``limit`` active units of ``granularity``, fitted
    now from their vectors and projected on their first two principal axes."""
    return memos.cluster_map(cube_id, tenant=tenant, granularity=granularity, limit=limit)


@router.get("/association/{memory_id}", response_model=AssociationMixture)
def association_mixture(cube_id: str, memory_id: str, memos: MemosDep,
                        tenant: TenantDep) -> AssociationMixture:
    """How GMM association decided the unit's links: its top similarities to earlier
    units, the two Gaussians fitted to them and the threshold."""
    return memos.association_mixture(cube_id, memory_id, tenant=tenant)
