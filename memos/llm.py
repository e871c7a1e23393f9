"""The one litellm wrapper: completions, streaming, JSON answers, token counts, retries.

Every model call memos makes to an external LLM goes through here: the LLM extractor and
updater (:mod:`memos.extract`), chat (:mod:`memos.chat`) and the HaluMem judges
(:mod:`memos.eval.halumem`). Each of them takes an injectable ``completion`` callable with
``litellm.completion``'s keyword signature (``model=``, ``messages=``, …; an OpenAI-style
response, or with ``stream=True`` an iterator of chunks); tests pass a fake or litellm's
own ``mock_response=``. The default is :func:`litellm_completion`.

- :func:`load_litellm` — the litellm module, imported on first use only, after setting
  ``LITELLM_LOCAL_MODEL_COST_MAP=True`` (litellm otherwise fetches its model map from the
  network on import); importing :mod:`memos.llm` imports nothing heavy.
- :func:`preload_litellm` — that import and litellm's default tokenizer on a background
  thread, started by the API at startup so the first request that names a litellm model
  (``/context`` or ``/chat``) does not wait seconds for them.
- :func:`litellm_completion` — ``litellm.completion`` retried with exponential back-off
  on transient failures (:func:`is_transient`: rate limits, timeouts, lost connections,
  5xx) by :data:`RETRY`; any other failure, and the last transient one, is raised as is.
- :func:`ask` / :func:`ask_json` — one system + user exchange, returning the reply text or
  the first JSON object in it (``None`` when there is none): the JSON mode of the
  extractor, the updater and the judges (the prompt asks for JSON; the reply is parsed
  leniently, fenced or bare).
- :class:`LiteLLMModel` — any litellm model as a chat model (:class:`memos.chat.ChatModel`):
  complete or stream (chunks assembled by :class:`ChunkAssembler` into one
  :class:`Completion`: text, tool calls, usage), count tokens with the model's tokenizer,
  know its context length. It translates every provider failure into
  ``BackendUnavailable``.

>>> parse_json_object('Sure! ```json\\n{"action": "ADD"}\\n```')
{'action': 'ADD'}
>>> response_text({"choices": [{"message": {"content": "hi"}}]})
'hi'
>>> retry = Retry(attempts=3, initial_delay=0.5, sleep=lambda s: None)
>>> list(retry.delays())
[0.5, 1.0]
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from memos.errors import BackendUnavailable, InvalidInput, MemosError

__all__ = [
    "CompletionFn",
    "load_litellm",
    "preload_litellm",
    "Retry",
    "RETRY",
    "is_transient",
    "litellm_completion",
    "ask",
    "ask_json",
    "response_text",
    "parse_json_object",
    "ToolCall",
    "Completion",
    "parse_completion",
    "ChunkAssembler",
    "LiteLLMModel",
]

#: A ``litellm.completion``-compatible function: keyword arguments in, response out.
CompletionFn = Callable[..., Any]

T = TypeVar("T")

log = logging.getLogger(__name__)
_LITELLM_LOAD = threading.Lock()
_LITELLM_NAMES = ("completion", "embedding", "token_counter", "get_model_info", "exceptions",
                  "utils")
_litellm_loaded = False


def load_litellm() -> Any:
    """The litellm module, imported now if it is not yet: offline model map, no banners.

    Raises ``ImportError`` without the ``llm`` extra.
    """
    global _litellm_loaded
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    # litellm imports most of its names lazily, on first attribute access, and two threads
    # doing that at once can see it half done ("module 'litellm' has no attribute
    # 'exceptions'"), as when a request arrives while :func:`preload_litellm` runs. So the
    # first load resolves the names memos and litellm's own calls use, under a lock.
    with _LITELLM_LOAD:
        import litellm

        if not _litellm_loaded:
            litellm.suppress_debug_info = True  # no "Provider List" banners on stdout
            for name in _LITELLM_NAMES:
                getattr(litellm, name)
            _litellm_loaded = True
    return litellm


def preload_litellm() -> threading.Thread | None:
    """Import litellm and load its default tokenizer on a background thread (started and
    returned), or ``None`` when the ``llm`` extra is not installed. Importing litellm takes
    seconds; a request that needs it while this runs waits only for the rest. A failure is
    logged (debug), never raised: the request that needs litellm reports it."""
    if "litellm" in sys.modules or importlib.util.find_spec("litellm") is None:
        return None

    def warm() -> None:
        try:
            load_litellm().token_counter(model="gpt-4o", text="warm up")
        except Exception as exc:  # e.g. the process exiting; the first real use reports it
            log.debug("litellm preload failed: %s", exc)

    thread = threading.Thread(target=warm, name="memos-litellm-preload")
    thread.start()
    return thread


# --------------------------------------------------------------------------- retries
@dataclass(frozen=True)
class Retry:
    """At most ``attempts`` calls; before each repeat, wait the next of :meth:`delays`.

    The waits double from ``initial_delay`` seconds up to ``max_delay``; ``sleep`` is
    injectable so that tests do not wait.
    """

    attempts: int = 3
    initial_delay: float = 1.0
    max_delay: float = 8.0
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {self.attempts}")

    def delays(self) -> Iterator[float]:
        """The waits between attempts, in seconds (``attempts - 1`` of them)."""
        for n in range(self.attempts - 1):
            yield min(self.max_delay, self.initial_delay * 2 ** n)

    def call(self, fn: Callable[[], T], *, transient: Callable[[Exception], bool]) -> T:
        """``fn()``, repeated while it raises what ``transient`` accepts and attempts remain.

        >>> calls = []
        >>> def flaky() -> str:
        ...     calls.append(1)
        ...     if len(calls) < 3:
        ...         raise TimeoutError
        ...     return "ok"
        >>> Retry(sleep=lambda s: None).call(flaky, transient=lambda e: True), len(calls)
        ('ok', 3)
        """
        waits = self.delays()
        while True:
            try:
                return fn()
            except Exception as exc:
                wait = next(waits, None)
                if wait is None or not transient(exc):
                    raise
            self.sleep(wait)


#: How :func:`litellm_completion` retries: three attempts, after 1 s and 2 s.
RETRY = Retry()


def is_transient(exc: Exception) -> bool:
    """Whether a litellm failure may pass on its own: a rate limit, a timeout, a lost
    connection or a provider-side 5xx. A bad request, bad credentials or an unknown model
    are not."""
    lm = load_litellm()
    return isinstance(exc, (lm.RateLimitError, lm.Timeout, lm.APIConnectionError,
                            lm.ServiceUnavailableError, lm.InternalServerError,
                            lm.BadGatewayError))


def litellm_completion(**kwargs: Any) -> Any:
    """``litellm.completion(**kwargs)``, retried by :data:`RETRY` on transient failures.

    With ``stream=True`` only the call is retried, not a stream that breaks off later.
    """
    lm = load_litellm()
    return RETRY.call(lambda: lm.completion(**kwargs), transient=is_transient)


# --------------------------------------------------------------------------- text and JSON
def ask(completion: CompletionFn | None, *, model: str, system: str, user: str,
        options: Mapping[str, Any] | None = None) -> str:
    """The reply text to one ``system`` + ``user`` exchange with ``model``.

    ``completion`` is the injectable call (``None``: :func:`litellm_completion`);
    ``options`` pass through to it (``mock_response``, ``api_base``, ``temperature``…).
    Failures of the call propagate.
    """
    call = completion or litellm_completion
    response = call(model=model, messages=[
        {"role": "system", "content": system},
        {"role": "user", "content": user},
    ], **(options or {}))
    return response_text(response)


def ask_json(completion: CompletionFn | None, *, model: str, system: str, user: str,
             options: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """:func:`ask`, then the first JSON object of the reply (``None`` when it has none)."""
    return parse_json_object(ask(completion, model=model, system=system, user=user,
                                 options=options))


def response_text(response: Any) -> str:
    """The assistant text of a litellm/OpenAI-style completion response (object or dict);
    anything else is taken as text."""
    try:
        return response.choices[0].message.content or ""
    except (AttributeError, IndexError, KeyError, TypeError):
        if isinstance(response, dict):
            return str(response["choices"][0]["message"]["content"] or "")
        return str(response)


def parse_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in ``text`` (fenced or bare), or None when there is none."""
    text = text.strip()
    fence = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    if fence:
        text = fence.group(1).strip()
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        start, end = text.find("{"), text.rfind("}")
        if start < 0 or end <= start:
            return None
        try:
            obj = json.loads(text[start:end + 1])
        except json.JSONDecodeError:
            return None
    return obj if isinstance(obj, dict) else None


# --------------------------------------------------------------------------- chat completions
@dataclass
class ToolCall:
    """A function call the model asked for; ``arguments`` is its JSON text."""

    id: str
    name: str
    arguments: str


@dataclass
class Completion:
    """One model answer: text, or tool calls to run before it answers again."""

    text: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: dict[str, int] | None = None


def _get(obj: Any, key: str, default: Any = None) -> Any:
    """Attribute or key: litellm returns objects, scripted test completions may return dicts."""
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default)


def _usage(usage: Any) -> dict[str, int] | None:
    if usage is None:
        return None
    return {k: int(_get(usage, k) or 0)
            for k in ("prompt_tokens", "completion_tokens", "total_tokens")}


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
    return Completion(text=_get(message, "content") or "", tool_calls=calls,
                      usage=_usage(_get(response, "usage")))


class ChunkAssembler:
    """Collects OpenAI/litellm streaming chunks into one :class:`Completion`: content
    deltas, tool-call deltas merged by ``index`` (arguments arrive in pieces), usage."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[int, dict[str, str]] = {}
        self.usage: dict[str, int] | None = None

    def add(self, chunk: Any) -> str:
        """Take one chunk; returns its text delta ('' when it has none)."""
        self.usage = _usage(_get(chunk, "usage")) or self.usage
        choices = _get(chunk, "choices") or []
        if not choices:
            return ""
        delta = _get(choices[0], "delta") or {}
        for i, call in enumerate(_get(delta, "tool_calls") or []):
            index = _get(call, "index")
            slot = self.calls.setdefault(i if index is None else int(index),
                                         {"id": "", "name": "", "arguments": ""})
            function = _get(call, "function") or {}
            slot["id"] = _get(call, "id") or slot["id"]
            slot["name"] = _get(function, "name") or slot["name"]
            slot["arguments"] += _get(function, "arguments") or ""
        text = _get(delta, "content") or ""
        self.text.append(text)
        return str(text)

    def completion(self) -> Completion:
        """Everything taken so far, as one answer."""
        calls = [ToolCall(id=c["id"] or f"call_{i}", name=c["name"], arguments=c["arguments"])
                 for i, c in sorted(self.calls.items())]
        return Completion(text="".join(self.text), tool_calls=calls, usage=self.usage)


#: litellm exceptions that mean the provider refused this request, not that it is down.
_REFUSALS = {"BadRequestError", "NotFoundError"}


@dataclass
class LiteLLMModel:
    """Any litellm model (OpenAI, Anthropic, Ollama, …) through an injectable ``completion``.

    Tokens are counted with ``litellm.token_counter`` (the model's tokenizer where litellm
    knows it, else its default one); ``context_length`` is litellm's ``max_input_tokens``
    for the model (``None`` when the model is not in litellm's map).
    """

    name: str
    completion: CompletionFn = litellm_completion
    supports_tools: bool = True

    @property
    def context_length(self) -> int | None:
        try:
            info = load_litellm().get_model_info(self.name)
        except Exception:  # not in litellm's map (or litellm missing): no known limit
            return None
        limit = info.get("max_input_tokens") or info.get("max_tokens")
        return int(limit) if limit else None

    def count_tokens(self, text: str) -> int:
        return int(self._counter()(model=self.name, text=text))

    def prompt_tokens(self, messages: list[dict[str, Any]], *,
                      tools: list[dict[str, Any]] | None) -> int:
        return int(self._counter()(model=self.name, messages=messages, tools=tools or None))

    def answer_tokens(self, max_tokens: int | None) -> int:
        return max_tokens or 0  # unset: the provider answers within what is left

    def _counter(self) -> Callable[..., int]:
        try:
            return load_litellm().token_counter  # type: ignore[no-any-return]
        except ImportError as exc:
            raise BackendUnavailable("litellm models need the `llm` extra "
                                     "(pip install 'memos-memory[llm]')",
                                     details={"model": self.name}) from exc

    def _kwargs(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
                max_tokens: int | None, temperature: float | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"model": self.name, "messages": messages}
        if tools:
            kwargs["tools"] = tools
        if max_tokens is not None:
            kwargs["max_tokens"] = max_tokens
        if temperature is not None:
            kwargs["temperature"] = temperature
        return kwargs

    def _unavailable(self, exc: Exception) -> MemosError:
        """The provider's failure as ours: a request it refuses (an unknown model or
        provider, a bad parameter: litellm's ``BadRequestError`` and ``NotFoundError``,
        named so litellm need not be imported) is ``InvalidInput``; anything else
        (network, auth, rate limits, outages) is ``BackendUnavailable``."""
        message = getattr(exc, "message", None) or str(exc)
        details = {"model": self.name, "exception": type(exc).__name__}
        if _REFUSALS & {cls.__name__ for cls in type(exc).__mro__}:
            return InvalidInput(f"model {self.name!r} refused the request: {message}",
                                details=details)
        return BackendUnavailable(f"model {self.name!r} failed: {message}", details=details)

    def complete(self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None,
                 max_tokens: int | None, temperature: float | None) -> Completion:
        try:
            response = self.completion(**self._kwargs(messages, tools, max_tokens, temperature))
        except Exception as exc:  # provider, network, auth, unknown model: all one boundary
            raise self._unavailable(exc) from exc
        try:
            return parse_completion(response)
        except (AttributeError, IndexError, KeyError, TypeError) as exc:
            raise BackendUnavailable(f"model {self.name!r} returned an unreadable response",
                                     details={"model": self.name}) from exc

    def stream(self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None,
               max_tokens: int | None, temperature: float | None
               ) -> Iterator[str | Completion]:
        """Sends the request now (a refusal raises here) and returns the chunk reader."""
        kwargs = self._kwargs(messages, tools, max_tokens, temperature)
        kwargs["stream"] = True
        if self._reports_stream_usage():
            kwargs["stream_options"] = {"include_usage": True}
        try:
            chunks = self.completion(**kwargs)
        except Exception as exc:
            raise self._unavailable(exc) from exc
        return self._read(chunks, messages, tools)

    def _read(self, chunks: Any, messages: list[dict[str, Any]],
              tools: list[dict[str, Any]] | None) -> Iterator[str | Completion]:
        if _get(chunks, "choices") is not None:  # a provider that ignored stream=True
            done = parse_completion(chunks)
            if done.text:
                yield done.text
            yield done
            return
        parts = ChunkAssembler()
        try:
            for chunk in chunks:
                text = parts.add(chunk)
                if text:
                    yield text
        except MemosError:
            raise
        except Exception as exc:
            raise self._unavailable(exc) from exc
        done = parts.completion()
        if done.usage is None:  # the provider reports no usage when streaming: count it
            done.usage = self._count_usage(messages, tools, done.text)
        yield done

    def _count_usage(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
                     text: str) -> dict[str, int] | None:
        try:
            prompt = self.prompt_tokens(messages, tools=tools)
            answer = self.count_tokens(text) if text else 0
        except Exception:  # usage is a report: a counter that cannot read it leaves it out
            return None
        return {"prompt_tokens": prompt, "completion_tokens": answer,
                "total_tokens": prompt + answer}

    def _reports_stream_usage(self) -> bool:
        try:
            lm = load_litellm()
            model, provider, _, _ = lm.get_llm_provider(self.name)
            supported = lm.get_supported_openai_params(model=model, custom_llm_provider=provider)
        except Exception:
            return False
        return "stream_options" in (supported or [])
