"""``api.tcp.NoDelayH11Protocol``: Nagle off on connections of a socket bound the way
``uvicorn --workers N`` binds it (``proto`` 0, where asyncio leaves Nagle on)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from api.tcp import NoDelayH11Protocol


async def _ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@contextmanager
def _server(protocol: type[H11Protocol]) -> Iterator[tuple[uvicorn.Server, str]]:
    sock = socket.socket(family=socket.AF_INET)  # as uvicorn's Config.bind_socket does
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(_ok, http=protocol, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield server, f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.mark.parametrize(("protocol", "nodelay"), [(H11Protocol, 0), (NoDelayH11Protocol, 1)])
def test_connections_of_a_proto_0_socket(protocol: type[H11Protocol], nodelay: int) -> None:
    """uvicorn's own protocol leaves Nagle on there (the bug); ours turns it off."""
    with _server(protocol) as (server, url), httpx.Client(base_url=url) as client:
        assert client.get("/").text == "ok"
        (conn,) = server.server_state.connections
        sock = conn.transport.get_extra_info("socket")  # type: ignore[attr-defined]
        assert bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)) == bool(nodelay)
