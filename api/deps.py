"""Typed dependency aliases, so routes read like specifications.

Each getter returns an object :func:`api.main.create_app` built once, in its lifespan, and
kept on ``app.state``: nothing is built per request. A test or an embedding application may
put its own object there (``app.state.chat = Chat(...)``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from memos.chat import Chat
from memos.cube import MemCube
from memos.keys import KeyRing
from memos.memory import ModelMemory
from memos.metrics import Metrics
from memos.scheduler import Scheduler


def get_cube_service(request: Request) -> MemCube:
    return request.app.state.memos  # type: ignore[no-any-return]


def get_tenant(request: Request,
               authorization: Annotated[str | None, Header()] = None) -> str:
    keys: KeyRing = request.app.state.keys
    return keys.tenant_for(authorization)


def require_admin(request: Request,
                  authorization: Annotated[str | None, Header()] = None) -> None:
    keys: KeyRing = request.app.state.keys
    keys.require_admin(authorization)


def get_model_memory(request: Request) -> ModelMemory:
    return request.app.state.model_memory  # type: ignore[no-any-return]


def get_scheduler(request: Request) -> Scheduler:
    return request.app.state.scheduler  # type: ignore[no-any-return]


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics  # type: ignore[no-any-return]


def get_chat(request: Request) -> Chat:
    return request.app.state.chat  # type: ignore[no-any-return]


MemosDep = Annotated[MemCube, Depends(get_cube_service)]
TenantDep = Annotated[str, Depends(get_tenant)]
#: a server-wide route: an admin key (``MEMOS_ADMIN_KEYS``), or no key at all on a server
#: that has none
AdminDep = Annotated[None, Depends(require_admin)]
ModelMemoryDep = Annotated[ModelMemory, Depends(get_model_memory)]
SchedulerDep = Annotated[Scheduler, Depends(get_scheduler)]
ChatDep = Annotated[Chat, Depends(get_chat)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
