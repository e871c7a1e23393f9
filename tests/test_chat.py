"""Chat over a cube: litellm (offline, ``mock_response``/``mock_tool_calls``), the tool loop,
errors, token budgets and truncation, and Server-Sent Events, through the HTTP surface.

The bundled path runs the real :class:`~memos.backbone.Backbone` and generation code over a
tiny random Llama with a byte-level BPE tokenizer (one token per byte) and a short context,
so context limits are the real ones and cost milliseconds.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from memos.chat import BundledLoader, Chat
from memos.memory import BackboneProvider
from memos.retrieval.search import estimate_tokens
from memos.tools import tool_schemas
from memos.types import ChatRequest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

# litellm's streaming chunk types build their pydantic schema lazily, on first use, and
# pydantic warns about a ReadOnly TypedDict item there; with warnings as errors, whichever
# test streams first would fail on litellm's own types.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Item 'summary' on TypedDict class 'ChatCompletionReasoningItem':UserWarning")

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
        empty = client.post("/v1/cubes/ana/chat", json=_ask("hi", memory={field: ""}))
        assert empty.status_code == 422, empty.text  # not a unit id (the fuzzer's 503)


def test_bundled_model_unavailable_is_503(client: TestClient, tmp_path: Path) -> None:
    _cube_with_dog(client)
    _use_chat(client, Recorder([]), bundled=BundledLoader(tmp_path / "no-backbone"))
    r = client.post("/v1/cubes/ana/chat",
                    json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 503
    err = r.json()["error"]
    assert err["type"] == "backend_unavailable"
    assert "backbone" in err["message"] and "memos backbone prepare" in err["message"]


def test_a_model_the_provider_refuses_is_422_with_its_message(client: TestClient) -> None:
    """An unknown model is the request's fault, not an outage (it was a 503)."""
    _cube_with_dog(client)
    _use_chat(client)  # the real litellm.completion: this model names no provider
    r = client.post("/v1/cubes/ana/chat", json=_ask("hi", model="no-such-model-xyz"))
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_input" and "no-such-model-xyz" in err["message"]
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
    seen: list[dict[str, Any]] = []

    def completion(**kwargs: Any) -> Any:
        seen.append(kwargs)
        return _litellm().completion(**kwargs, mock_response=reply)

    _use_chat(client, completion)
    with client.stream("POST", "/v1/cubes/ana/chat",
                       json=_ask("Tell me about my dog", stream=True)) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = _events(r.read().decode())
    assert seen[0]["stream"] is True  # litellm's own chunks, not a sliced answer
    kind, start = events[0]
    assert kind == "start" and start["model"] == MODEL and start["truncated"] is None
    assert start["memory_unit_ids"][0] == unit_id
    deltas = [data["text"] for kind, data in events if kind == "delta"]
    assert len(deltas) > 1 and "".join(deltas) == reply
    kind, final = events[-1]
    assert kind == "response" and final["reply"] == reply and unit_id in final["memory_unit_ids"]
    assert final["usage"]["completion_tokens"] > 0
    assert final["usage"]["total_tokens"] == (final["usage"]["prompt_tokens"]
                                              + final["usage"]["completion_tokens"])
    assert [k for k, _ in events].count("response") == 1


def _chunk(delta: dict[str, Any]) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta}]}


class StreamingRecorder:
    """Scripted streaming completions (litellm's mock streams no tool calls): a tool round
    whose call arrives as OpenAI-style deltas, its arguments split over two chunks, then
    an answer from the tool results, streamed by litellm's mock."""

    def __init__(self, calls: list[dict[str, Any]]) -> None:
        self.script = [calls]
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        if self.script and kwargs.get("tools"):
            chunks = [_chunk({"role": "assistant", "content": "Let me look."})]
            for i, call in enumerate(self.script.pop(0)):
                args = call["function"]["arguments"]
                chunks += [_chunk({"tool_calls": [{"index": i, "id": call["id"],
                                                   "function": {"name": call["function"]["name"],
                                                                "arguments": args[:5]}}]}),
                           _chunk({"tool_calls": [{"index": i,
                                                   "function": {"arguments": args[5:]}}]})]
            return iter(chunks + [{"choices": [], "usage": {
                "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}])
        results = [json.loads(m["content"]) for m in kwargs["messages"] if m["role"] == "tool"]
        texts = [f"{m['text']} [{m['id']}]" for r in results for m in r.get("memories", [])]
        return _litellm().completion(**kwargs, mock_response="From memory: " + "; ".join(texts))


def test_streamed_tool_rounds_run_before_the_streamed_answer(client: TestClient) -> None:
    unit_id = _cube_with_dog(client)
    script = StreamingRecorder([_tool_call("search_memory", {"query": "dog", "top_k": 1})])
    _use_chat(client, script)
    with client.stream("POST", "/v1/cubes/ana/chat", json=_ask(
            "What is my dog called?", stream=True, memory={"plaintext": False})) as r:
        assert r.status_code == 200
        events = _events(r.read().decode())
    assert events[0] == ("start", {"model": MODEL, "memory_unit_ids": [], "truncated": None})
    final = events[-1][1]
    assert final["tool_calls"][0]["arguments"] == {"query": "dog", "top_k": 1}  # reassembled
    assert final["memory_unit_ids"] == [unit_id]
    answer = f"From memory: {DOG} [{unit_id}]"
    assert final["reply"] == f"Let me look.\n\n{answer}"  # the text of both rounds
    assert "".join(d["text"] for k, d in events if k == "delta") == final["reply"]
    assert final["usage"]["total_tokens"] > 15  # both rounds counted
    assert all(c["stream"] for c in script.calls) and len(script.calls) == 2


def test_an_error_while_streaming_is_an_error_event(client: TestClient) -> None:
    _cube_with_dog(client)

    def broken(**kwargs: Any) -> Any:
        def chunks() -> Any:
            yield _chunk({"content": "Pix"})
            raise ConnectionError("provider hung up")
        return chunks()

    _use_chat(client, broken)
    with client.stream("POST", "/v1/cubes/ana/chat", json=_ask("dog?", stream=True)) as r:
        assert r.status_code == 200
        events = _events(r.read().decode())
    assert [k for k, _ in events] == ["start", "delta", "error"]
    err = events[-1][1]["error"]
    assert err["type"] == "backend_unavailable" and "provider hung up" in err["message"]


def test_streaming_errors_keep_their_status(client: TestClient) -> None:
    _use_chat(client, Recorder([]))
    r = client.post("/v1/cubes/nobody/chat", json=_ask("hi", stream=True))
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"
    _cube_with_dog(client)
    r = client.post("/v1/cubes/ana/chat", json=_ask("hi", stream=True,
                                                     memory={"activation": "auto"}))
    assert r.status_code == 422 and r.json()["error"]["type"] == "invalid_input"
    _use_chat(client)  # the real litellm.completion refuses the first call: 422, not an event
    r = client.post("/v1/cubes/ana/chat", json=_ask("hi", stream=True,
                                                     model="no-such-model-xyz"))
    assert r.status_code == 422 and r.json()["error"]["type"] == "invalid_input"


def test_chat_request_defaults() -> None:
    req = ChatRequest.model_validate({"messages": [{"role": "user", "content": "hi"}]})
    assert (req.model, req.stream, req.max_tool_rounds) == ("bundled", False, 4)
    assert req.memory.model_dump() == {"plaintext": True, "activation": None,
                                       "parametric": None}


# ----------------------------------------------------------------- token budgets
def tiny_backbone(max_seq_len: int = 320) -> Any:
    """The real Backbone over a random 2-layer Llama (untied head, so greedy decoding emits
    varied bytes) and a byte-level BPE without merges: one token per byte."""
    torch = pytest.importorskip("torch", reason="torch is not installed (extra: backbone)")
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    from memos.backbone.checkpoint import Backbone
    from memos.backbone.model import Llama, LlamaConfig
    from memos.backbone.moe import to_moe

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")])
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), n_layer=2, n_embd=32, n_hidden=64,
                      n_head=4, n_kv_head=2, max_seq_len=max_seq_len, tied_embeddings=False)
    ones = [torch.ones(cfg.n_hidden, dtype=torch.float64) for _ in range(cfg.n_layer)]
    config = {"variants": {"dense": {"moe": {}, "prune_frac": 0.0}}, "default_variant": "dense",
              "eos_token_id": tok.token_to_id("<|endoftext|>"), "fingerprint": "tiny-bytes"}
    return Backbone(model=to_moe(Llama(cfg).eval()), tokenizer=tok, config=config,
                    usage=ones, mass=list(ones))


def _use_tiny(client: TestClient, max_seq_len: int = 320) -> Any:
    backbone = tiny_backbone(max_seq_len)
    _use_chat(client, Recorder([]),
              bundled=BundledLoader(provider=BackboneProvider(backbone=backbone)))
    return backbone


#: 30,000 characters without a space: 1 word, so words × 1.3 counted it as 1 token.
LONG = ("Pixel" + "abcdefghij0123456789xyzXYZ!?" * 1072)[:30_000]


def _cube_with_long_message(client: TestClient) -> str:
    """A cube whose one turn is :data:`LONG`; returns the turn's unit id."""
    assert client.post("/v1/cubes", json={"id": "ana"}).status_code == 201
    r = client.post("/v1/cubes/ana/messages", json={"session_id": "s1", "messages": [
        {"role": "user", "speaker": "Ana", "content": LONG}]})
    assert r.status_code == 201, r.text
    units = client.get("/v1/cubes/ana/memories", params={"granularity": "turn"}).json()
    return str(units["items"][0]["id"])


def test_estimate_is_robust_to_text_without_spaces() -> None:
    assert len(LONG) == 30_000
    assert estimate_tokens(LONG) == 7_500  # characters / 4
    assert estimate_tokens("Ana adopted a dog named Pixel") == 8  # words × 1.3, rounded up


def test_context_counts_long_text_realistically_and_reports_the_cut(client: TestClient) -> None:
    long_id = _cube_with_long_message(client)
    r = client.post("/v1/cubes/ana/context", json={"query": "Pixel", "max_tokens": 32_000})
    body = r.json()
    assert r.status_code == 200 and body["unit_ids"] == [long_id] and body["truncated"] is None
    assert body["tokens"] >= 7_500  # no longer "29 tokens" for 30,000 characters
    r = client.post("/v1/cubes/ana/context", json={"query": "Pixel", "max_tokens": 512})
    body = r.json()
    assert 480 < body["tokens"] <= 512 and body["unit_ids"] == [long_id]
    assert body["text"].endswith(f" … [{long_id}]")
    assert body["truncated"] == {"budget": 512, "dropped_unit_ids": [],
                                 "shortened_unit_ids": [long_id],
                                 "tokens_cut": pytest.approx(7_500 - 512, abs=30)}
    dog = client.post("/v1/cubes/ana/memories", json={"text": DOG}).json()["id"]
    body = client.post("/v1/cubes/ana/context", json={"query": "Pixel the dog",
                                                      "max_tokens": 512}).json()
    cut = body["truncated"]
    assert body["tokens"] <= 512 and set(body["unit_ids"]) | set(cut["dropped_unit_ids"]) == {
        long_id, dog}  # the long line is shortened when it ranks first, else dropped
    assert long_id in cut["shortened_unit_ids"] + cut["dropped_unit_ids"]


def test_bundled_chat_fits_long_memory_into_a_small_context(client: TestClient) -> None:
    backbone = _use_tiny(client, max_seq_len=400)
    long_id = _cube_with_long_message(client)
    ask = {"messages": [{"role": "user", "content": "What is my dog called?"}],
           "max_tokens": 8}
    r = client.post("/v1/cubes/ana/chat", json=ask)
    assert r.status_code == 200, r.text  # was: ValueError "exceeds the context" → 500
    body = r.json()
    cut = body["truncated"]
    assert cut["shortened_unit_ids"] == [long_id] == body["memory_unit_ids"]
    assert 0 < cut["budget"] < 400 - 8
    assert cut["tokens_cut"] > 29_000  # bytes: counted by the backbone's own tokenizer
    usage = body["usage"]  # the bundled model reports usage too
    assert 400 - 8 - 30 < usage["prompt_tokens"] <= 400 - 8  # filled, never over
    assert 0 < usage["completion_tokens"] <= 8
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert backbone.encode(body["reply"])  # the reply was generated, not an error text


def test_a_conversation_too_long_for_the_model_is_413(client: TestClient) -> None:
    _use_tiny(client, max_seq_len=400)
    _cube_with_dog(client)
    too_long = {"messages": [{"role": "user", "content": "x" * 400}]}
    for stream in (False, True):
        r = client.post("/v1/cubes/ana/chat", json={**too_long, "stream": stream})
        assert r.status_code == 413, r.text
        err = r.json()["error"]
        assert err["type"] == "payload_too_large" and "400 tokens" in err["message"]
        assert err["details"]["prompt_tokens"] > 400
    r = client.post("/v1/cubes/ana/chat", json={
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": 500})
    assert r.status_code == 422 and "max_tokens" in r.json()["error"]["message"]


def test_litellm_context_is_budgeted_by_the_models_tokenizer(client: TestClient) -> None:
    _cube_with_long_message(client)
    seen: list[dict[str, Any]] = []

    def completion(**kwargs: Any) -> Any:
        seen.append(kwargs)
        return _litellm().completion(**kwargs, mock_response="Pixel.")

    _use_chat(client, completion)
    r = client.post("/v1/cubes/ana/chat", json=_ask("What is my dog called?",
                                                     max_tool_rounds=0))
    assert r.status_code == 200, r.text
    cut = r.json()["truncated"]
    assert cut["budget"] == 512 and len(cut["shortened_unit_ids"]) == 1
    memory = seen[0]["messages"][0]["content"].split("Memories (best first):\n", 1)[1]
    assert 400 < _litellm().token_counter(model=MODEL, text=memory) <= 512 + 2


def test_bundled_chat_streams_the_backbones_pieces(client: TestClient) -> None:
    _use_tiny(client, max_seq_len=512)
    unit_id = _cube_with_dog(client)
    ask = {"messages": [{"role": "user", "content": "dog?"}], "max_tokens": 12, "stream": True}
    with client.stream("POST", "/v1/cubes/ana/chat", json=ask) as r:
        assert r.status_code == 200
        events = _events(r.read().decode())
    kind, start = events[0]
    assert kind == "start" and start["model"] == "bundled" and unit_id in start["memory_unit_ids"]
    deltas = [d["text"] for k, d in events if k == "delta"]
    final = events[-1][1]
    assert len(deltas) > 1 and "".join(deltas) == final["reply"]
    assert final["usage"]["prompt_tokens"] > 0 and 0 < final["usage"]["completion_tokens"] <= 12
    plain = client.post("/v1/cubes/ana/chat", json={**ask, "stream": False}).json()
    assert plain["reply"] == final["reply"] and plain["usage"] == final["usage"]  # greedy
