"""The SDK against the in-process app: sync and async clients, typed errors, light imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

import memos.client
from memos.chat import Chat
from memos.client import AsyncMemosClient, MemosClient
from memos.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge
from memos.jobs import Worker
from memos.types import (
    ActivationPublic,
    AdapterPublic,
    Granularity,
    Status,
    TrainingJob,
)

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


@pytest.mark.parametrize("filters, message", [
    ({"granularity": "turn"}, "filters.granularity"),      # a list, not a string
    ({"granularity": ["nope"]}, "filters.granularity.0"),
    ({"no_such_field": 1}, "filters.no_such_field"),
    (["turn"], "expected a Filters or a mapping, not list"),
])
def test_bad_filters_are_invalid_input_before_sending(sdk: MemosClient, filters: object,
                                                      message: str) -> None:
    sdk.create_cube("f")
    with pytest.raises(InvalidInput, match=message):
        sdk.search("f", query="hi", filters=filters)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match=message):
        sdk.list_memories("f", filters=filters)  # type: ignore[arg-type]


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


# --------------------------------------------------------------------------- chat, tools
def _scripted(**kwargs: Any) -> dict[str, Any]:
    """A completion (no network): repeats the memory lines of the system prompt."""
    system = kwargs["messages"][0]["content"]
    return {"choices": [{"message": {"content": system.rsplit("\n", 1)[-1]}}]}


def test_sdk_chat_and_tools(sdk: MemosClient, client: TestClient) -> None:
    app: Any = client.app
    app.state.chat = Chat(app.state.memos, completion=_scripted)
    sdk.create_cube("ben")
    fact = sdk.add_memory("ben", text="Ben plays the cello")
    out = sdk.chat("ben", messages=[{"role": "user", "content": "What does Ben play?"}],
                   model="openai/gpt-4o-mini", max_tool_rounds=0)
    assert "cello" in out.reply and out.memory_unit_ids == [fact.id]
    assert [t["function"]["name"] for t in sdk.tools()] == [
        "search_memory", "add_memory", "update_memory", "delete_memory", "get_context"]
    with pytest.raises(InvalidInput, match="user message"):  # checked before sending
        sdk.chat("ben", messages=[{"role": "system", "content": "hi"}])
    with pytest.raises(InvalidInput, match="bundled"):  # the server's answer
        sdk.chat("ben", messages=[{"role": "user", "content": "hi"}], model="openai/x",
                 memory={"activation": "auto"})


def _streamed(**kwargs: Any) -> Any:
    """A streaming completion (no network): OpenAI-style chunks, no usage reported."""
    assert kwargs["stream"] is True
    return iter([{"choices": [{"index": 0, "delta": {"content": piece}}]}
                 for piece in ("Ben plays ", "the cello.")])


def test_sdk_chat_stream(sdk: MemosClient, client: TestClient) -> None:
    app: Any = client.app
    app.state.chat = Chat(app.state.memos, completion=_streamed)
    sdk.create_cube("ben")
    fact = sdk.add_memory("ben", text="Ben plays the cello")
    events = list(sdk.chat_stream("ben", messages=[{"role": "user", "content": "Ben?"}],
                                  model="openai/gpt-4o-mini", max_tool_rounds=0))
    assert [e.event for e in events] == ["start", "delta", "delta", "response"]
    start, final = events[0], events[-1].response
    assert start.model == "openai/gpt-4o-mini" and start.memory_unit_ids == [fact.id]
    assert final is not None and final.reply == "Ben plays the cello."
    assert "".join(e.text for e in events) == final.reply
    assert final.usage is not None and final.usage["completion_tokens"] > 0  # counted
    with pytest.raises(InvalidInput, match="user message"):  # checked at the call
        sdk.chat_stream("ben", messages=[{"role": "system", "content": "hi"}])
    with pytest.raises(NotFound):  # an error status, raised when iteration starts
        next(iter(sdk.chat_stream("nobody", messages=[{"role": "user", "content": "hi"}])))


async def test_async_sdk_chat_stream(client: TestClient) -> None:
    app: Any = client.app
    app.state.chat = Chat(app.state.memos, completion=_streamed)
    transport = httpx.ASGITransport(app=app)
    async with AsyncMemosClient("http://testserver", transport=transport) as sdk:
        await sdk.create_cube("ben")
        fact = await sdk.add_memory("ben", text="Ben plays the cello")
        events = [e async for e in sdk.chat_stream(
            "ben", messages=[{"role": "user", "content": "Ben?"}], model="openai/gpt-4o-mini")]
        assert [e.event for e in events] == ["start", "delta", "delta", "response"]
        assert events[0].memory_unit_ids == [fact.id]
        assert events[-1].response is not None
        assert events[-1].response.reply == "Ben plays the cello."
        with pytest.raises(NotFound):
            async for _ in sdk.chat_stream("nobody", messages=[{"role": "user",
                                                                "content": "hi"}]):
                pass


# --------------------------------------------------------------------------- model memory
def _model_memory_app(client: TestClient, tmp_path: Path) -> Any:
    pytest.importorskip("torch", reason="torch is not installed (extra: backbone)")
    from test_activation import TinyLM, add_routes

    return add_routes(client, TinyLM(), tmp_path / "blobs")


def test_sdk_model_memory(sdk: MemosClient, client: TestClient, tmp_path: Path) -> None:
    mm = _model_memory_app(client, tmp_path)
    sdk.create_cube("c1")
    ids = [sdk.add_memory("c1", text=t, metadata={"qa": [{"question": q, "answer": a}]}).id
           for t, q, a in [("Zorvan's pet is Pickle.", "Zorvan's pet?", "Pickle"),
                           ("Okelu lives in Tartu.", "Okelu's city?", "Tartu")]]
    act = sdk.create_activation("c1", unit_ids=ids)
    assert isinstance(act, ActivationPublic) and act.source_ids == ids
    assert [a.unit.id for a in sdk.list_activations("c1")] == [act.unit.id]
    assert sdk.get_activation("c1", act.unit.id).n_tokens == act.n_tokens
    assert sdk.refresh_activations("c1").archived == []
    assert sdk.refresh_activations("c1", background=True).job_id
    with pytest.raises(InvalidInput, match="exactly one of unit_ids or query"):
        sdk.create_activation("c1")
    with pytest.raises(NotFound):
        sdk.get_activation("c1", "nope")
    # adapters: a background job to poll, or inline
    job = sdk.create_adapter("c1", unit_ids=ids, rank=2, steps=2, n_layers=1)
    assert isinstance(job, TrainingJob) and job.status == "queued"
    Worker(mm.jobs, mm.handlers()).run_pending()
    done = sdk.adapter_job("c1", job.job_id)
    assert done.status == "done" and done.unit_id
    inline = sdk.create_adapter("c1", unit_ids=ids[:1], rank=2, steps=2, n_layers=1,
                                rehearsal=0, sync=True)
    assert isinstance(inline, AdapterPublic) and inline.payload_meta["rehearsal_examples"] == 0
    assert [a.unit.id for a in sdk.list_adapters("c1")] == [inline.unit.id, done.unit_id]
    assert sdk.get_adapter("c1", done.unit_id).source_ids == ids
    with pytest.raises(InvalidInput, match="rank"):
        sdk.create_adapter("c1", unit_ids=ids, rank=0)
    # scheduler
    state = sdk.scheduler_state("c1")
    assert state.adapters == [inline.unit.id, done.unit_id] and state.hot_units == []
    assert sdk.scheduler_tick("c1", background=True).job_id
    assert sdk.scheduler_tick("c1").decisions == []


async def test_async_sdk_model_memory(client: TestClient, tmp_path: Path) -> None:
    _model_memory_app(client, tmp_path)
    transport = httpx.ASGITransport(app=client.app)
    async with AsyncMemosClient("http://testserver", transport=transport) as sdk:
        await sdk.create_cube("c1")
        unit = await sdk.add_memory("c1", text="Tom has a dog.", tags=["pinned"])
        act = await sdk.create_activation("c1", query="dog", max_tokens=200)
        assert act.source_ids == [unit.id]
        assert (await sdk.scheduler_state("c1")).hot_units == [unit.id]
        assert len(await sdk.tools()) == 5
        assert await sdk.list_adapters("c1") == []
