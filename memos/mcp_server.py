"""An MCP server (stdio) exposing the memory tools of one cube of a running memos server.

    memos mcp --cube ana [--base-url http://127.0.0.1:8000]     # or python -m memos.mcp_server

An MCP host (Claude Desktop, an IDE, an agent framework) starts this command and talks to it
over stdin/stdout. The five tools are those of :mod:`memos.tools` — same names, descriptions
and JSON schemas, same argument validation and result shapes — but every call goes through
the SDK (:class:`memos.client.MemosClient`) to the server at ``--base-url`` (``$MEMOS_URL``,
default http://127.0.0.1:8000, key from ``$MEMOS_API_KEY``), so it runs next to a
``memos serve`` without touching its database or index. The cube comes from ``--cube`` or
``$MEMOS_CUBE``.

A failed call (unknown memory, server down, bad arguments) is an MCP tool result with
``isError: true`` whose text is the ``{"error": {...}}`` JSON, never a crashed server.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from memos.client import DEFAULT_BASE_URL, MemosClient
from memos.tools import run_tool, tool_schemas
from memos.types import ContextResponse, Granularity, MemoryPublic, SearchResponse

if TYPE_CHECKING:
    import mcp_types
    from mcp.server.lowlevel import Server

__all__ = ["ClientBackend", "mcp_tools", "call_tool", "build_server", "run_mcp",
           "add_mcp_command"]

SERVER_NAME = "memos"


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
    """The MCP server for one cube, reached through ``client``."""
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

    return Server(SERVER_NAME, instructions=f"Long-term memory of memos cube {cube_id!r}: "
                  "search, add, update and delete memories; cite memory ids as [id].",
                  on_list_tools=list_tools, on_call_tool=on_call_tool)


async def serve_stdio(server: Server[Any]) -> None:
    from mcp.server.stdio import stdio_server

    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def run_mcp(base_url: str, cube_id: str) -> None:
    """Serve the memory tools of ``cube_id`` at ``base_url`` over stdio until stdin closes."""
    import anyio

    with MemosClient(base_url) as client:
        anyio.run(serve_stdio, build_server(client, cube_id))


def _cmd_mcp(args: argparse.Namespace) -> int:
    cube = args.cube or os.environ.get("MEMOS_CUBE")
    if not cube:
        raise ValueError("give the cube with --cube or $MEMOS_CUBE")
    run_mcp(args.base_url or os.environ.get("MEMOS_URL") or DEFAULT_BASE_URL, cube)
    return 0


def add_mcp_command(subparsers: Any) -> None:
    """Add ``mcp --cube C [--base-url URL]`` to an argparse subparsers object."""
    p = subparsers.add_parser("mcp", help="serve a cube's memory tools over MCP (stdio)")
    p.add_argument("--cube", default=None, help="cube id (default $MEMOS_CUBE)")
    p.add_argument("--base-url", default=None,
                   help=f"memos server (default $MEMOS_URL or {DEFAULT_BASE_URL})")
    p.set_defaults(func=_cmd_mcp)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="memos-mcp", description=__doc__.split("\n\n")[0])
    add_mcp_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["mcp", *(argv if argv is not None else sys.argv[1:])])
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
