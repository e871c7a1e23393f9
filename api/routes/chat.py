"""``/v1/tools`` (memory tool schemas for external LLMs) and ``/v1/cubes/{cube_id}/chat``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from api.deps import ChatDep, TenantDep
from api.responses import ERRORS
from memos.chat import sse_events
from memos.tools import tool_schemas
from memos.types import ChatRequest, ChatResponse

router = APIRouter(tags=["chat"], responses=ERRORS)


@router.get("/v1/tools")
def tools(_tenant: TenantDep) -> dict[str, list[dict[str, Any]]]:
    """OpenAI-style function schemas of the memory tools: ``{"tools": [...]}``."""
    return {"tools": tool_schemas()}


@router.post("/v1/cubes/{cube_id}/chat", response_model=ChatResponse, responses={
    200: {"content": {"text/event-stream": {}},
          "description": "JSON, or with `stream: true` Server-Sent Events as the model "
                         "generates: one `start` event (model, memory_unit_ids, truncated), "
                         "`delta` events with reply text, one `response` event with the "
                         "whole JSON (usage included); a later failure is an `error` event "
                         "with the `{\"error\": {...}}` body."},
    413: {"description": "The conversation alone does not fit the model's context."}})
def chat(cube_id: str, body: ChatRequest, chat: ChatDep,
         tenant: TenantDep) -> ChatResponse | StreamingResponse:
    """Answer the conversation with the cube's memory (context, citations, memory tools).

    The prompt always fits the model's context: memory is cut to fit and ``truncated`` says
    what was cut. With ``stream: true`` the tokens are sent as they are generated; every
    request error (unknown cube, bad memory options, a conversation too long for the model,
    a provider refusing the first call) is found before the first byte and keeps its status
    code, and a failure after that arrives as an ``error`` event. This handler is sync, so
    preparation runs in the thread pool; the response pulls each event from it too.
    """
    if body.stream:
        events = chat.stream(cube_id, body, tenant=tenant)
        return StreamingResponse(sse_events(events), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})
    return chat.answer(cube_id, body, tenant=tenant)
