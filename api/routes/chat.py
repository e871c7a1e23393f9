"""``/v1/tools`` (memory tool schemas for external LLMs) and ``/v1/cubes/{cube_id}/chat``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from api.deps import MemosDep, TenantDep
from memos.chat import Chat, sse_events
from memos.tools import tool_schemas
from memos.types import ChatRequest, ChatResponse

router = APIRouter(tags=["chat"])


def get_chat(request: Request, memos: MemosDep) -> Chat:
    """The app's :class:`Chat`, built on first use (it caches the bundled model).

    A test or an embedding application may set ``app.state.chat`` to its own ``Chat``.
    """
    chat: Chat | None = getattr(request.app.state, "chat", None)
    if chat is None or chat.memos is not memos:
        chat = request.app.state.chat = Chat(memos)
    return chat


ChatDep = Annotated[Chat, Depends(get_chat)]


@router.get("/v1/tools")
def tools(_tenant: TenantDep) -> dict[str, list[dict[str, Any]]]:
    """OpenAI-style function schemas of the memory tools: ``{"tools": [...]}``."""
    return {"tools": tool_schemas()}


@router.post("/v1/cubes/{cube_id}/chat", response_model=ChatResponse, responses={
    200: {"content": {"text/event-stream": {}},
          "description": "JSON, or with `stream: true` Server-Sent Events: `delta` events "
                         "with reply pieces, then one `response` event with the JSON."}})
def chat(cube_id: str, body: ChatRequest, chat: ChatDep,
         tenant: TenantDep) -> ChatResponse | StreamingResponse:
    """Answer the conversation with the cube's memory (context, citations, memory tools).

    The whole answer, tool loop included, is computed before the first byte is sent, so
    every error is a proper status code even when streaming.
    """
    response = chat.answer(cube_id, body, tenant=tenant)
    if body.stream:
        return StreamingResponse(sse_events(response), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    return response
