"""Answering with memory: a chat turn over a cube, by a litellm model or the bundled backbone.

    Chat(memos, completion=litellm_completion, bundled=BundledLoader())
        .answer(cube_id, ChatRequest, tenant=...)  → ChatResponse
        .stream(cube_id, ChatRequest, tenant=...)  → iterator of ChatStreamEvent
    sse_events(events)                              → Server-Sent Events text

For a litellm model (any ``model`` but ``"bundled"``; :class:`memos.llm.LiteLLMModel` owns
everything litellm-specific: calls, retries, streamed chunks, token counts): the plaintext
memory retrieved for the last user message goes into the system prompt, each line citing its
``[unit id]``; the memory tools of :mod:`memos.tools` are offered, and the tool calls the
model makes are executed against the cube, up to ``max_tool_rounds`` rounds, before its
final text is returned. ``memory_unit_ids`` lists every unit the model was shown: the
prompt's context and every tool result. ``reply`` is all the text the model wrote, rounds
separated by a blank line (usually only the last round writes any).

For ``"bundled"`` the model is the bundled MoE backbone (:mod:`memos.backbone`), behind the
small :class:`ChatModel` protocol; it gets the same plaintext context but no tools, and
can use memory inside the model (:mod:`memos.memory`): ``memory.activation`` (a unit id or
``"auto"``) injects that unit's KV cache as the prompt prefix — it replaces the system
message unless plaintext memory is also on — and ``memory.parametric`` attaches that LoRA
adapter for the request. Both unit ids (and the cache's source units) are returned in
``memory_unit_ids``. With a litellm model a non-null ``memory.activation``/``parametric``
is ``InvalidInput``.

Token budgets are counted by the tokenizer of the model that reads the prompt
(:meth:`ChatModel.count_tokens`: the backbone's own tokenizer, or ``litellm.token_counter``).
The prompt plus the answer's ``max_tokens`` always fits the model's context: memory lines
are dropped first, then the best line is shortened
(:func:`memos.retrieval.search.pack_context`), and
``ChatResponse.truncated`` says what was cut. When the conversation alone cannot fit, the
request is ``PayloadTooLarge`` (413; ``InvalidInput`` when ``max_tokens`` alone exceeds it).

Streaming (:meth:`Chat.stream`): everything that can fail on the request — the model, the
cube, memory options, the budget, and for litellm the first model call — happens before the
iterator is returned, so those errors keep their status codes. Then come one ``start``
event (model, memory_unit_ids of the prompt, truncated), ``delta`` events with the text as
the model generates it (litellm ``stream=True`` chunks; the backbone's
:func:`~memos.backbone.generate.generate`), and one ``response`` event with the whole
:class:`ChatResponse`, usage included. Tool rounds stream too: text a model writes before
calling tools is part of the reply. :func:`sse_events` turns a failure after the start into
an ``error`` event carrying the API's ``{"error": {...}}`` JSON.

Errors: a provider failure is ``BackendUnavailable`` (503) carrying the provider's message,
a request the provider refuses (unknown model, bad parameter) ``InvalidInput`` (422);
a bundled model that is not installed or not prepared is ``BackendUnavailable`` naming the
``backbone`` extra and ``memos backbone prepare``.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from memos.errors import BackendUnavailable, InvalidInput, MemosError, PayloadTooLarge
from memos.llm import Completion, CompletionFn, LiteLLMModel, ToolCall, litellm_completion
from memos.memory import BackboneProvider, ModelMemory
from memos.retrieval.search import TokenCounter, pack_context
from memos.store.blobs import BlobStore, blob_root
from memos.tools import CubeBackend, result_unit_ids, run_tool, tool_schemas
from memos.types import (
    BUNDLED,
    ChatRequest,
    ChatResponse,
    ChatStreamEvent,
    ContextRequest,
    MemoryOptions,
    SearchRequest,
    ToolCallRecord,
    Truncation,
)

if TYPE_CHECKING:
    from memos.cube import MemCube

__all__ = [
    "ChatModel",
    "BundledLoader",
    "Chat",
    "sse_events",
]

log = logging.getLogger("memos.chat")


# --------------------------------------------------------------------------- models
class ChatModel(Protocol):
    """A chat model the server can answer with. ``messages`` are OpenAI-style dicts
    (``role`` system/user/assistant/tool); ``tools`` is ``None`` when the model
    must answer in text. A failure to reach the model is ``BackendUnavailable``.

    ``context_length`` is the most tokens the model holds, prompt and answer together
    (``None``: unknown, nothing is fitted). :meth:`stream` yields the text pieces as the
    model generates them, then exactly one :class:`Completion` (the whole text, the tool
    calls, usage); it may raise at the call (nothing started) or while iterating.
    """

    name: str
    supports_tools: bool

    @property
    def context_length(self) -> int | None: ...

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` by this model's tokenizer."""
        ...

    def prompt_tokens(self, messages: list[dict[str, Any]], *,
                      tools: list[dict[str, Any]] | None) -> int:
        """Tokens the model's context holds for this prompt (template and tools included)."""
        ...

    def answer_tokens(self, max_tokens: int | None) -> int:
        """Tokens to keep free for the answer (``None``: the model's default)."""
        ...

    def complete(self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None,
                 max_tokens: int | None, temperature: float | None) -> Completion: ...

    def stream(self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None,
               max_tokens: int | None, temperature: float | None
               ) -> Iterator[str | Completion]: ...


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_DONE = object()


def _stripped(pieces: Iterable[str]) -> Iterator[str]:
    """The pieces of ``"".join(pieces).strip()``, as early as possible: leading whitespace
    is dropped, trailing whitespace is held back until more text follows it."""
    started, held = False, ""
    for piece in pieces:
        if not started:
            piece = piece.lstrip()
            if not piece:
                continue
            started = True
        body = piece.rstrip()
        if body:
            yield held + body
            held = piece[len(body):]
        else:
            held += piece


@dataclass
class _BundledModel:
    """The bundled backbone as a :class:`ChatModel` (plain text, no tool calling).

    :meth:`with_memory` gives a copy bound to one request's activation memory (a KV cache
    injected as the prefix, so the prompt holds only the turns after it) and parametric
    memory (a LoRA adapter attached for the generation, detached afterwards). Tokens are
    the backbone's own; usage counts the prompt (prefix included) and the generated tokens.
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

    @property
    def context_length(self) -> int:
        return int(self.backbone.model.config.max_seq_len)

    def count_tokens(self, text: str) -> int:
        return len(self.backbone.encode(text))

    def _prompt_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        turns = [{"role": m["role"], "content": m["content"]} for m in messages]
        if self.activation is not None:
            from memos.memory.activation import render_turns

            return list(self.backbone.encode(render_turns(self.backbone, turns)))
        return list(self.backbone.encode(self.backbone.chat_prompt(turns)))

    def _prefix_tokens(self) -> int:
        return 0 if self.activation is None else int(self.activation.cache[0][0].shape[2])

    def prompt_tokens(self, messages: list[dict[str, Any]], *,
                      tools: list[dict[str, Any]] | None = None) -> int:
        return self._prefix_tokens() + len(self._prompt_ids(messages))

    def answer_tokens(self, max_tokens: int | None) -> int:
        return max_tokens or self.default_max_tokens

    def complete(self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None,
                 max_tokens: int | None, temperature: float | None) -> Completion:
        *_, done = self.stream(messages, tools=tools, max_tokens=max_tokens,
                               temperature=temperature)
        assert isinstance(done, Completion)
        return done

    def stream(self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None,
               max_tokens: int | None, temperature: float | None
               ) -> Iterator[str | Completion]:
        ids = self._prompt_ids(messages)
        prompt = self._prefix_tokens() + len(ids)
        new = self.answer_tokens(max_tokens)
        if prompt + new > self.context_length:
            raise PayloadTooLarge(
                f"prompt ({prompt} tokens) plus max_tokens ({new}) exceeds the bundled "
                f"model's context of {self.context_length} tokens",
                details={"prompt_tokens": prompt, "max_tokens": new,
                         "context_length": self.context_length})
        return self._pieces(ids, prompt, max_new_tokens=new, temperature=temperature or 0.0)

    def _pieces(self, ids: list[int], prompt: int, **kwargs: Any) -> Iterator[str | Completion]:
        tokens: list[int] = []  # appended by the generating thread, read after it ends
        parts: list[str] = []
        for piece in _stripped(self._generate(ids, on_token=tokens.append, **kwargs)):
            parts.append(piece)
            yield piece
        yield Completion(text="".join(parts), usage={
            "prompt_tokens": prompt, "completion_tokens": len(tokens),
            "total_tokens": prompt + len(tokens)})

    def _generate(self, ids: list[int], **kwargs: Any) -> Iterator[str]:
        """Text pieces of a generation that runs in its own thread under the model lock.

        The lock is taken and released by that one thread, however the consumer's
        iteration moves between threads (a streaming response pulls each piece from a
        thread pool); closing the iterator stops the generation at the next piece.
        """
        pieces: queue.Queue[object] = queue.Queue()
        stop = threading.Event()
        prefix = None if self.activation is None else self.activation.cache

        def run() -> None:
            try:
                with self.lock:  # one generation at a time: the routing state is shared
                    if stop.is_set():
                        return
                    with self._adapter():
                        for piece in self.backbone.stream(ids, prefix_cache=prefix, **kwargs):
                            if stop.is_set():
                                break
                            pieces.put(piece)
            except BaseException as exc:  # handed to the consumer, raised there
                pieces.put(_Failed(exc))
            finally:
                pieces.put(_DONE)

        threading.Thread(target=run, name="memos-bundled-generate", daemon=True).start()
        try:
            while (item := pieces.get()) is not _DONE:
                if isinstance(item, _Failed):
                    raise BackendUnavailable(f"the bundled model failed: {item.exc}",
                                             details={"model": BUNDLED}) from item.exc
                yield str(item)
        finally:
            stop.set()

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
NO_MEMORIES = "(none found)"


def _dedupe(ids: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(ids))


@dataclass
class _Turn:
    """One prepared request: the bound model, the fitted prompt, what memory it shows."""

    request: ChatRequest
    model: ChatModel
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    backend: CubeBackend
    unit_ids: list[str]
    truncated: Truncation | None


class Chat:
    """Answers chat requests over one service; collaborators come in through the constructor.

    ``completion`` is the litellm-compatible completion function (default
    :func:`memos.llm.litellm_completion`: litellm imported on first use, transient failures
    retried); ``bundled`` turns memory options into
    the bundled :class:`ChatModel` (default: :class:`BundledLoader`). ``context_tokens`` is
    the most tokens of plaintext memory a prompt gets (less when the model's context is
    shorter).
    """

    def __init__(self, memos: MemCube, *, completion: CompletionFn | None = None,
                 bundled: Callable[[MemoryOptions], ChatModel] | None = None,
                 model_memory: ModelMemory | None = None, context_tokens: int = 512) -> None:
        self.memos = memos
        self.completion = completion or litellm_completion
        self.bundled = bundled or BundledLoader()
        self.context_tokens = context_tokens
        self._model_memory = model_memory

    @property
    def model_memory(self) -> ModelMemory:
        """Activation/parametric memory (given, or built on first use over the bundled
        loader's backbone and data directory, so both share one model)."""
        if self._model_memory is None:
            data_dir = getattr(self.bundled, "data_dir", None)
            provider = getattr(self.bundled, "provider", None) or BackboneProvider(data_dir)
            self._model_memory = self.memos.model_memory(provider,
                                                         BlobStore(blob_root(data_dir)))
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

    def token_counter(self, model: str) -> TokenCounter:
        """How ``model`` ("bundled" or a litellm name) counts a text's tokens."""
        if model == BUNDLED:
            return self.bundled(MemoryOptions()).count_tokens
        return LiteLLMModel(model, self.completion).count_tokens

    def model_for(self, request: ChatRequest) -> ChatModel:
        if request.model == BUNDLED:
            return self.bundled(request.memory)
        extra = [k for k in ("activation", "parametric")
                 if getattr(request.memory, k) is not None]
        if extra:
            raise InvalidInput(
                f"memory.{extra[0]} works only with the bundled model; model "
                f"{request.model!r} can use plaintext memory only (set it to null)",
                details={"model": request.model, "fields": [f"memory.{k}" for k in extra]})
        return LiteLLMModel(request.model, self.completion)

    # ----------------------------------------------------------------- preparation
    def _prepare(self, cube_id: str, request: ChatRequest, *, tenant: str) -> _Turn:
        """Everything before the first model call; every request error is raised here."""
        self.memos.limits.check_chat(request)
        self.memos.get_cube(cube_id, tenant=tenant)  # unknown cube: NotFound before any work
        model = self.model_for(request)
        question = next(m.content for m in reversed(request.messages)
                        if m.role == "user" and m.content.strip())
        use_tools = model.supports_tools and request.max_tool_rounds > 0
        model, unit_ids, has_prefix = self._bind_memory(model, cube_id, request.memory,
                                                        tenant=tenant)
        tools = tool_schemas() if use_tools else None
        system = [SYSTEM_PROMPT] + ([TOOLS_PROMPT] if use_tools else [])
        plaintext = request.memory.plaintext

        def prompt(memory: str) -> list[dict[str, Any]]:
            parts = system + ([f"Memories (best first):\n{memory or NO_MEMORIES}"]
                              if plaintext else [])
            messages: list[dict[str, Any]] = []
            if not has_prefix or plaintext:  # a KV cache prefix is the system turn
                messages.append({"role": "system", "content": "\n\n".join(parts)})
            return messages + [m.model_dump() for m in request.messages]

        messages = prompt("")
        limit = model.context_length
        reserve = model.answer_tokens(request.max_tokens)
        room = None
        if limit is not None:
            room = limit - reserve - model.prompt_tokens(messages, tools=tools)
            if room < 0:
                raise self._too_long(model, limit, reserve, messages, tools)
        truncated = None
        if plaintext:
            # A user message may be longer than a search query may be; the embedder reads
            # only the first few hundred tokens anyway.
            query = question[:self.memos.limits.max_query_chars]
            found = self.memos.search(cube_id, SearchRequest(
                query=query, top_k=ContextRequest.model_fields["top_k"].default),
                tenant=tenant)
            budget = self.context_tokens if room is None else min(self.context_tokens, room)
            while True:
                ctx = pack_context(found.hits, max_tokens=budget,
                                   count_tokens=model.count_tokens)
                messages = prompt(ctx.text)
                over = 0 if limit is None else (
                    model.prompt_tokens(messages, tools=tools) + reserve - limit)
                if over <= 0 or budget == 0:
                    break
                budget = max(0, budget - over)  # joined lines can cost a little more
            unit_ids += ctx.unit_ids
            truncated = ctx.truncated
        return _Turn(request=request, model=model, messages=messages, tools=tools,
                     backend=CubeBackend(self.memos, cube_id, tenant), unit_ids=unit_ids,
                     truncated=truncated)

    @staticmethod
    def _too_long(model: ChatModel, limit: int, reserve: int, messages: list[dict[str, Any]],
                  tools: list[dict[str, Any]] | None) -> MemosError:
        details = {"model": model.name, "context_length": limit, "max_tokens": reserve}
        if reserve >= limit:
            return InvalidInput(f"max_tokens ({reserve}) must be below the context of model "
                                f"{model.name!r} ({limit} tokens)", details=details)
        used = model.prompt_tokens(messages, tools=tools)
        return PayloadTooLarge(
            f"the conversation takes {used} tokens; with max_tokens ({reserve}) it exceeds "
            f"the context of model {model.name!r} ({limit} tokens): shorten the messages or "
            f"lower max_tokens", details={**details, "prompt_tokens": used})

    # ----------------------------------------------------------------- answering
    def answer(self, cube_id: str, request: ChatRequest, *, tenant: str) -> ChatResponse:
        """One assistant turn: retrieve, fit, run the tool loop, return the whole answer."""
        turn = self._prepare(cube_id, request, tenant=tenant)
        *_, response = self._rounds(turn, stream=False)
        assert isinstance(response, ChatResponse)
        return response

    def stream(self, cube_id: str, request: ChatRequest, *,
               tenant: str) -> Iterator[ChatStreamEvent]:
        """The turn as events: ``start``, ``delta``…, ``response`` (see the module docs).

        Raises request errors (and a refused first model call) before returning.
        """
        turn = self._prepare(cube_id, request, tenant=tenant)
        first = self._call(turn, turn.messages, offer=self._offer(turn, 0), stream=True)
        return self._events(turn, first)

    def _events(self, turn: _Turn, first: Iterator[str | Completion]
                ) -> Iterator[ChatStreamEvent]:
        yield ChatStreamEvent(event="start", model=turn.model.name,
                              memory_unit_ids=_dedupe(turn.unit_ids), truncated=turn.truncated)
        for item in self._rounds(turn, stream=True, first=first):
            if isinstance(item, str):
                yield ChatStreamEvent(event="delta", text=item)
            else:
                yield ChatStreamEvent(event="response", response=item)

    @staticmethod
    def _offer(turn: _Turn, rounds: int) -> list[dict[str, Any]] | None:
        return turn.tools if rounds < turn.request.max_tool_rounds else None

    @staticmethod
    def _call(turn: _Turn, messages: list[dict[str, Any]], *, offer: list[dict[str, Any]] | None,
              stream: bool) -> Iterator[str | Completion]:
        r = turn.request
        if stream:
            return turn.model.stream(messages, tools=offer, max_tokens=r.max_tokens,
                                     temperature=r.temperature)
        return iter([turn.model.complete(messages, tools=offer, max_tokens=r.max_tokens,
                                         temperature=r.temperature)])

    def _rounds(self, turn: _Turn, *, stream: bool,
                first: Iterator[str | Completion] | None = None
                ) -> Iterator[str | ChatResponse]:
        """The tool loop: text pieces of the reply as they come, then the response."""
        messages = list(turn.messages)
        unit_ids = list(turn.unit_ids)
        records: list[ToolCallRecord] = []
        usage: dict[str, int] | None = None
        reply: list[str] = []
        rounds = 0
        while True:
            offer = self._offer(turn, rounds)
            items = first if first is not None and rounds == 0 else self._call(
                turn, messages, offer=offer, stream=stream)
            separate = bool(reply)  # a later round's text starts after a blank line
            done: Completion | None = None
            for item in items:
                if isinstance(item, Completion):
                    done = item
                    continue
                if stream and item:
                    piece = ("\n\n" if separate else "") + item
                    separate = False
                    reply.append(piece)
                    yield piece
            if done is None:
                raise BackendUnavailable(f"model {turn.model.name!r} ended without an answer",
                                         details={"model": turn.model.name})
            if not stream and done.text:
                piece = ("\n\n" if separate else "") + done.text
                reply.append(piece)
                yield piece
            if done.usage:
                usage = {k: (usage or {}).get(k, 0) + v for k, v in done.usage.items()}
            if not done.tool_calls or offer is None:
                break
            rounds += 1
            messages.append({"role": "assistant", "content": done.text or None, "tool_calls": [
                {"id": c.id, "type": "function",
                 "function": {"name": c.name, "arguments": c.arguments}}
                for c in done.tool_calls]})
            for call in done.tool_calls:
                result = run_tool(turn.backend, call.name, call.arguments)
                unit_ids += result_unit_ids(result)
                records.append(ToolCallRecord(name=call.name, arguments=_arguments(call),
                                              result=result))
                messages.append({"role": "tool", "tool_call_id": call.id, "name": call.name,
                                 "content": json.dumps(result, default=str)})
        yield ChatResponse(reply="".join(reply), model=turn.model.name,
                           memory_unit_ids=_dedupe(unit_ids), tool_calls=records, usage=usage,
                           truncated=turn.truncated)


def _arguments(call: ToolCall) -> dict[str, Any] | str:
    try:
        parsed = json.loads(call.arguments) if call.arguments.strip() else {}
    except json.JSONDecodeError:
        return call.arguments
    return parsed if isinstance(parsed, dict) else call.arguments


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


def sse_events(events: Iterable[ChatStreamEvent]) -> Iterator[str]:
    """Server-Sent Events for a streamed turn: ``event: <name>`` and one ``data:`` line of
    JSON per event (:meth:`ChatStreamEvent.data`). A failure while iterating ends the stream
    with ``event: error`` and the API's ``{"error": {"type", "message", "details"}}``."""
    try:
        for event in events:
            yield _sse(event.event, event.data())
    except MemosError as exc:
        yield _sse("error", exc.to_dict())
    except Exception as exc:  # the status line is gone: the error travels as an event
        log.exception("chat stream failed", exc_info=exc)
        yield _sse("error", {"error": {"type": "internal_error",
                                       "message": "internal server error",
                                       "details": {"exception": type(exc).__name__}}})
