"""Typed dependency aliases, so routes read like specifications."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from memos.cube import MemCube
from memos.keys import KeyRing


def get_cube_service(request: Request) -> MemCube:
    return request.app.state.memos  # type: ignore[no-any-return]


def get_tenant(request: Request,
               authorization: Annotated[str | None, Header()] = None) -> str:
    keys: KeyRing = request.app.state.keys
    return keys.tenant_for(authorization)


MemosDep = Annotated[MemCube, Depends(get_cube_service)]
TenantDep = Annotated[str, Depends(get_tenant)]
