"""Lineage upkeep inside a write: what must be rebuilt when a source unit changes.

Model memory (KV caches, adapters) is derived from plaintext units through
``derived_from`` links. A write that supersedes, deletes or archives units calls
:func:`queue_stale_rebuild` in its own transaction, so the rebuild job commits with the
change. Pure SQL: nothing here imports torch or the model-memory modules, which register
the job's handler (:data:`REBUILD_ACTIVATION_JOB`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import select

from memos.store.models import CubeRow, JobRow, LinkRow, UnitRow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from memos.jobs import JobQueue

__all__ = ["queue_stale_rebuild", "REBUILD_ACTIVATION_JOB"]

#: The background job that archives stale model memory and recompiles stale KV caches.
REBUILD_ACTIVATION_JOB = "rebuild_activation"


def queue_stale_rebuild(session: Session, jobs: JobQueue, *, cube: CubeRow,
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
        JobRow.kind == REBUILD_ACTIVATION_JOB, JobRow.cube_key == cube.key,
        JobRow.status == "queued").limit(1))
    if queued is not None:
        return False
    jobs.enqueue(session, kind=REBUILD_ACTIVATION_JOB, cube_key=cube.key,
                 payload={"tenant": cube.tenant})
    return True
