"""The SDK against the in-process app: sync and async clients, typed errors, light imports."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from fastapi.testclient import TestClient

import memos.client
from memos.client import AsyncMemosClient, MemosClient
from memos.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge
from memos.types import Granularity, Status

MESSAGES = [
    {"id": "a1", "role": "user", "speaker": "Ben", "content": "I started learning the cello."},
    {"id": "a2", "role": "user", "speaker": "Ben",
     "content": "My brother Tom works as a nurse in Leeds."},
]


def test_sync_client_covers_the_workflow(sdk: MemosClient) -> None:
    cube = sdk.create_cube("ben", name="Ben")
    assert cube.id == "ben"
    assert [c.id for c in sdk.list_cubes()] == ["ben"]
    result = sdk.add_messages("ben", session_id="s1", messages=MESSAGES)
    assert result.messages_stored == 2
    hits = sdk.search("ben", query="What instrument does Ben play?", top_k=2,
                      filters={"granularity": ["turn"]}).hits
    assert "cello" in (hits[0].unit.text or "")
    turn = hits[0].unit
    assert sdk.provenance("ben", turn.id).sources[0].message.id == "a1"
    fact = sdk.add_memory("ben", text="Ben plays the cello", granularity="fact",
                          sources=[{"message_id": "a1"}], tags=["music"])
    newer = sdk.update_memory("ben", fact.id, text="Ben plays the viola")
    assert [m.version for m in sdk.history("ben", newer.id)] == [1, 2]
    page = sdk.list_memories("ben", filters={"tags": ["music"]})
    assert [m.text for m in page.items] == ["Ben plays the viola"]
    assert page.items[0].status == Status.active
    context = sdk.context("ben", query="Ben's brother", max_tokens=64)
    assert context.unit_ids and context.unit_ids[0] in context.text
    sdk.delete_memory("ben", newer.id)
    with pytest.raises(NotFound):
        sdk.get_memory("ben", newer.id)
    assert sdk.get_cube("ben").units >= 3
    assert sdk.health().status == "ok"
    sdk.delete_cube("ben")
    with pytest.raises(NotFound):
        sdk.get_cube("ben")


def test_client_raises_the_library_errors(sdk: MemosClient) -> None:
    sdk.create_cube("x")
    with pytest.raises(Conflict):
        sdk.create_cube("x")
    with pytest.raises(NotFound) as info:
        sdk.search("missing", query="hi")
    assert info.value.details == {"cube_id": "missing"}
    with pytest.raises(InvalidInput):
        sdk.search("x", query="hi", top_k=500)
    with pytest.raises(PayloadTooLarge):
        sdk.add_memory("x", text="y" * 40_000)


async def test_async_client_shares_the_core(client: TestClient) -> None:
    app = client.app
    transport = httpx.ASGITransport(app=app)
    async with AsyncMemosClient("http://testserver", transport=transport) as sdk:
        await sdk.create_cube("async")
        await sdk.add_messages("async", session_id="s", messages=MESSAGES)
        found = await sdk.search("async", query="Who is a nurse?", top_k=1,
                                 filters={"granularity": [Granularity.turn]})
        assert "nurse" in (found.hits[0].unit.text or "")
        with pytest.raises(NotFound):
            await sdk.get_memory("async", "nope")
        page = await sdk.list_memories("async")
        assert page.total == 3  # two turns and the session unit


def test_sync_and_async_clients_expose_the_same_methods() -> None:
    public = {n for n in dir(MemosClient) if not n.startswith("_")} - {"close"}
    public_async = {n for n in dir(AsyncMemosClient) if not n.startswith("_")} - {"aclose"}
    assert public == public_async


def test_client_imports_neither_torch_nor_faiss() -> None:
    code = ("import sys, memos.client; heavy = {'torch', 'faiss', 'sqlalchemy', 'onnxruntime'}; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_exported_members() -> None:
    assert set(memos.client.__all__) == {"MemosClient", "AsyncMemosClient", "DEFAULT_BASE_URL"}
    for name in memos.client.__all__:
        assert hasattr(memos.client, name)
