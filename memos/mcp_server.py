"""An MCP server exposing the memory tools of one cube of a running memos server.

    memos mcp --cube ana [--base-url http://127.0.0.1:8000]          # stdio
    memos mcp --cube ana --http 8765 [--host 127.0.0.1]              # http://127.0.0.1:8765/mcp

Over stdio (the default) an MCP host (Claude Desktop, an IDE, an agent framework) starts this
command and talks to it over stdin/stdout. With ``--http PORT`` it serves the streamable-HTTP
transport at ``http://HOST:PORT/mcp`` instead (``--host`` defaults to 127.0.0.1). With
``$MEMOS_MCP_TOKEN`` set, every HTTP request must carry ``Authorization: Bearer <token>``
(401 otherwise); on any interface other than loopback the token is required, so the cube is
never shared with the network unauthenticated.

The five tools are those of :mod:`memos.tools` — same names, descriptions and JSON schemas,
same argument validation and result shapes — but every call goes through the SDK
(:class:`memos.client.MemosClient`) to the server at ``--base-url`` (``$MEMOS_URL``, default
http://127.0.0.1:8000, key from ``$MEMOS_API_KEY``), so it runs next to a ``memos serve``
without touching its database or index. The cube comes from ``--cube`` or ``$MEMOS_CUBE``.

Before serving, the command checks that the server answers and the cube exists, and fails
with one line saying what to do if not. Once serving, a failed call (unknown memory, server
gone, bad arguments) is an MCP tool result with ``isError: true`` whose text is the
``{"error": {...}}`` JSON, never a crashed server.

The ``mcp`` package (2.x: ``mcp.server.lowlevel.Server`` and ``mcp_types``) and uvicorn are
imported only inside the functions that need them, so this module imports without them.
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from memos import __version__
from memos.client import DEFAULT_BASE_URL, MemosClient
from memos.errors import BackendUnavailable, NotFound, Unauthorized
from memos.tools import run_tool, tool_schemas
from memos.types import ContextResponse, CubePublic, Granularity, MemoryPublic, SearchResponse

if TYPE_CHECKING:
    import mcp_types
    from mcp.server.lowlevel import Server

__all__ = ["ClientBackend", "BearerTokenGuard", "mcp_tools", "call_tool", "build_server",
           "check_cube", "serve_stdio", "serve_http", "run_mcp", "add_mcp_command"]

SERVER_NAME = "memos"
DEFAULT_HOST = "127.0.0.1"
MCP_PATH = "/mcp"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: The environment variable holding the bearer token the HTTP endpoint requires.
TOKEN_ENV = "MEMOS_MCP_TOKEN"


@dataclass
class ClientBackend:
    """:class:`memos.tools.MemoryBackend` over the SDK: one cube of a running server."""

    client: MemosClient
    cube_id: str

    def search(self, *, query: str, top_k: int,
               granularity: Granularity | None) -> SearchResponse:
        filters = {"granularity": [granularity.value]} if granularity else None
        return self.client.search(self.cube_id, query=query, top_k=top_k, filters=filters)

    def add(self, *, text: str, tags: list[str]) -> MemoryPublic:
        return self.client.add_memory(self.cube_id, text=text, tags=tags, extractor="tool")

    def update(self, *, memory_id: str, text: str) -> MemoryPublic:
        return self.client.update_memory(self.cube_id, memory_id, text=text)

    def delete(self, *, memory_id: str) -> None:
        self.client.delete_memory(self.cube_id, memory_id)

    def context(self, *, query: str, max_tokens: int) -> ContextResponse:
        return self.client.context(self.cube_id, query=query, max_tokens=max_tokens)


def mcp_tools() -> list[mcp_types.Tool]:
    """The memory tools as MCP ``Tool``s (from the same schemas as ``GET /v1/tools``)."""
    import mcp_types

    return [mcp_types.Tool(name=f["name"], description=f["description"],
                           input_schema=f["parameters"])
            for f in (t["function"] for t in tool_schemas())]


def call_tool(backend: ClientBackend, name: str,
              arguments: Mapping[str, Any] | None) -> mcp_types.CallToolResult:
    """Run one tool call; the result's text (and structured content) is the tool's JSON."""
    import mcp_types

    result = run_tool(backend, name, arguments)
    return mcp_types.CallToolResult(
        content=[mcp_types.TextContent(type="text", text=json.dumps(result, default=str))],
        structured_content=result, is_error="error" in result)


def build_server(client: MemosClient, cube_id: str) -> Server[Any]:
    """The MCP server for one cube, reached through ``client``.

    Its ``serverInfo`` is ``{"name": "memos", "version": memos.__version__}``. Nothing is
    sent to the memos server until a tool is called.
    """
    import anyio.to_thread
    import mcp_types
    from mcp.server.lowlevel import Server

    backend = ClientBackend(client, cube_id)
    tools = mcp_tools()

    async def list_tools(_ctx: Any, _params: mcp_types.PaginatedRequestParams | None
                         ) -> mcp_types.ListToolsResult:
        return mcp_types.ListToolsResult(tools=tools)

    async def on_call_tool(_ctx: Any,
                           params: mcp_types.CallToolRequestParams) -> mcp_types.CallToolResult:
        # The SDK is synchronous: run it off the event loop so pings and cancellations flow.
        return await anyio.to_thread.run_sync(call_tool, backend, params.name, params.arguments)

    return Server(SERVER_NAME, version=__version__,
                  instructions=f"Long-term memory of memos cube {cube_id!r}: "
                  "search, add, update and delete memories; cite memory ids as [id].",
                  on_list_tools=list_tools, on_call_tool=on_call_tool)


def check_cube(client: MemosClient, *, cube_id: str, base_url: str) -> CubePublic:
    """The cube ``cube_id`` at ``base_url``, or a :class:`~memos.errors.MemosError` whose
    one-line message says what is wrong and what to do.

    Raises ``NotFound`` (no such cube for this key), ``BackendUnavailable`` (nothing answers
    at ``base_url``, or the server's backends are down) or ``Unauthorized`` (missing or bad
    ``$MEMOS_API_KEY``). Called before serving, so an MCP host sees the command fail at once
    instead of every tool call failing later.
    """
    try:
        return client.get_cube(cube_id)
    except NotFound:
        create = (f"python -c \"from memos.client import MemosClient; "
                  f"MemosClient('{base_url}').create_cube('{cube_id}')\"")
        raise NotFound(f"cube {cube_id!r} does not exist on {base_url}; "
                       f"create it with {create}", details={"cube_id": cube_id}) from None
    except BackendUnavailable as exc:
        raise BackendUnavailable(f"{exc.message} (the MCP server needs a running `memos serve`;"
                                 " point --base-url or $MEMOS_URL at it)") from exc
    except Unauthorized as exc:
        raise Unauthorized(f"{base_url} refused the request: {exc.message} "
                           "(set $MEMOS_API_KEY to a key of the cube's tenant)") from exc


def serve_stdio(server: Server[Any]) -> None:
    """Serve ``server`` over stdin/stdout until stdin closes."""
    import anyio
    from mcp.server.stdio import stdio_server

    async def serve() -> None:
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())

    anyio.run(serve)


class BearerTokenGuard:
    """ASGI middleware: HTTP requests without ``Authorization: Bearer <token>`` get a 401.

    The comparison is constant-time. The answer is the ``{"error": {...}}`` JSON of the REST
    API with ``WWW-Authenticate: Bearer``; lifespan and other non-HTTP scopes pass through.
    """

    def __init__(self, app: Any, *, token: str) -> None:
        if not token:
            raise ValueError("the MCP bearer token must not be empty")
        self._app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._expected):
                body = json.dumps({"error": {
                    "type": "unauthorized", "details": {},
                    "message": f"missing or wrong bearer token (the MCP endpoint wants "
                               f"'Authorization: Bearer' with the value of ${TOKEN_ENV})"}
                }).encode()
                await send({"type": "http.response.start", "status": 401, "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b"Bearer"),
                    (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self._app(scope, receive, send)


def serve_http(server: Server[Any], *, host: str, port: int, token: str | None = None) -> None:
    """Serve ``server`` over streamable HTTP at ``http://host:port/mcp`` until interrupted.

    The app is the mcp package's own (its ``StreamableHTTPSessionManager``, stateful
    sessions), which turns on DNS-rebinding protection when ``host`` is a loopback name.
    With ``token``, every request must carry it as a bearer token (:class:`BearerTokenGuard`).
    """
    import uvicorn

    app: Any = server.streamable_http_app(streamable_http_path=MCP_PATH, host=host)
    if token:
        app = BearerTokenGuard(app, token=token)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def run_mcp(*, base_url: str, cube_id: str, port: int | None = None,
            host: str = DEFAULT_HOST, token: str | None = None) -> None:
    """Check the cube, then serve its memory tools over stdio, or over HTTP when ``port``
    (requiring ``token`` as a bearer token when given).

    Raises ``ValueError`` when ``host`` is not loopback and there is no ``token``, and the
    :func:`check_cube` errors, before serving anything.

        run_mcp(base_url="http://127.0.0.1:8000", cube_id="ana")              # stdio
        run_mcp(base_url="http://127.0.0.1:8000", cube_id="ana", port=8765)   # HTTP
    """
    if port is not None and host not in _LOOPBACK and not token:
        raise ValueError(f"--host {host} shares cube {cube_id!r} with the network: set "
                         f"${TOKEN_ENV} to a secret the MCP clients send as "
                         "'Authorization: Bearer <token>'")
    with MemosClient(base_url) as client:
        check_cube(client, cube_id=cube_id, base_url=base_url)
        server = build_server(client, cube_id)
        if port is None:
            serve_stdio(server)
            return
        # stdout is not the protocol channel here, but stderr keeps both modes alike.
        shown = f"[{host}]" if ":" in host else host
        auth = f" (bearer token from ${TOKEN_ENV})" if token else " (no token: loopback only)"
        print(f"memos: MCP for cube {cube_id!r} of {base_url} at "
              f"http://{shown}:{port}{MCP_PATH}{auth}", file=sys.stderr, flush=True)
        serve_http(server, host=host, port=port, token=token)


def _cmd_mcp(args: argparse.Namespace) -> int:
    cube = args.cube or os.environ.get("MEMOS_CUBE")
    if not cube:
        raise ValueError("give the cube with --cube or $MEMOS_CUBE")
    if args.host is not None and args.http is None:
        raise ValueError("--host applies only with --http PORT")
    if args.http is not None and not 0 < args.http < 65536:
        raise ValueError(f"--http needs a TCP port (1-65535), not {args.http}")
    run_mcp(base_url=args.base_url or os.environ.get("MEMOS_URL") or DEFAULT_BASE_URL,
            cube_id=cube, port=args.http, host=args.host or DEFAULT_HOST,
            token=os.environ.get(TOKEN_ENV) or None)
    return 0


def add_mcp_command(subparsers: Any) -> None:
    """Add ``mcp --cube C [--base-url URL] [--http PORT [--host H]]`` to a subparsers object."""
    p = subparsers.add_parser(
        "mcp", help="serve a cube's memory tools over MCP (stdio, or streamable HTTP)",
        description="Serve the memory tools of one cube of a running memos server over MCP: "
                    "over stdio (for hosts that start the command), or over streamable HTTP "
                    f"at http://HOST:PORT{MCP_PATH} with --http.")
    p.add_argument("--cube", default=None, help="cube id (default $MEMOS_CUBE); must exist")
    p.add_argument("--base-url", default=None,
                   help=f"memos server (default $MEMOS_URL or {DEFAULT_BASE_URL}); "
                        "API key from $MEMOS_API_KEY")
    p.add_argument("--http", type=int, default=None, metavar="PORT",
                   help=f"serve streamable HTTP at http://HOST:PORT{MCP_PATH} instead of stdio")
    p.add_argument("--host", default=None,
                   help=f"interface to bind with --http (default {DEFAULT_HOST}; any other "
                        f"needs ${TOKEN_ENV}, the bearer token clients must send)")
    p.set_defaults(func=_cmd_mcp)
