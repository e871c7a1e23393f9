"""The no-keys guard: a server without API keys answers only clients on its own machine.

Applied by :func:`api.main.create_app` itself, so it holds however the app is started
(``memos serve``, ``uvicorn api.main:create_app --factory --host 0.0.0.0``, a process
manager): while no API key exists, a request whose peer is a network address outside
loopback (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104) gets 403 with the way out in the message.

A peer that is not an IP address — ``None`` for a unix socket, ``"testclient"`` for an
in-process ASGI caller — has no network behind it: it is this machine (a socket file's
permissions decide who connects) or this process, so it is served. A reverse proxy on the
same machine shows up as loopback unless it forwards the client address; uvicorn applies
``X-Forwarded-For`` from 127.0.0.1 by default, so the real remote address is checked.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from fastapi.responses import JSONResponse

from memos.errors import Forbidden
from memos.keys import KeyRing

NO_KEYS_MESSAGE = (
    "this memos server has no API keys, so it only answers requests from its own machine; "
    "create a key with `memos keys create --tenant NAME` or set MEMOS_API_KEYS, then send "
    "it as 'Authorization: Bearer <key>'")


def is_remote(host: str | None) -> bool:
    """Whether ``host`` (an ASGI client host) is a network peer outside loopback.

    >>> is_remote("127.0.0.5"), is_remote("::ffff:127.0.0.1"), is_remote("10.0.0.2")
    (False, False, True)
    """
    if host is None:
        return False
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_loopback


class LocalOnlyGuard:
    """ASGI middleware: refuse remote clients while the app's key ring has no key."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            client = scope.get("client")
            keys: KeyRing = scope["app"].state.keys
            if is_remote(client[0] if client else None) and not keys.auth_enabled():
                error = Forbidden(NO_KEYS_MESSAGE, details={"client": client[0]})
                response = JSONResponse(error.to_dict(), status_code=error.status_code)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
