"""uvicorn's HTTP/1.1 protocol with ``TCP_NODELAY`` set on every connection.

asyncio sets ``TCP_NODELAY`` on accepted sockets only when their ``proto`` is
``IPPROTO_TCP``. ``uvicorn --workers N`` binds its listening socket as
``socket.socket(family)`` (``proto`` 0), so connections accepted by its worker processes
keep Nagle's algorithm on; the response head and body go out as two writes, and the body
waits for the client's delayed ACK of the head: about 40 ms added to every response. This
protocol turns Nagle off whatever the socket says, so a multi-worker server answers as fast
as a single-process one:

    uvicorn api.main:create_app --factory --workers 2 --http api.tcp:NoDelayH11Protocol
"""

from __future__ import annotations

import asyncio
import socket

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["NoDelayH11Protocol"]


class NoDelayH11Protocol(H11Protocol):
    """:class:`H11Protocol` that sets ``TCP_NODELAY`` on its TCP socket when connected."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)  # type: ignore[arg-type]
