"""Chat over a cube: litellm (offline, ``mock_response``/``mock_tool_calls``), the tool loop,
errors and Server-Sent Events, through the HTTP surface."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from memos.chat import BundledLoader, Chat
from memos.tools import tool_schemas
from memos.types import ChatRequest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

MODEL = "openai/gpt-4o-mini"
DOG = "Ana adopted a dog named Pixel"


def _litellm() -> Any:
    import litellm

    return litellm


@pytest.fixture
def client(client: TestClient) -> TestClient:
    """The conftest client, with the chat routes mounted if ``create_app`` lacks them."""
    from api.routes import chat

    app: Any = client.app
    if not any(getattr(r, "path", None) == "/v1/tools" for r in app.routes):
        app.include_router(chat.router)
    return client


def _use_chat(client: TestClient, completion: Callable[..., Any] | None = None,
              **kwargs: Any) -> None:
    """Give the app a Chat with an injected completion function (no network)."""
    app: Any = client.app
    app.state.chat = Chat(app.state.memos, completion=completion, **kwargs)


def _cube_with_dog(client: TestClient) -> str:
    assert client.post("/v1/cubes", json={"id": "ana"}).status_code == 201
    r = client.post("/v1/cubes/ana/memories", json={"text": DOG})
    client.post("/v1/cubes/ana/memories", json={"text": "Ana works as a nurse in Berlin"})
    return str(r.json()["id"])


def _ask(question: str, **body: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": question}], **body}


class Recorder:
    """Scripted completions through real litellm: tool calls first, then an answer built
    from the tool results in the conversation."""

    def __init__(self, tool_calls: list[list[dict[str, Any]]]) -> None:
        self.script = list(tool_calls)
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        if self.script and kwargs.get("tools"):
            return _litellm().completion(**kwargs, mock_response="",
                                         mock_tool_calls=self.script.pop(0))
        results = [json.loads(m["content"]) for m in kwargs["messages"] if m["role"] == "tool"]
        texts = [f"{m['text']} [{m['id']}]" for r in results for m in r.get("memories", [])]
        return _litellm().completion(**kwargs, mock_response="From memory: " + "; ".join(texts))


def _tool_call(name: str, arguments: dict[str, Any], call_id: str = "call_1") -> dict[str, Any]:
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)}}


# ----------------------------------------------------------------- routes
def test_tools_route_lists_the_schemas(client: TestClient) -> None:
    r = client.get("/v1/tools")
    assert r.status_code == 200
    assert r.json() == {"tools": tool_schemas()}


def test_chat_with_mock_response_cites_context(client: TestClient) -> None:
    unit_id = _cube_with_dog(client)
    seen: list[dict[str, Any]] = []

    def completion(**kwargs: Any) -> Any:
        seen.append(kwargs)
        return _litellm().completion(**kwargs, mock_response=f"Your dog is Pixel [{unit_id}].")

    _use_chat(client, completion)
    r = client.post("/v1/cubes/ana/chat", json=_ask("What is my dog called?"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["reply"] == f"Your dog is Pixel [{unit_id}]."
    assert body["model"] == MODEL and body["tool_calls"] == []
    assert body["memory_unit_ids"][0] == unit_id
    assert body["usage"]["total_tokens"] > 0
    system = seen[0]["messages"][0]
    assert system["role"] == "system" and f"{DOG} [{unit_id}]" in system["content"]
    assert [t["function"]["name"] for t in seen[0]["tools"]] == [
        t["function"]["name"] for t in tool_schemas()]
    assert seen[0]["messages"][-1] == {"role": "user", "content": "What is my dog called?"}


def test_chat_runs_tool_calls_against_the_cube(client: TestClient) -> None:
    unit_id = _cube_with_dog(client)
    script = Recorder([[_tool_call("search_memory", {"query": "dog name", "top_k": 1})]])
    _use_chat(client, script)
    r = client.post("/v1/cubes/ana/chat", json=_ask("What is my dog called?",
                                                     memory={"plaintext": False},
                                                     temperature=0.2, max_tokens=50))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["reply"] == f"From memory: {DOG} [{unit_id}]"
    assert body["memory_unit_ids"] == [unit_id]  # from the tool alone: no prompt context
    [call] = body["tool_calls"]
    assert call["name"] == "search_memory"
    assert call["arguments"] == {"query": "dog name", "top_k": 1}
    assert call["result"]["memories"][0]["id"] == unit_id
    first, second = script.calls
    assert "Memories" not in first["messages"][0]["content"]
    assert first["temperature"] == 0.2 and first["max_tokens"] == 50
    assistant, tool = second["messages"][-2:]
    assert assistant["tool_calls"][0]["function"]["name"] == "search_memory"
    assert tool["role"] == "tool" and tool["tool_call_id"] == "call_1"
    one = _litellm().completion(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                mock_response="x").usage
    assert body["usage"]["total_tokens"] == 2 * one.total_tokens  # summed over both rounds


def test_chat_tool_writes_and_bad_calls_do_not_break_the_loop(client: TestClient) -> None:
    _cube_with_dog(client)
    script = Recorder([[_tool_call("add_memory", {"text": "Ana's dog turned three"}, "a"),
                        _tool_call("fly_to_moon", {}, "b"),
                        {"id": "c", "type": "function",
                         "function": {"name": "search_memory", "arguments": "{oops"}}]])
    _use_chat(client, script)
    body = client.post("/v1/cubes/ana/chat", json=_ask("My dog turned three!")).json()
    added, unknown, broken = body["tool_calls"]
    new_id = added["result"]["memory"]["id"]
    assert client.get(f"/v1/cubes/ana/memories/{new_id}").json()["text"] == \
        "Ana's dog turned three"
    assert new_id in body["memory_unit_ids"]
    assert unknown["result"]["error"]["type"] == "invalid_input"
    assert broken["arguments"] == "{oops" and "error" in broken["result"]
    assert body["reply"].startswith("From memory")


def test_tool_rounds_are_capped(client: TestClient) -> None:
    _cube_with_dog(client)
    calls = [[_tool_call("search_memory", {"query": f"q{i}"}, f"c{i}")] for i in range(10)]
    script = Recorder(calls)
    _use_chat(client, script)
    body = client.post("/v1/cubes/ana/chat", json=_ask("dog?", max_tool_rounds=2)).json()
    assert len(body["tool_calls"]) == 2
    assert [bool(c.get("tools")) for c in script.calls] == [True, True, False]
    script = Recorder(calls)
    _use_chat(client, script)
    body = client.post("/v1/cubes/ana/chat", json=_ask("dog?", max_tool_rounds=0)).json()
    assert body["tool_calls"] == [] and "tools" not in script.calls[0]


# ----------------------------------------------------------------- errors
def test_activation_or_parametric_with_litellm_is_invalid(client: TestClient) -> None:
    _cube_with_dog(client)
    _use_chat(client, Recorder([]))
    for field in ("activation", "parametric"):
        r = client.post("/v1/cubes/ana/chat", json=_ask("hi", memory={field: "auto"}))
        assert r.status_code == 422
        assert r.json()["error"]["type"] == "invalid_input"
        assert f"memory.{field}" in r.json()["error"]["message"]


def test_bundled_model_unavailable_is_503(client: TestClient, tmp_path: Path) -> None:
    _cube_with_dog(client)
    _use_chat(client, Recorder([]), bundled=BundledLoader(tmp_path / "no-backbone"))
    r = client.post("/v1/cubes/ana/chat",
                    json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 503
    err = r.json()["error"]
    assert err["type"] == "backend_unavailable"
    assert "backbone" in err["message"] and "memos backbone prepare" in err["message"]


def test_provider_error_is_503_with_its_message(client: TestClient) -> None:
    _cube_with_dog(client)
    _use_chat(client)  # the real litellm.completion: this model names no provider
    r = client.post("/v1/cubes/ana/chat", json=_ask("hi", model="no-such-model-xyz"))
    assert r.status_code == 503
    err = r.json()["error"]
    assert err["type"] == "backend_unavailable" and "no-such-model-xyz" in err["message"]
    assert "Provider" in err["message"]  # litellm's own explanation is passed through


@pytest.mark.parametrize("body, status", [
    ({"model": MODEL, "messages": [{"role": "assistant", "content": "hello"}]}, 422),
    ({"model": MODEL, "messages": []}, 422),
    ({"model": MODEL, "messages": [{"role": "tool", "content": "x"}]}, 422),
    (_ask("hi", max_tool_rounds=99), 422),
    (_ask("hi", bogus=True), 422),
])
def test_bad_chat_requests(client: TestClient, body: dict[str, Any], status: int) -> None:
    _cube_with_dog(client)
    _use_chat(client, Recorder([]))
    r = client.post("/v1/cubes/ana/chat", json=body)
    assert r.status_code == status and r.json()["error"]["type"] == "invalid_input"


def test_unknown_cube_is_404(client: TestClient) -> None:
    _use_chat(client, Recorder([]))
    r = client.post("/v1/cubes/nobody/chat", json=_ask("hi"))
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"


# ----------------------------------------------------------------- streaming
def _events(text: str) -> list[tuple[str, Any]]:
    out = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((fields["event"], json.loads(fields["data"])))
    return out


def test_chat_streams_server_sent_events(client: TestClient) -> None:
    unit_id = _cube_with_dog(client)
    reply = f"Your dog is called Pixel, and he loves long walks by the canal [{unit_id}]."
    _use_chat(client, lambda **kw: _litellm().completion(**kw, mock_response=reply))
    with client.stream("POST", "/v1/cubes/ana/chat",
                       json=_ask("Tell me about my dog", stream=True)) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = _events(r.read().decode())
    deltas = [data["text"] for kind, data in events if kind == "delta"]
    assert len(deltas) > 1 and "".join(deltas) == reply
    kind, final = events[-1]
    assert kind == "response" and final["reply"] == reply and unit_id in final["memory_unit_ids"]
    assert [k for k, _ in events].count("response") == 1


def test_streaming_errors_keep_their_status(client: TestClient) -> None:
    _use_chat(client, Recorder([]))
    r = client.post("/v1/cubes/nobody/chat", json=_ask("hi", stream=True))
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"


def test_chat_request_defaults() -> None:
    req = ChatRequest.model_validate({"messages": [{"role": "user", "content": "hi"}]})
    assert (req.model, req.stream, req.max_tool_rounds) == ("bundled", False, 4)
    assert req.memory.model_dump() == {"plaintext": True, "activation": None,
                                       "parametric": None}
