"""``/v1/cubes/{cube_id}/jobs``: a cube's background jobs, and retrying a failed one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.deps import MemosDep, TenantDep
from api.responses import ERRORS
from memos.types import MAX_INT, JobPage, JobPublic, JobStatus

router = APIRouter(prefix="/v1/cubes/{cube_id}/jobs", tags=["jobs"], responses=ERRORS)


@router.get("", response_model=JobPage)
def list_jobs(cube_id: str, memos: MemosDep, tenant: TenantDep,
              status: JobStatus | None = None,
              offset: Annotated[int, Query(ge=0, le=MAX_INT)] = 0,
              limit: Annotated[int, Query(ge=1, le=200)] = 50) -> JobPage:
    """The cube's jobs, newest first: kind, status, attempts, progress and the last error."""
    return memos.list_jobs(cube_id, tenant=tenant, status=status, offset=offset, limit=limit)


@router.post("/{job_id}/retry", response_model=JobPublic)
def retry_job(cube_id: str, job_id: Annotated[int, Path(ge=1, le=MAX_INT)], memos: MemosDep,
              tenant: TenantDep) -> JobPublic:
    """Queue a failed job again, attempts from zero (409 unless it failed; another cube's
    job is 404 like a missing one)."""
    return memos.retry_job(cube_id, job_id, tenant=tenant)
