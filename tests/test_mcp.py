"""The MCP server (``memos mcp``): tools over the SDK, stdio and streamable HTTP, and the
checks that make the command fail before serving.

The memos server here is real: the API app over SQLite + FAISS and the MiniLM embedder,
served by uvicorn on a loopback port in a thread, so the command (a subprocess, as an MCP
host would start it) reaches it over HTTP exactly as it would reach ``memos serve``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from conftest import build_service

from api.main import create_app
from memos import __version__
from memos.cli import main
from memos.client import MemosClient
from memos.config import Settings
from memos.embed import OnnxMiniLM
from memos.local_server import free_port
from memos.mcp_server import ClientBackend, build_server, call_tool, mcp_tools
from memos.tools import tool_schemas

NAMES = ["search_memory", "add_memory", "update_memory", "delete_memory", "get_context"]


# ----------------------------------------------------------------- a real memos server
@pytest.fixture
def memos_url(tmp_path: Path, embedder: OnnxMiniLM, settings: Settings) -> Iterator[str]:
    """Base URL of the API app (SQLite + FAISS) served by uvicorn on a free loopback port."""
    service = build_service("sqlite", tmp_path, embedder, None)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(settings, service=service),
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "memos API did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        service.store.dispose()


def _child_env() -> dict[str, str]:
    # The command must see only what the test gives it: no key, cube or URL from the shell.
    return {k: v for k, v in os.environ.items() if not k.startswith("MEMOS_")}


# ----------------------------------------------------------------- tools over the SDK
def test_mcp_tools_share_the_schemas() -> None:
    tools = mcp_tools()
    assert [t.name for t in tools] == NAMES
    assert [t.input_schema for t in tools] == [t["function"]["parameters"]
                                               for t in tool_schemas()]


def test_mcp_call_tool_goes_through_the_sdk(sdk: MemosClient) -> None:
    sdk.create_cube("m")
    backend = ClientBackend(sdk, "m")
    added = call_tool(backend, "add_memory", {"text": "Ben plays the cello"})
    assert added.is_error is False
    unit_id = added.structured_content["memory"]["id"]  # type: ignore[index]
    assert sdk.get_memory("m", unit_id).extractor == "tool"
    found = call_tool(backend, "search_memory", {"query": "Which instrument does Ben play?"})
    assert json.loads(found.content[0].text)["memories"][0]["id"] == unit_id  # type: ignore[union-attr]
    ctx = call_tool(backend, "get_context", {"query": "instrument"})
    assert unit_id in ctx.structured_content["unit_ids"]  # type: ignore[index]
    new = call_tool(backend, "update_memory", {"memory_id": unit_id, "text": "Ben plays viola"})
    new_id = new.structured_content["memory"]["id"]  # type: ignore[index]
    assert [m.version for m in sdk.history("m", new_id)] == [1, 2]
    assert call_tool(backend, "delete_memory", {"memory_id": new_id}).is_error is False
    missing = call_tool(backend, "delete_memory", {"memory_id": new_id})
    assert missing.is_error is True
    assert missing.structured_content["error"]["type"] == "not_found"  # type: ignore[index]


async def test_mcp_server_in_process(sdk: MemosClient) -> None:
    from mcp import Client

    sdk.create_cube("m")
    async with Client(build_server(sdk, "m")) as mcp:
        assert mcp.server_info is not None
        assert (mcp.server_info.name, mcp.server_info.version) == ("memos", __version__)
        listed = await mcp.list_tools()
        assert [t.name for t in listed.tools] == NAMES
        added = await mcp.call_tool("add_memory", {"text": "Cleo lives in Lisbon"})
        assert not added.is_error
        found = await mcp.call_tool("search_memory", {"query": "Where does Cleo live?"})
        assert found.structured_content["memories"][0]["text"] == "Cleo lives in Lisbon"
        bad = await mcp.call_tool("search_memory", {"top_k": 2})
        assert bad.is_error and "query" in bad.structured_content["error"]["message"]


async def test_a_server_gone_while_serving_is_a_tool_error() -> None:
    """The startup check passed, then memos went away: calls fail, the MCP server does not."""
    from mcp import Client

    with MemosClient(f"http://127.0.0.1:{free_port()}", timeout=2) as gone:
        async with Client(build_server(gone, "c")) as mcp:
            result = await mcp.call_tool("search_memory", {"query": "anything"})
            assert result.is_error
            assert result.structured_content["error"]["type"] == "backend_unavailable"
            assert [t.name for t in (await mcp.list_tools()).tools] == NAMES


# ----------------------------------------------------------------- the command's transports
async def test_mcp_server_over_stdio(memos_url: str) -> None:
    """One real round trip: spawn the command as a host would, list tools, call two."""
    from mcp import Client, StdioServerParameters, stdio_client

    with MemosClient(memos_url) as sdk:
        sdk.create_cube("c")
    params = StdioServerParameters(command=sys.executable, env=_child_env(), args=[
        "-m", "memos.cli", "mcp", "--cube", "c", "--base-url", memos_url])
    # stdio_client(params) rather than Client(params): the same on every mcp 2.x.
    async with Client(stdio_client(params), read_timeout_seconds=30) as mcp:
        assert mcp.server_info is not None and mcp.server_info.version == __version__
        listed = await mcp.list_tools()
        assert [t.name for t in listed.tools] == NAMES
        added = await mcp.call_tool("add_memory", {"text": "Dara keeps three hens"})
        assert not added.is_error
        found = await mcp.call_tool("search_memory", {"query": "Which animals does Dara keep?"})
        assert [m["text"] for m in found.structured_content["memories"]] == [
            "Dara keeps three hens"]


@contextlib.contextmanager
def _serve_mcp_http(memos_url: str, tmp_path: Path, cube: str,
                    env: dict[str, str]) -> Iterator[str]:
    """``memos mcp --cube CUBE --http PORT`` as a subprocess; yields its MCP endpoint URL."""
    with MemosClient(memos_url) as sdk:
        sdk.create_cube(cube)
    port = free_port()
    log_path = tmp_path / f"mcp-{cube}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "memos.cli", "mcp", "--cube", cube, "--base-url", memos_url,
             "--http", str(port)], env=env, stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url, timeout=2)  # any answer (400/401/406 without a session) = serving
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"memos mcp --http did not start:\n{log_path.read_text()}")
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert f"at {url}" in log_path.read_text()  # the command says where it serves


@pytest.fixture
def mcp_http_url(memos_url: str, tmp_path: Path) -> Iterator[str]:
    """The MCP endpoint of ``memos mcp --cube m --http PORT`` without a token."""
    with _serve_mcp_http(memos_url, tmp_path, "m", _child_env()) as url:
        yield url


async def test_mcp_server_over_streamable_http(mcp_http_url: str, memos_url: str) -> None:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with (streamable_http_client(mcp_http_url) as (read_stream, write_stream),
                ClientSession(read_stream, write_stream) as session):
        init = await session.initialize()
        assert (init.server_info.name, init.server_info.version) == ("memos", __version__)
        assert init.capabilities.tools is not None
        listed = await session.list_tools()
        assert [t.name for t in listed.tools] == NAMES
        added = await session.call_tool("add_memory", {"text": "Emil repairs old bicycles",
                                                       "tags": ["hobby"]})
        assert not added.is_error
        unit_id = added.structured_content["memory"]["id"]  # type: ignore[index]
        found = await session.call_tool("search_memory",
                                        {"query": "What does Emil repair?", "top_k": 3})
        assert not found.is_error
        memories = json.loads(found.content[0].text)["memories"]  # type: ignore[union-attr]
        assert [(m["id"], m["text"]) for m in memories] == [
            (unit_id, "Emil repairs old bicycles")]
    with MemosClient(memos_url) as sdk:  # it went through the server, into the cube
        stored = sdk.get_memory("m", unit_id)
        assert (stored.extractor, stored.tags) == ("tool", ["hobby"])


def test_http_endpoint_refuses_foreign_hosts(mcp_http_url: str) -> None:
    """Bound to loopback, the endpoint rejects a rebound DNS name (no session is made)."""
    r = httpx.post(mcp_http_url, headers={"Host": "evil.example:80",
                                          "Accept": "application/json, text/event-stream"},
                   json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, timeout=5)
    assert r.status_code == 421 and "mcp-session-id" not in r.headers  # Misdirected Request


async def test_http_endpoint_with_a_token_wants_it(memos_url: str, tmp_path: Path) -> None:
    """With $MEMOS_MCP_TOKEN, a request without (or with a wrong) bearer token is a 401 with
    the REST API's error JSON; an MCP client that sends it gets a working session."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    env = {**_child_env(), "MEMOS_MCP_TOKEN": "s3cret-token"}
    with _serve_mcp_http(memos_url, tmp_path, "t", env) as url:
        ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        accept = {"Accept": "application/json, text/event-stream"}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
            r = httpx.post(url, headers={**accept, **headers}, json=ping, timeout=5)
            assert r.status_code == 401, headers
            assert r.headers["www-authenticate"] == "Bearer"
            assert r.json()["error"]["type"] == "unauthorized"
            assert "MEMOS_MCP_TOKEN" in r.json()["error"]["message"]
        async with (create_mcp_http_client(headers={"Authorization": "Bearer s3cret-token"})
                    as http,
                    streamable_http_client(url, http_client=http) as (read_stream, write_stream),
                    ClientSession(read_stream, write_stream) as session):
            await session.initialize()
            added = await session.call_tool("add_memory", {"text": "Fen keeps bees"})
            assert not added.is_error
    with MemosClient(memos_url) as sdk:
        assert [m.text for m in sdk.list_memories("t").items] == ["Fen keeps bees"]


def test_other_interfaces_need_a_token(memos_url: str, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Binding beyond loopback without $MEMOS_MCP_TOKEN fails before serving, saying why."""
    monkeypatch.delenv("MEMOS_MCP_TOKEN", raising=False)
    assert main(["mcp", "--cube", "c", "--base-url", memos_url, "--http", str(free_port()),
                 "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "$MEMOS_MCP_TOKEN" in err and "Bearer" in err


# ----------------------------------------------------------------- failing before serving
def test_unknown_cube_fails_with_one_line(memos_url: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["mcp", "--cube", "nosuch", "--base-url", memos_url]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith(f"memos: cube 'nosuch' does not exist on {memos_url}; ")
    assert f"MemosClient('{memos_url}').create_cube('nosuch')" in captured.err


def test_unreachable_server_fails_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["mcp", "--cube", "c", "--base-url", url, "--http", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"memos: cannot reach memos at {url}")
    assert "memos serve" in err and "--base-url" in err


@pytest.mark.parametrize("argv, message", [
    (["--base-url", "http://127.0.0.1:9"], "--cube or $MEMOS_CUBE"),
    (["--cube", "c", "--host", "0.0.0.0"], "--host applies only with --http"),
    (["--cube", "c", "--http", "0"], "--http needs a TCP port"),
])
def test_bad_options_fail_before_connecting(argv: list[str], message: str,
                                            capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEMOS_CUBE", raising=False)
    assert main(["mcp", *argv]) == 2
    assert message in capsys.readouterr().err


def test_every_option_has_help() -> None:
    from memos.cli import build_parser

    parser = build_parser()
    mcp = parser._subparsers._group_actions[0].choices["mcp"]  # type: ignore[union-attr]
    options = [a for a in mcp._actions if a.dest != "help"]
    assert {a.dest for a in options} == {"cube", "base_url", "http", "host"}
    assert "MEMOS_MCP_TOKEN" in next(a.help for a in options if a.dest == "host")
    assert all(a.help for a in options)


def test_module_imports_without_starting_anything() -> None:
    """``memos --help`` stays fast: importing the module pulls in neither mcp nor uvicorn."""
    code = ("import sys, memos.mcp_server, memos.cli; memos.cli.build_parser(); "
            "print(sorted(m for m in ('mcp', 'mcp_types', 'uvicorn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=_child_env())
    assert out.stdout.strip() == "[]"

