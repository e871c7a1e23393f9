"""Streaming chat over a real HTTP server (uvicorn in a thread): the first token reaches the
client — raw HTTP, the sync SDK, the async SDK — while generation is still running.

Ordering is proved, not timed: :class:`GatedModel` yields one token, then blocks until the
test, having received that token, opens its gate. A server that buffered the answer would
never send the token first; the gate then times out and the test fails.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from memos.chat import Chat
from memos.client import AsyncMemosClient, MemosClient
from memos.errors import BackendUnavailable
from memos.llm import Completion
from memos.types import BUNDLED

GATE_TIMEOUT = 10.0
ASK = [{"role": "user", "content": "What is my dog called?"}]


@pytest.fixture
def backend() -> str:
    return "sqlite"  # streaming does not depend on the store


class GatedModel:
    """A :class:`~memos.chat.ChatModel` test double: whitespace tokens, a context limit
    like the real one, and a generation that pauses after its first token on ``gate``."""

    name = BUNDLED
    supports_tools = False
    context_length = 4096

    def __init__(self, *, fail: bool = False) -> None:
        self.gate = threading.Event()
        self.opened_in_time: bool | None = None
        self.fail = fail

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def prompt_tokens(self, messages: list[dict[str, Any]], *,
                      tools: list[dict[str, Any]] | None = None) -> int:
        return sum(self.count_tokens(m["content"]) for m in messages)

    def answer_tokens(self, max_tokens: int | None) -> int:
        return max_tokens or 16

    def complete(self, messages: list[dict[str, Any]], **kwargs: Any) -> Completion:
        *_, done = self.stream(messages, **kwargs)
        assert isinstance(done, Completion)
        return done

    def stream(self, messages: list[dict[str, Any]], *, tools: Any, max_tokens: int | None,
               temperature: float | None) -> Iterator[str | Completion]:
        prompt = self.prompt_tokens(messages)
        if prompt + self.answer_tokens(max_tokens) > self.context_length:
            raise ValueError("a fitted prompt never gets here")
        yield "Pixel"
        self.opened_in_time = self.gate.wait(GATE_TIMEOUT)
        if self.fail:
            raise BackendUnavailable("the model went away", details={"model": self.name})
        yield " is your dog."
        yield Completion(text="Pixel is your dog.", usage={
            "prompt_tokens": prompt, "completion_tokens": 4, "total_tokens": prompt + 4})


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """``app`` (its state already set up by a TestClient) on a free loopback port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning",
                                           ws="none", http="h11"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture
def served(client: TestClient) -> Iterator[tuple[str, GatedModel, str]]:
    """The app over a real socket, answering with a fresh :class:`GatedModel`."""
    app: Any = client.app
    assert client.post("/v1/cubes", json={"id": "ana"}).status_code == 201
    unit_id = client.post("/v1/cubes/ana/memories",
                          json={"text": "Ana adopted a dog named Pixel"}).json()["id"]
    model = GatedModel()
    app.state.chat = Chat(app.state.memos, bundled=lambda memory: model)
    with serving(app) as url:
        yield url, model, unit_id


def test_http_stream_sends_the_first_token_before_generation_ends(
        served: tuple[str, GatedModel, str]) -> None:
    url, model, unit_id = served
    events: list[tuple[str, Any]] = []
    with httpx.Client(base_url=url, timeout=30) as http, http.stream(
            "POST", "/v1/cubes/ana/chat", json={"messages": ASK, "stream": True}) as r:
        assert r.status_code == 200
        name = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                events.append((str(name), json.loads(line[len("data: "):])))
                if name == "delta":
                    model.gate.set()  # only now may generation finish
    assert model.opened_in_time is True
    kinds = [k for k, _ in events]
    assert kinds == ["start", "delta", "delta", "response"]
    assert events[0][1]["memory_unit_ids"] == [unit_id]  # citations come first
    assert events[1][1] == {"text": "Pixel"}
    final = events[-1][1]
    assert final["reply"] == "Pixel is your dog." and final["usage"]["total_tokens"] > 4


def test_sdk_chat_stream_is_incremental(served: tuple[str, GatedModel, str]) -> None:
    url, model, unit_id = served
    with MemosClient(url) as sdk:
        events = []
        for event in sdk.chat_stream("ana", messages=ASK):
            events.append(event)
            if event.event == "delta":
                model.gate.set()
    assert model.opened_in_time is True
    assert [e.event for e in events] == ["start", "delta", "delta", "response"]
    assert events[0].memory_unit_ids == [unit_id] and events[0].truncated is None
    final = events[-1].response
    assert final is not None and final.reply == "".join(e.text for e in events)
    assert final.usage is not None and final.usage["completion_tokens"] == 4


async def test_async_sdk_chat_stream_is_incremental(
        served: tuple[str, GatedModel, str]) -> None:
    url, model, unit_id = served
    async with AsyncMemosClient(url) as sdk:
        events = []
        async for event in sdk.chat_stream("ana", messages=ASK):
            events.append(event)
            if event.event == "delta":
                model.gate.set()
    assert model.opened_in_time is True
    assert [e.event for e in events] == ["start", "delta", "delta", "response"]
    assert events[0].memory_unit_ids == [unit_id]
    assert events[-1].response is not None and events[-1].response.usage


def test_sdk_raises_an_error_event_after_the_first_tokens(
        served: tuple[str, GatedModel, str]) -> None:
    url, model, _ = served
    model.fail = True
    seen = []
    with MemosClient(url) as sdk, pytest.raises(BackendUnavailable, match="went away"):
        for event in sdk.chat_stream("ana", messages=ASK):
            seen.append(event.event)
            model.gate.set()
    assert seen == ["start", "delta"]
