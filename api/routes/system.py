"""``/healthz`` (no auth) and ``/metrics`` (Prometheus text format, admin keys only)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response

from api.deps import AdminDep, MemosDep
from api.responses import ERRORS, HEALTH_ERRORS
from memos import __version__
from memos.metrics import CONTENT_TYPE, Metrics
from memos.types import Health

router = APIRouter(tags=["system"])


@router.get("/healthz", response_model=Health, responses=HEALTH_ERRORS)
def healthz(memos: MemosDep) -> Health:
    """Liveness and readiness: the database answers and the index is loaded."""
    memos.counts()
    return Health(status="ok", version=__version__, database=memos.store.dialect,
                  index=memos.index.name)


#: 200 is Prometheus text; the errors are the usual JSON (so the route's default class stays
#: JSON and the handler returns its text response itself).
METRICS_RESPONSES = {200: {"description": "Prometheus text exposition format.",
                           "content": {"text/plain": {"schema": {"type": "string"}}}},
                     **ERRORS}


@router.get("/metrics", response_class=Response, responses=METRICS_RESPONSES)
def metrics(request: Request, memos: MemosDep, _admin: AdminDep) -> Response:
    """Server-wide counts of every tenant, so an admin key's (``MEMOS_ADMIN_KEYS``) only; a
    tenant's key gets 403. Open while the server has no key (it then answers only its own
    machine). The metric names are listed in :mod:`memos.metrics`."""
    state = request.app.state
    registry: Metrics = state.metrics
    counts = memos.counts()
    registry.units.set(counts["units"])
    registry.cubes.set(counts["cubes"])
    registry.uptime.set(time.time() - state.started)
    jobs, oldest = memos.jobs.depth()
    registry.set_jobs(jobs, oldest_queued_seconds=oldest)
    return Response(registry.render(), media_type=CONTENT_TYPE)
