"""Answering with memory: a chat turn over a cube, by a litellm model or the bundled backbone.

    Chat(memos, completion=litellm.completion, bundled=BundledLoader())
        .answer(cube_id, ChatRequest, tenant=...)  → ChatResponse
    sse_events(ChatResponse)                        → Server-Sent Events, reply chunks + final

For a litellm model (any ``model`` but ``"bundled"``): the plaintext memory retrieved for
the last user message (:meth:`MemCube.context`) goes into the system prompt, each line
citing its ``[unit id]``; the memory tools of :mod:`memos.tools` are offered, and the tool
calls the model makes are executed against the cube, up to ``max_tool_rounds`` rounds,
before its final text is returned. ``memory_unit_ids`` lists every unit the model was
shown: the prompt's context and every tool result.

For ``"bundled"`` the model is the bundled MoE backbone (:mod:`memos.backbone`), behind the
small :class:`ChatModel` protocol; it gets the same plaintext context but no tools, and
can use memory inside the model (:mod:`memos.memory`): ``memory.activation`` (a unit id or
``"auto"``) injects that unit's KV cache as the prompt prefix — it replaces the system
message unless plaintext memory is also on — and ``memory.parametric`` attaches that LoRA
adapter for the request. Both unit ids (and the cache's source units) are returned in
``memory_unit_ids``. With a litellm model a non-null ``memory.activation``/``parametric``
is ``InvalidInput``.

Errors: a provider failure is ``BackendUnavailable`` (503) carrying the provider's message;
a bundled model that is not installed or not prepared is ``BackendUnavailable`` naming the
``backbone`` extra and ``memos backbone prepare``.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from memos.errors import BackendUnavailable, InvalidInput
from memos.memory import BackboneProvider, ModelMemory
from memos.tools import CubeBackend, result_unit_ids, run_tool, tool_schemas
from memos.types import (
    BUNDLED,
    ChatRequest,
    ChatResponse,
    ContextRequest,
    MemoryOptions,
    ToolCallRecord,
)

if TYPE_CHECKING:
    from memos.cube import MemCube

__all__ = [
    "ToolCall",
    "Completion",
    "ChatModel",
    "LiteLLMModel",
    "BundledLoader",
    "Chat",
    "sse_events",
]

# --------------------------------------------------------------------------- models
@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass
class Completion:
    """One model answer: text, or tool calls to run before it answers again."""

    text: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: dict[str, int] | None = None


class ChatModel(Protocol):
    """A chat model the server can answer with. ``messages`` are OpenAI-style dicts
    (``role`` system/user/assistant/tool); ``tools`` is ``None`` when the model
    must answer in text. A failure to reach the model is ``BackendUnavailable``."""

    name: str
    supports_tools: bool

    def complete(self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None,
                 max_tokens: int | None, temperature: float | None) -> Completion: ...


def _litellm_completion(**kwargs: Any) -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    return litellm.completion(**kwargs)


def _get(obj: Any, key: str, default: Any = None) -> Any:
    """Attribute or key: litellm returns objects, scripted test completions may return dicts."""
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default)


def parse_completion(response: Any) -> Completion:
    """A :class:`Completion` from an OpenAI/litellm-style chat completion response."""
    message = _get(_get(response, "choices")[0], "message")
    calls = []
    for i, call in enumerate(_get(message, "tool_calls") or []):
        function = _get(call, "function")
        arguments = _get(function, "arguments")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments or {})
        calls.append(ToolCall(id=_get(call, "id") or f"call_{i}",
                              name=_get(function, "name") or "", arguments=arguments))
    usage = _get(response, "usage")
    counts = None
    if usage is not None:
        counts = {k: int(_get(usage, k) or 0)
                  for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    return Completion(text=_get(message, "content") or "", tool_calls=calls, usage=counts)


@dataclass
class LiteLLMModel:
    """Any litellm model (OpenAI, Anthropic, Ollama, …) through an injectable ``completion``."""

    name: str
    completion: Callable[..., Any] = _litellm_completion
    supports_tools: bool = True

    def complete(self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None,
                 max_tokens: int | None, temperature: float | None) -> Completion:
        kwargs: dict[str, Any] = {"model": self.name, "messages": messages}
        if tools:
            kwargs["tools"] = tools
        if max_tokens is not None:
            kwargs["max_tokens"] = max_tokens
        if temperature is not None:
            kwargs["temperature"] = temperature
        try:
            response = self.completion(**kwargs)
        except Exception as exc:  # provider, network, auth, unknown model: all one boundary
            message = getattr(exc, "message", None) or str(exc)
            raise BackendUnavailable(f"model {self.name!r} failed: {message}",
                                     details={"model": self.name,
                                              "exception": type(exc).__name__}) from exc
        try:
            return parse_completion(response)
        except (AttributeError, IndexError, KeyError, TypeError) as exc:
            raise BackendUnavailable(f"model {self.name!r} returned an unreadable response",
                                     details={"model": self.name}) from exc



@dataclass
class _BundledModel:
    """The bundled backbone as a :class:`ChatModel` (plain text, no tool calling).

    :meth:`with_memory` gives a copy bound to one request's activation memory (a KV cache
    injected as the prefix, so the prompt holds only the turns after it) and parametric
    memory (a LoRA adapter attached for the generation, detached afterwards).
    """

    backbone: Any
    lock: Any  # the provider's lock: generation, compilation and training share the model
    name: str = BUNDLED
    supports_tools: bool = False
    default_max_tokens: int = 256
    activation: Any = None  # memos.memory.activation.Activation
    adapter: Any = None  # memos.memory.parametric.Adapter

    def with_memory(self, *, activation: Any = None, adapter: Any = None) -> _BundledModel:
        return replace(self, activation=activation, adapter=adapter)

    def complete(self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None,
                 max_tokens: int | None, temperature: float | None) -> Completion:
        turns = [{"role": m["role"], "content": m["content"]} for m in messages]
        kwargs: dict[str, Any] = {"max_new_tokens": max_tokens or self.default_max_tokens,
                                  "temperature": temperature or 0.0}
        with self.lock:  # one generation at a time: the model's routing state is shared
            with self._adapter():
                if self.activation is not None:
                    from memos.memory.activation import render_turns

                    ids = self.backbone.encode(render_turns(self.backbone, turns))
                    text = self.backbone.generate(ids, prefix_cache=self.activation.cache,
                                                  **kwargs)
                else:
                    text = self.backbone.generate(self.backbone.chat_prompt(turns), **kwargs)
        return Completion(text=text.strip())

    @contextmanager
    def _adapter(self) -> Iterator[None]:
        if self.adapter is None:
            yield
            return
        from memos.memory.parametric import attach, detach

        attach(self.backbone.model, self.adapter.tensors, self.adapter.config)
        try:
            yield
        finally:
            detach(self.backbone.model)


class BundledLoader:
    """Loads the bundled backbone once, on first use, as a :class:`ChatModel`.

    ``provider`` (default: one over ``data_dir``) is shared with activation/parametric
    memory (:class:`memos.memory.ModelMemory`), so there is one backbone and one lock.
    """

    def __init__(self, data_dir: str | os.PathLike[str] | None = None, *,
                 provider: BackboneProvider | None = None) -> None:
        self.data_dir = data_dir
        self.provider = provider or BackboneProvider(data_dir)
        self._model: ChatModel | None = None
        self._lock = threading.Lock()

    def __call__(self, memory: MemoryOptions) -> ChatModel:
        with self._lock:
            if self._model is None:
                self._model = _BundledModel(backbone=self.provider(), lock=self.provider.lock)
            return self._model


# --------------------------------------------------------------------------- chat
SYSTEM_PROMPT = (
    "You are a helpful assistant with a long-term memory of this user. Answer from the "
    "memories when they are relevant and cite the ids you use in brackets, like [id]; if "
    "the memories do not contain the answer, say so rather than guessing."
)
TOOLS_PROMPT = (
    "You can search, add, update and delete memories with the memory tools: search when the "
    "memories below do not answer the question, add durable new facts the user tells you, "
    "and correct memories that turn out to be wrong."
)


def _dedupe(ids: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(ids))


class Chat:
    """Answers chat requests over one service; collaborators come in through the constructor.

    ``completion`` is the litellm-compatible completion function (default
    ``litellm.completion``, imported on first use); ``bundled`` turns memory options into
    the bundled :class:`ChatModel` (default: :class:`BundledLoader`).
    """

    def __init__(self, memos: MemCube, *, completion: Callable[..., Any] | None = None,
                 bundled: Callable[[MemoryOptions], ChatModel] | None = None,
                 context_tokens: int = 512) -> None:
        self.memos = memos
        self.completion = completion or _litellm_completion
        self.bundled = bundled or BundledLoader()
        self.context_tokens = context_tokens
        self._model_memory: ModelMemory | None = None

    @property
    def model_memory(self) -> ModelMemory:
        """Activation/parametric memory over the bundled loader's backbone."""
        if self._model_memory is None:
            self._model_memory = ModelMemory.for_loader(self.memos, self.bundled)
        return self._model_memory

    def _bind_memory(self, model: ChatModel, cube_id: str, options: MemoryOptions, *,
                     tenant: str) -> tuple[ChatModel, list[str], bool]:
        """Resolve ``memory.activation`` / ``memory.parametric`` and bind them to the
        bundled model; returns the bound model, the unit ids used, and whether a KV cache
        now provides the system message."""
        if options.activation is None and options.parametric is None:
            return model, [], False
        bind = getattr(model, "with_memory", None)
        if bind is None:
            raise BackendUnavailable("this bundled model cannot use activation or parametric "
                                     "memory", details={"model": BUNDLED})
        mm = self.model_memory
        used: list[str] = []
        activation = adapter = None
        if options.activation is not None:
            activation = mm.activations.resolve(cube_id, options.activation, tenant=tenant)
            if activation is not None:
                used += [activation.unit_id, *activation.source_ids]
        if options.parametric is not None:
            adapter = mm.adapters.resolve(cube_id, options.parametric, tenant=tenant)
            if adapter is not None:
                used.append(adapter.unit_id)
        return bind(activation=activation, adapter=adapter), used, activation is not None

    def model_for(self, request: ChatRequest) -> ChatModel:
        if request.model == BUNDLED:
            return self.bundled(request.memory)
        extra = [k for k in ("activation", "parametric") if getattr(request.memory, k)]
        if extra:
            raise InvalidInput(
                f"memory.{extra[0]} works only with the bundled model; model "
                f"{request.model!r} can use plaintext memory only (set it to null)",
                details={"model": request.model, "fields": [f"memory.{k}" for k in extra]})
        return LiteLLMModel(request.model, self.completion)

    def answer(self, cube_id: str, request: ChatRequest, *, tenant: str) -> ChatResponse:
        """One assistant turn: retrieve, run the tool loop, return the final text."""
        model = self.model_for(request)
        self.memos.get_cube(cube_id, tenant=tenant)  # unknown cube: NotFound before any work
        question = next(m.content for m in reversed(request.messages)
                        if m.role == "user" and m.content.strip())
        use_tools = model.supports_tools and request.max_tool_rounds > 0
        model, unit_ids, has_prefix = self._bind_memory(model, cube_id, request.memory,
                                                        tenant=tenant)
        system = [SYSTEM_PROMPT]
        if use_tools:
            system.append(TOOLS_PROMPT)
        if request.memory.plaintext:
            ctx = self.memos.context(cube_id, ContextRequest(
                query=question, max_tokens=self.context_tokens), tenant=tenant)
            unit_ids += ctx.unit_ids
            system.append("Memories (best first):\n" + (ctx.text or "(none found)"))
        messages: list[dict[str, Any]] = []
        if not has_prefix or request.memory.plaintext:  # a KV cache prefix is the system turn
            messages.append({"role": "system", "content": "\n\n".join(system)})
        messages += [m.model_dump() for m in request.messages]

        backend = CubeBackend(self.memos, cube_id, tenant)
        schemas = tool_schemas() if use_tools else None
        records: list[ToolCallRecord] = []
        usage: dict[str, int] | None = None
        rounds = 0
        while True:
            offer = schemas if rounds < request.max_tool_rounds else None
            done = model.complete(messages, tools=offer, max_tokens=request.max_tokens,
                                  temperature=request.temperature)
            if done.usage:
                usage = {k: (usage or {}).get(k, 0) + v for k, v in done.usage.items()}
            if not done.tool_calls or offer is None:
                reply = done.text
                break
            rounds += 1
            messages.append({"role": "assistant", "content": done.text or None, "tool_calls": [
                {"id": c.id, "type": "function",
                 "function": {"name": c.name, "arguments": c.arguments}}
                for c in done.tool_calls]})
            for call in done.tool_calls:
                result = run_tool(backend, call.name, call.arguments)
                unit_ids += result_unit_ids(result)
                records.append(ToolCallRecord(name=call.name, arguments=_arguments(call),
                                              result=result))
                messages.append({"role": "tool", "tool_call_id": call.id, "name": call.name,
                                 "content": json.dumps(result, default=str)})
        return ChatResponse(reply=reply, model=model.name, memory_unit_ids=_dedupe(unit_ids),
                            tool_calls=records, usage=usage)


def _arguments(call: ToolCall) -> dict[str, Any] | str:
    try:
        parsed = json.loads(call.arguments) if call.arguments.strip() else {}
    except json.JSONDecodeError:
        return call.arguments
    return parsed if isinstance(parsed, dict) else call.arguments


_CHUNK = re.compile(r"\S+\s*|\s+")


def sse_events(response: ChatResponse, *, words_per_chunk: int = 4) -> Iterator[str]:
    """The response as Server-Sent Events: ``event: delta`` with ``{"text": …}`` pieces whose
    concatenation is the reply, then one ``event: response`` with the whole
    :class:`ChatResponse` JSON."""
    pieces = _CHUNK.findall(response.reply)
    for start in range(0, len(pieces), words_per_chunk):
        text = "".join(pieces[start:start + words_per_chunk])
        yield f"event: delta\ndata: {json.dumps({'text': text})}\n\n"
    yield f"event: response\ndata: {response.model_dump_json()}\n\n"
