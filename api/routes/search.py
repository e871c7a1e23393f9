"""``/v1/cubes/{cube_id}/search`` and ``/context``."""

from __future__ import annotations

import time

from fastapi import APIRouter, Response

from api.deps import ChatDep, MemosDep, TenantDep
from api.responses import ERRORS
from memos.retrieval.search import Timings
from memos.types import ContextRequest, ContextResponse, SearchRequest, SearchResponse

router = APIRouter(prefix="/v1/cubes/{cube_id}", tags=["search"], responses=ERRORS)


@router.post("/search", response_model=SearchResponse)
def search(cube_id: str, body: SearchRequest, memos: MemosDep, tenant: TenantDep) -> Response:
    """The ``top_k`` most relevant units, best first; stage timings in ``Server-Timing``.

    The stages (``db``, ``embed``, ``ann``, ``router``, ``index``, ``serialize``, and
    ``other`` for what none of them covers) add up to ``total``, this handler's time.
    """
    started = time.perf_counter()
    timings = Timings()
    result = memos.search(cube_id, body, tenant=tenant, timings=timings)
    # Serialised here, once: returning the model would make FastAPI validate the whole
    # response against ``response_model`` again (kept for the OpenAPI schema).
    t = time.perf_counter()
    payload = result.model_dump_json()
    timings.add("serialize", t)
    return Response(payload, media_type="application/json",
                    headers={"Server-Timing": server_timing(timings, started)})


def server_timing(timings: Timings, started: float) -> str:
    """``Server-Timing`` of ``timings`` plus ``other`` (the time since ``started`` that no
    stage covers) and ``total``: the stages as written sum to ``total`` (to rounding)."""
    total = (time.perf_counter() - started) * 1000
    stages = {name: round(ms, 2) for name, ms in timings.stages.items()}
    stages["other"] = max(0.0, round(total - sum(stages.values()), 2))
    stages["total"] = round(sum(stages.values()), 2)
    return ", ".join(f"{name};dur={ms:.2f}" for name, ms in stages.items())


@router.post("/context", response_model=ContextResponse)
def context(cube_id: str, body: ContextRequest, memos: MemosDep, chat: ChatDep,
            tenant: TenantDep) -> ContextResponse:
    """Prompt-ready memory within ``max_tokens``; each line cites its ``[unit id]``.

    Tokens are counted with ``model``'s tokenizer when one is named, else estimated.
    """
    if body.model is None:
        return memos.context(cube_id, body, tenant=tenant)
    memos.get_cube(cube_id, tenant=tenant)  # unknown cube: 404 before loading a model
    return memos.context(cube_id, body, tenant=tenant,
                         count_tokens=chat.token_counter(body.model))
