"""Typed dependency aliases, so routes read like specifications."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from memos.chat import Chat
from memos.cube import MemCube
from memos.keys import KeyRing
from memos.memory import ModelMemory


def get_cube_service(request: Request) -> MemCube:
    return request.app.state.memos  # type: ignore[no-any-return]


def get_tenant(request: Request,
               authorization: Annotated[str | None, Header()] = None) -> str:
    keys: KeyRing = request.app.state.keys
    return keys.tenant_for(authorization)


MemosDep = Annotated[MemCube, Depends(get_cube_service)]
TenantDep = Annotated[str, Depends(get_tenant)]


def get_model_memory(request: Request, memos: MemosDep) -> ModelMemory:
    """``app.state.model_memory`` (set in the lifespan), else one built on first use over
    the chat's bundled-model loader, so chat and the model-memory routes share one backbone."""
    mm: ModelMemory | None = getattr(request.app.state, "model_memory", None)
    if mm is None or mm.cube is not memos:
        chat = getattr(request.app.state, "chat", None)
        loader = getattr(chat, "bundled", None)
        mm = ModelMemory.for_loader(memos, loader)
        request.app.state.model_memory = mm
    return mm


ModelMemoryDep = Annotated[ModelMemory, Depends(get_model_memory)]


def get_chat(request: Request, memos: MemosDep) -> Chat:
    """The app's :class:`Chat`, built on first use (it caches the bundled model).

    A test or an embedding application may set ``app.state.chat`` to its own ``Chat``.
    """
    chat: Chat | None = getattr(request.app.state, "chat", None)
    if chat is None or chat.memos is not memos:
        chat = request.app.state.chat = Chat(memos)
    return chat


ChatDep = Annotated[Chat, Depends(get_chat)]
