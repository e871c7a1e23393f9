"""``/v1/cubes/{cube_id}/search`` and ``/context``."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import ChatDep, MemosDep, TenantDep
from api.responses import ERRORS
from memos.retrieval.search import Timings
from memos.types import ContextRequest, ContextResponse, SearchRequest, SearchResponse

router = APIRouter(prefix="/v1/cubes/{cube_id}", tags=["search"], responses=ERRORS)


@router.post("/search", response_model=SearchResponse)
def search(cube_id: str, body: SearchRequest, memos: MemosDep, tenant: TenantDep) -> Response:
    """The ``top_k`` most relevant units, best first; stage timings in ``Server-Timing``."""
    timings = Timings()
    result = memos.search(cube_id, body, tenant=tenant, timings=timings)
    # Serialised here, once: returning the model would make FastAPI validate the whole
    # response against ``response_model`` again (kept for the OpenAPI schema).
    return Response(result.model_dump_json(), media_type="application/json", headers={
        "Server-Timing": ", ".join(f"{name};dur={ms:.2f}"
                                   for name, ms in timings.stages.items())})


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
