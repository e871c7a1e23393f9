"""The memos SDK: :class:`MemosClient` (sync) and :class:`AsyncMemosClient` (async).

Both share one pure core (:class:`_Call` builders and :func:`_parse`): request building,
response parsing and error mapping; only sending differs. Errors are the library's own
classes (``NotFound``, ``Conflict``, ``InvalidInput``, ``Unauthorized``, …), so code catches
the same exceptions in-process and over HTTP. Imports only httpx, memos.types, memos.errors.

>>> with MemosClient("http://127.0.0.1:8000") as client:          # doctest: +SKIP
...     client.create_cube(id="demo")
...     client.add_messages("demo", session_id="s1",
...                         messages=[{"role": "user", "speaker": "Ana",
...                                    "content": "I moved to Berlin"}])
...     client.search("demo", query="Where does Ana live?").hits[0].unit.text
...     client.chat("demo", messages=[{"role": "user", "content": "Where do I live?"}]).reply

Model memory (bundled backbone): ``create_activation`` / ``list_activations`` /
``get_activation`` / ``refresh_activations``; ``create_adapter`` (a :class:`TrainingJob` to
poll with ``adapter_job``, or the adapter with ``sync=True``) / ``list_adapters`` /
``get_adapter``; ``scheduler_state`` / ``scheduler_tick``; ``tools`` (the memory tools'
OpenAI-style schemas). ``chat`` returns the whole answer; ``chat_stream`` yields it as the
model generates, as :class:`~memos.types.ChatStreamEvent` s — one ``start`` (citations,
truncation), ``delta`` s (text), one ``response`` (the whole answer, usage included) — a
sync iterator on :class:`MemosClient`, an async one on :class:`AsyncMemosClient`:

>>> for event in client.chat_stream("demo", messages=[{"role": "user",  # doctest: +SKIP
...                                                    "content": "Where do I live?"}]):
...     print(event.text, end="", flush=True)
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

import httpx
from pydantic import TypeAdapter, ValidationError

from memos.errors import ERROR_TYPES, BackendUnavailable, InvalidInput, MemosError
from memos.types import (
    BUNDLED,
    ActivationCreate,
    ActivationPublic,
    ActivationRefresh,
    AdapterCreate,
    AdapterPublic,
    AssociationMixture,
    ChatRequest,
    ChatResponse,
    ChatStreamEvent,
    ClusterMap,
    ContextResponse,
    CubeExport,
    CubePublic,
    CubeStats,
    DeletionReport,
    Filters,
    Health,
    IngestResult,
    JobPage,
    JobPublic,
    MemoryOptions,
    MemoryPage,
    MemoryPublic,
    ProvenancePublic,
    ReembedJob,
    SchedulerState,
    SchedulerTick,
    SearchResponse,
    TrainingJob,
)

__all__ = ["MemosClient", "AsyncMemosClient", "DEFAULT_BASE_URL"]

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
T = TypeVar("T")


@dataclass(frozen=True)
class _Call(Generic[T]):
    """One API call: what to send and how to read the answer."""

    method: str
    path: str
    parse: Callable[[Any], T]
    json: Any = None
    params: Mapping[str, Any] = field(default_factory=dict)


def _model(cls: Any) -> Callable[[Any], Any]:
    adapter = TypeAdapter(cls)
    return adapter.validate_python


def _none(_: Any) -> None:
    return None


def _drop_none(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _filters(filters: Filters | Mapping[str, Any] | None) -> dict[str, Any]:
    """``filters`` as request JSON; a malformed one raises ``InvalidInput`` (as the server's
    422 would) before any I/O."""
    if filters is None:
        return {}
    if isinstance(filters, Filters):
        return filters.model_dump(mode="json", exclude_none=True)
    if not isinstance(filters, Mapping):
        raise InvalidInput(f"filters: expected a Filters or a mapping, not "
                           f"{type(filters).__name__}", details={"errors": ["filters"]})
    try:
        model = Filters.model_validate(dict(filters))
    except ValidationError as exc:
        raise _invalid(exc, prefix="filters.") from None
    return model.model_dump(mode="json", exclude_none=True)


def _invalid(exc: ValidationError, *, prefix: str = "") -> InvalidInput:
    """The ``InvalidInput`` for a local validation failure: one ``loc: msg`` per problem."""
    problems = [f"{prefix}{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                for e in exc.errors()]
    return InvalidInput("; ".join(problems), details={"errors": problems})


def _iso(value: datetime | str | None) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


def _body(schema: Any, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a request body locally (bad input fails before any I/O, as the server's
    ``InvalidInput`` would) and dump it as JSON, defaults left to the server."""
    try:
        model = schema.model_validate(_drop_none(fields))
    except ValidationError as exc:
        raise _invalid(exc) from None
    return dict(model.model_dump(mode="json", exclude_unset=True))


def _adapter_or_job(data: Any) -> AdapterPublic | TrainingJob:
    return (AdapterPublic.model_validate(data) if isinstance(data, dict) and "unit" in data
            else TrainingJob.model_validate(data))


def _tool_list(data: Any) -> list[dict[str, Any]]:
    return list(data["tools"])


def _parse(response: httpx.Response, call: _Call[T]) -> T:
    """Map an HTTP response to the call's result or to the library's error class."""
    if response.status_code >= 400:
        try:
            err = response.json()["error"]
            cls = ERROR_TYPES.get(err.get("type"), MemosError)
            raise cls(err.get("message", response.reason_phrase), details=err.get("details"))
        except (ValueError, KeyError, TypeError):
            cls = BackendUnavailable if response.status_code >= 500 else MemosError
            raise cls(f"HTTP {response.status_code}: {response.text[:200]}") from None
    return call.parse(response.json() if response.content else None)


class _SSEDecoder:
    """Server-Sent Events from the lines of a response: ``event`` and ``data`` fields (data
    lines joined by newlines), comments and other fields ignored, a blank line ends one."""

    def __init__(self) -> None:
        self._event = "message"
        self._data: list[str] = []

    def feed(self, line: str) -> tuple[str, str] | None:
        """Take one line (without its ending); returns ``(event, data)`` when one is complete."""
        if not line:
            done = (self._event, "\n".join(self._data)) if self._data else None
            self._event, self._data = "message", []
            return done
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None


def _chat_event(event: str, data: str) -> ChatStreamEvent | None:
    """One Server-Sent Event of ``/chat`` as a :class:`ChatStreamEvent`; an ``error`` event
    raises the library's error class; an event this client does not know is skipped."""
    payload = json.loads(data)
    if event == "error":
        err = payload.get("error") or {}
        cls = ERROR_TYPES.get(str(err.get("type")), MemosError)
        raise cls(err.get("message", "chat stream failed"), details=err.get("details"))
    if event not in ("start", "delta", "response"):
        return None
    return ChatStreamEvent.from_wire(event, payload)


class _Calls:
    """Pure request builders for every route (no I/O)."""

    @staticmethod
    def health() -> _Call[Health]:
        return _Call("GET", "/healthz", _model(Health))

    @staticmethod
    def create_cube(id: str | None, name: str | None, description: str | None,
                    metadata: Mapping[str, Any] | None,
                    embedder: Mapping[str, Any] | None = None) -> _Call[CubePublic]:
        body = _drop_none({"id": id, "name": name, "description": description,
                           "metadata": dict(metadata) if metadata else None,
                           "embedder": dict(embedder) if embedder else None})
        return _Call("POST", "/v1/cubes", _model(CubePublic), json=body)

    @staticmethod
    def switch_embedder(cube_id: str, embedder: Mapping[str, Any]) -> _Call[ReembedJob]:
        return _Call("POST", f"/v1/cubes/{cube_id}/embedder", _model(ReembedJob),
                     json={"embedder": dict(embedder)})

    @staticmethod
    def embedder_job(cube_id: str, job_id: int) -> _Call[ReembedJob]:
        return _Call("GET", f"/v1/cubes/{cube_id}/embedder/jobs/{job_id}", _model(ReembedJob))

    @staticmethod
    def list_cubes() -> _Call[list[CubePublic]]:
        return _Call("GET", "/v1/cubes", _model(list[CubePublic]))

    @staticmethod
    def get_cube(cube_id: str) -> _Call[CubePublic]:
        return _Call("GET", f"/v1/cubes/{cube_id}", _model(CubePublic))

    @staticmethod
    def delete_cube(cube_id: str) -> _Call[None]:
        return _Call("DELETE", f"/v1/cubes/{cube_id}", _none)

    @staticmethod
    def export_cube(cube_id: str, include_payloads: bool) -> _Call[CubeExport]:
        return _Call("GET", f"/v1/cubes/{cube_id}/export", _model(CubeExport),
                     params={"include_payloads": "true"} if include_payloads else {})

    @staticmethod
    def import_cube(data: CubeExport | Mapping[str, Any], id: str | None,
                    new_ids: bool) -> _Call[CubePublic]:
        payload = (data.model_dump(mode="json") if isinstance(data, CubeExport) else dict(data))
        return _Call("POST", "/v1/cubes/import", _model(CubePublic),
                     json=_drop_none({"id": id, "new_ids": new_ids, "data": payload}))

    @staticmethod
    def add_messages(cube_id: str, session_id: str, messages: Sequence[Mapping[str, Any]],
                     sync: bool) -> _Call[IngestResult]:
        body = {"session_id": session_id, "sync": sync,
                "messages": [_drop_none({**m, "timestamp": _iso(m.get("timestamp"))})
                             for m in messages]}
        return _Call("POST", f"/v1/cubes/{cube_id}/messages", _model(IngestResult), json=body)

    @staticmethod
    def add_memory(cube_id: str, body: Mapping[str, Any]) -> _Call[MemoryPublic]:
        return _Call("POST", f"/v1/cubes/{cube_id}/memories", _model(MemoryPublic),
                     json=_drop_none({k: _iso(v) if isinstance(v, datetime) else v
                                      for k, v in body.items()}))

    @staticmethod
    def list_memories(cube_id: str, filters: Filters | Mapping[str, Any] | None, offset: int,
                      limit: int) -> _Call[MemoryPage]:
        params: dict[str, Any] = {**_filters(filters), "offset": offset, "limit": limit}
        if "tags" in params:
            params["tag"] = params.pop("tags")
        return _Call("GET", f"/v1/cubes/{cube_id}/memories", _model(MemoryPage), params=params)

    @staticmethod
    def get_memory(cube_id: str, memory_id: str) -> _Call[MemoryPublic]:
        return _Call("GET", f"/v1/cubes/{cube_id}/memories/{memory_id}", _model(MemoryPublic))

    @staticmethod
    def update_memory(cube_id: str, memory_id: str,
                      changes: Mapping[str, Any]) -> _Call[MemoryPublic]:
        body = {k: _iso(v) if isinstance(v, datetime) else v for k, v in changes.items()}
        return _Call("PATCH", f"/v1/cubes/{cube_id}/memories/{memory_id}",
                     _model(MemoryPublic), json=body)

    @staticmethod
    def delete_memory(cube_id: str, memory_id: str, purge: bool) -> _Call[DeletionReport]:
        return _Call("DELETE", f"/v1/cubes/{cube_id}/memories/{memory_id}",
                     _model(DeletionReport),
                     params={"purge": "true"} if purge else {})

    @staticmethod
    def session_memories(cube_id: str, session_id: str,
                         granularity: str) -> _Call[list[MemoryPublic]]:
        return _Call("GET", f"/v1/cubes/{cube_id}/sessions/{session_id}/memories",
                     _model(list[MemoryPublic]), params={"granularity": granularity})

    @staticmethod
    def history(cube_id: str, memory_id: str) -> _Call[list[MemoryPublic]]:
        return _Call("GET", f"/v1/cubes/{cube_id}/memories/{memory_id}/history",
                     _model(list[MemoryPublic]))

    @staticmethod
    def provenance(cube_id: str, memory_id: str) -> _Call[ProvenancePublic]:
        return _Call("GET", f"/v1/cubes/{cube_id}/memories/{memory_id}/provenance",
                     _model(ProvenancePublic))

    @staticmethod
    def search(cube_id: str, query: str, top_k: int, filters: Filters | Mapping[str, Any] | None,
               explain: bool, mode: str = "auto") -> _Call[SearchResponse]:
        body = {"query": query, "top_k": top_k, "filters": _filters(filters), "explain": explain,
                "mode": mode}
        return _Call("POST", f"/v1/cubes/{cube_id}/search", _model(SearchResponse), json=body)

    @staticmethod
    def context(cube_id: str, query: str, max_tokens: int, top_k: int,
                filters: Filters | Mapping[str, Any] | None) -> _Call[ContextResponse]:
        body = {"query": query, "max_tokens": max_tokens, "top_k": top_k,
                "filters": _filters(filters)}
        return _Call("POST", f"/v1/cubes/{cube_id}/context", _model(ContextResponse), json=body)

    @staticmethod
    def tools() -> _Call[list[dict[str, Any]]]:
        return _Call("GET", "/v1/tools", _tool_list)

    @staticmethod
    def chat(cube_id: str, messages: Sequence[Mapping[str, Any]], model: str,
             memory: MemoryOptions | Mapping[str, Any] | None, max_tool_rounds: int | None,
             max_tokens: int | None, temperature: float | None) -> _Call[ChatResponse]:
        if isinstance(memory, MemoryOptions):
            memory = memory.model_dump()
        body = _body(ChatRequest, {"messages": [dict(m) for m in messages], "model": model,
                                   "memory": memory, "max_tool_rounds": max_tool_rounds,
                                   "max_tokens": max_tokens, "temperature": temperature})
        return _Call("POST", f"/v1/cubes/{cube_id}/chat", _model(ChatResponse), json=body)

    @staticmethod
    def chat_stream(cube_id: str, messages: Sequence[Mapping[str, Any]], model: str,
                    memory: MemoryOptions | Mapping[str, Any] | None,
                    max_tool_rounds: int | None, max_tokens: int | None,
                    temperature: float | None) -> _Call[None]:
        call = _Calls.chat(cube_id, messages, model, memory, max_tool_rounds, max_tokens,
                           temperature)
        return _Call("POST", call.path, _none, json={**call.json, "stream": True})

    @staticmethod
    def create_activation(cube_id: str, fields: Mapping[str, Any]) -> _Call[ActivationPublic]:
        return _Call("POST", f"/v1/cubes/{cube_id}/activations", _model(ActivationPublic),
                     json=_body(ActivationCreate, fields))

    @staticmethod
    def list_activations(cube_id: str,
                         include_inactive: bool) -> _Call[list[ActivationPublic]]:
        return _Call("GET", f"/v1/cubes/{cube_id}/activations", _model(list[ActivationPublic]),
                     params={"include_inactive": "true"} if include_inactive else {})

    @staticmethod
    def get_activation(cube_id: str, unit_id: str) -> _Call[ActivationPublic]:
        return _Call("GET", f"/v1/cubes/{cube_id}/activations/{unit_id}",
                     _model(ActivationPublic))

    @staticmethod
    def refresh_activations(cube_id: str, background: bool) -> _Call[ActivationRefresh]:
        return _Call("POST", f"/v1/cubes/{cube_id}/activations/refresh",
                     _model(ActivationRefresh),
                     params={"background": "true"} if background else {})

    @staticmethod
    def create_adapter(cube_id: str,
                       fields: Mapping[str, Any]) -> _Call[AdapterPublic | TrainingJob]:
        return _Call("POST", f"/v1/cubes/{cube_id}/adapters", _adapter_or_job,
                     json=_body(AdapterCreate, fields))

    @staticmethod
    def adapter_job(cube_id: str, job_id: int) -> _Call[TrainingJob]:
        return _Call("GET", f"/v1/cubes/{cube_id}/adapters/jobs/{job_id}", _model(TrainingJob))

    @staticmethod
    def list_adapters(cube_id: str, include_inactive: bool) -> _Call[list[AdapterPublic]]:
        return _Call("GET", f"/v1/cubes/{cube_id}/adapters", _model(list[AdapterPublic]),
                     params={"include_inactive": "true"} if include_inactive else {})

    @staticmethod
    def get_adapter(cube_id: str, unit_id: str) -> _Call[AdapterPublic]:
        return _Call("GET", f"/v1/cubes/{cube_id}/adapters/{unit_id}", _model(AdapterPublic))

    @staticmethod
    def scheduler_state(cube_id: str) -> _Call[SchedulerState]:
        return _Call("GET", f"/v1/cubes/{cube_id}/scheduler", _model(SchedulerState))

    @staticmethod
    def scheduler_tick(cube_id: str, background: bool) -> _Call[SchedulerTick]:
        return _Call("POST", f"/v1/cubes/{cube_id}/scheduler/tick", _model(SchedulerTick),
                     params={"background": "true"} if background else {})

    @staticmethod
    def cube_stats(cube_id: str) -> _Call[CubeStats]:
        return _Call("GET", f"/v1/cubes/{cube_id}/stats", _model(CubeStats))

    @staticmethod
    def cluster_map(cube_id: str, granularity: str, limit: int) -> _Call[ClusterMap]:
        return _Call("GET", f"/v1/cubes/{cube_id}/structure/clusters", _model(ClusterMap),
                     params={"granularity": granularity, "limit": limit})

    @staticmethod
    def association_mixture(cube_id: str, memory_id: str) -> _Call[AssociationMixture]:
        return _Call("GET", f"/v1/cubes/{cube_id}/structure/association/{memory_id}",
                     _model(AssociationMixture))

    @staticmethod
    def list_jobs(cube_id: str, status: str | None, offset: int,
                  limit: int) -> _Call[JobPage]:
        return _Call("GET", f"/v1/cubes/{cube_id}/jobs", _model(JobPage),
                     params=_drop_none({"status": status, "offset": offset, "limit": limit}))

    @staticmethod
    def retry_job(cube_id: str, job_id: int) -> _Call[JobPublic]:
        return _Call("POST", f"/v1/cubes/{cube_id}/jobs/{job_id}/retry", _model(JobPublic))


def _headers(api_key: str | None) -> dict[str, str]:
    key = api_key if api_key is not None else os.environ.get("MEMOS_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


class MemosClient:
    """Synchronous client. ``transport`` lets tests talk to an in-process app."""

    def __init__(self, base_url: str = DEFAULT_BASE_URL, *, api_key: str | None = None,
                 timeout: float = 30.0, transport: httpx.BaseTransport | None = None) -> None:
        self._http = httpx.Client(base_url=base_url, headers=_headers(api_key), timeout=timeout,
                                  transport=transport)

    def _send(self, call: _Call[T]) -> T:
        try:
            response = self._http.request(call.method, call.path, json=call.json,
                                          params=call.params or None)
        except httpx.TransportError as exc:
            raise BackendUnavailable(f"cannot reach memos at {self._http.base_url}: {exc}") from exc
        return _parse(response, call)

    def _stream(self, call: _Call[None]) -> Iterator[ChatStreamEvent]:
        try:
            with self._http.stream(call.method, call.path, json=call.json,
                                   params=call.params or None) as response:
                if response.status_code >= 400:
                    response.read()
                    _parse(response, call)
                decoder = _SSEDecoder()
                for line in response.iter_lines():
                    sse = decoder.feed(line)
                    event = _chat_event(*sse) if sse else None
                    if event is not None:
                        yield event
        except httpx.TransportError as exc:
            raise BackendUnavailable(f"cannot reach memos at {self._http.base_url}: {exc}") from exc

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> MemosClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def health(self) -> Health:
        return self._send(_Calls.health())

    def create_cube(self, id: str | None = None, *, name: str | None = None,
                    description: str | None = None,
                    metadata: Mapping[str, Any] | None = None,
                    embedder: Mapping[str, Any] | None = None) -> CubePublic:
        """``embedder``: the cube's embedder spec (README "Embedders"); default: the
        server's."""
        return self._send(_Calls.create_cube(id, name, description, metadata, embedder))

    def switch_embedder(self, cube_id: str, embedder: Mapping[str, Any]) -> ReembedJob:
        """Queue the cube's re-embed job with another embedder spec; poll it with
        :meth:`embedder_job`. Searches use the old vectors until it switches."""
        return self._send(_Calls.switch_embedder(cube_id, embedder))

    def embedder_job(self, cube_id: str, job_id: int) -> ReembedJob:
        """Status and progress of a re-embed job."""
        return self._send(_Calls.embedder_job(cube_id, job_id))

    def list_cubes(self) -> list[CubePublic]:
        return self._send(_Calls.list_cubes())

    def get_cube(self, cube_id: str) -> CubePublic:
        return self._send(_Calls.get_cube(cube_id))

    def delete_cube(self, cube_id: str) -> None:
        return self._send(_Calls.delete_cube(cube_id))

    def export_cube(self, cube_id: str, *, include_payloads: bool = False) -> CubeExport:
        """The cube as JSON (``include_payloads``: also its KV caches and adapters)."""
        return self._send(_Calls.export_cube(cube_id, include_payloads))

    def import_cube(self, data: CubeExport | Mapping[str, Any], *, id: str | None = None,
                    new_ids: bool = False) -> CubePublic:
        return self._send(_Calls.import_cube(data, id, new_ids))

    def add_messages(self, cube_id: str, *, session_id: str,
                     messages: Sequence[Mapping[str, Any]], sync: bool = False) -> IngestResult:
        return self._send(_Calls.add_messages(cube_id, session_id, messages, sync))

    def add_memory(self, cube_id: str, *, text: str, **fields: Any) -> MemoryPublic:
        return self._send(_Calls.add_memory(cube_id, {"text": text, **fields}))

    def list_memories(self, cube_id: str, *, filters: Filters | Mapping[str, Any] | None = None,
                      offset: int = 0, limit: int = 50) -> MemoryPage:
        return self._send(_Calls.list_memories(cube_id, filters, offset, limit))

    def get_memory(self, cube_id: str, memory_id: str) -> MemoryPublic:
        return self._send(_Calls.get_memory(cube_id, memory_id))

    def update_memory(self, cube_id: str, memory_id: str, **changes: Any) -> MemoryPublic:
        return self._send(_Calls.update_memory(cube_id, memory_id, changes))

    def delete_memory(self, cube_id: str, memory_id: str, *,
                      purge: bool = False) -> DeletionReport:
        return self._send(_Calls.delete_memory(cube_id, memory_id, purge))

    def session_memories(self, cube_id: str, session_id: str, *,
                         granularity: str = "fact") -> list[MemoryPublic]:
        return self._send(_Calls.session_memories(cube_id, session_id, granularity))

    def history(self, cube_id: str, memory_id: str) -> list[MemoryPublic]:
        return self._send(_Calls.history(cube_id, memory_id))

    def provenance(self, cube_id: str, memory_id: str) -> ProvenancePublic:
        return self._send(_Calls.provenance(cube_id, memory_id))

    def search(self, cube_id: str, *, query: str, top_k: int = 10,
               filters: Filters | Mapping[str, Any] | None = None,
               explain: bool = False, mode: str = "auto") -> SearchResponse:
        """The ``top_k`` best units for ``query``; ``mode``: ``auto``, ``router``,
        ``hybrid`` or ``dense`` (see :class:`memos.types.SearchRequest`)."""
        return self._send(_Calls.search(cube_id, query, top_k, filters, explain, mode))

    def context(self, cube_id: str, *, query: str, max_tokens: int = 512, top_k: int = 20,
                filters: Filters | Mapping[str, Any] | None = None) -> ContextResponse:
        return self._send(_Calls.context(cube_id, query, max_tokens, top_k, filters))

    def tools(self) -> list[dict[str, Any]]:
        """OpenAI-style function schemas of the memory tools."""
        return self._send(_Calls.tools())

    def chat(self, cube_id: str, *, messages: Sequence[Mapping[str, Any]],
             model: str = BUNDLED, memory: MemoryOptions | Mapping[str, Any] | None = None,
             max_tool_rounds: int | None = None, max_tokens: int | None = None,
             temperature: float | None = None) -> ChatResponse:
        """One assistant turn with the cube's memory (``memory``: ``plaintext``,
        ``activation``, ``parametric``); the reply and every memory unit it was shown."""
        return self._send(_Calls.chat(cube_id, messages, model, memory, max_tool_rounds,
                                   max_tokens, temperature))

    def chat_stream(self, cube_id: str, *, messages: Sequence[Mapping[str, Any]],
                    model: str = BUNDLED,
                    memory: MemoryOptions | Mapping[str, Any] | None = None,
                    max_tool_rounds: int | None = None, max_tokens: int | None = None,
                    temperature: float | None = None) -> Iterator[ChatStreamEvent]:
        """:meth:`chat` as it is generated: a ``start`` event (``memory_unit_ids``,
        ``truncated``), ``delta`` events (``text``), a ``response`` event (``response``,
        usage included). Arguments are checked now; the request is sent when iteration
        starts; error statuses and ``error`` events raise the library's error classes.
        """
        return self._stream(_Calls.chat_stream(cube_id, messages, model, memory,
                                               max_tool_rounds, max_tokens, temperature))

    def create_activation(self, cube_id: str, *, unit_ids: Sequence[str] | None = None,
                          query: str | None = None, max_tokens: int | None = None,
                          top_k: int | None = None) -> ActivationPublic:
        """Compile plaintext units (``unit_ids``, or those a ``query`` finds) into a KV
        cache stored as an activation unit."""
        return self._send(_Calls.create_activation(cube_id, {
            "unit_ids": list(unit_ids) if unit_ids is not None else None, "query": query,
            "max_tokens": max_tokens, "top_k": top_k}))

    def list_activations(self, cube_id: str, *,
                         include_inactive: bool = False) -> list[ActivationPublic]:
        return self._send(_Calls.list_activations(cube_id, include_inactive))

    def get_activation(self, cube_id: str, unit_id: str) -> ActivationPublic:
        return self._send(_Calls.get_activation(cube_id, unit_id))

    def refresh_activations(self, cube_id: str, *,
                            background: bool = False) -> ActivationRefresh:
        """Archive stale activation units and rebuild them now (``background``: as a job)."""
        return self._send(_Calls.refresh_activations(cube_id, background))

    def create_adapter(self, cube_id: str, *, unit_ids: Sequence[str],
                       rank: int | None = None, steps: int | None = None,
                       lr: float | None = None, n_layers: int | None = None,
                       targets: Sequence[str] | None = None, rehearsal: float | None = None,
                       sync: bool = False) -> AdapterPublic | TrainingJob:
        """Train a LoRA adapter on facts: a :class:`TrainingJob` to poll with
        :meth:`adapter_job` (its ``unit_id`` once done), or with ``sync=True`` the adapter
        itself. Unset options take the server's defaults."""
        return self._send(_Calls.create_adapter(cube_id, {
            "unit_ids": list(unit_ids), "rank": rank, "steps": steps, "lr": lr,
            "n_layers": n_layers, "targets": list(targets) if targets is not None else None,
            "rehearsal": rehearsal, "sync": sync or None}))

    def adapter_job(self, cube_id: str, job_id: int) -> TrainingJob:
        """Status and progress of a training job."""
        return self._send(_Calls.adapter_job(cube_id, job_id))

    def list_adapters(self, cube_id: str, *,
                      include_inactive: bool = False) -> list[AdapterPublic]:
        return self._send(_Calls.list_adapters(cube_id, include_inactive))

    def get_adapter(self, cube_id: str, unit_id: str) -> AdapterPublic:
        return self._send(_Calls.get_adapter(cube_id, unit_id))

    def scheduler_state(self, cube_id: str) -> SchedulerState:
        """Policy, hot units with their retrieval counts, stable facts, decision history."""
        return self._send(_Calls.scheduler_state(cube_id))

    def scheduler_tick(self, cube_id: str, *, background: bool = False) -> SchedulerTick:
        """Apply the scheduler's policy now (``background``: queue it as a job)."""
        return self._send(_Calls.scheduler_tick(cube_id, background))

    def cube_stats(self, cube_id: str) -> CubeStats:
        """Unit counts per granularity and kind (active) and per status."""
        return self._send(_Calls.cube_stats(cube_id))

    def cluster_map(self, cube_id: str, *, granularity: str = "turn",
                    limit: int = 2000) -> ClusterMap:
        """The GMM clustering of the newest ``limit`` units of ``granularity``, in 2-D."""
        return self._send(_Calls.cluster_map(cube_id, granularity, limit))

    def association_mixture(self, cube_id: str, memory_id: str) -> AssociationMixture:
        """How GMM association decided the unit's links (scores, Gaussians, threshold)."""
        return self._send(_Calls.association_mixture(cube_id, memory_id))

    def list_jobs(self, cube_id: str, *, status: str | None = None, offset: int = 0,
                  limit: int = 50) -> JobPage:
        """The cube's background jobs, newest first, with their errors."""
        return self._send(_Calls.list_jobs(cube_id, status, offset, limit))

    def retry_job(self, cube_id: str, job_id: int) -> JobPublic:
        """Queue a failed job again."""
        return self._send(_Calls.retry_job(cube_id, job_id))


class AsyncMemosClient:
    """Asynchronous client with the same methods as :class:`MemosClient`, awaited."""

    def __init__(self, base_url: str = DEFAULT_BASE_URL, *, api_key: str | None = None,
                 timeout: float = 30.0, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, headers=_headers(api_key),
                                       timeout=timeout, transport=transport)

    async def _send(self, call: _Call[T]) -> T:
        try:
            response = await self._http.request(call.method, call.path, json=call.json,
                                                params=call.params or None)
        except httpx.TransportError as exc:
            raise BackendUnavailable(f"cannot reach memos at {self._http.base_url}: {exc}") from exc
        return _parse(response, call)

    async def _stream(self, call: _Call[None]) -> AsyncIterator[ChatStreamEvent]:
        try:
            async with self._http.stream(call.method, call.path, json=call.json,
                                         params=call.params or None) as response:
                if response.status_code >= 400:
                    await response.aread()
                    _parse(response, call)
                decoder = _SSEDecoder()
                async for line in response.aiter_lines():
                    sse = decoder.feed(line)
                    event = _chat_event(*sse) if sse else None
                    if event is not None:
                        yield event
        except httpx.TransportError as exc:
            raise BackendUnavailable(f"cannot reach memos at {self._http.base_url}: {exc}") from exc

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncMemosClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def health(self) -> Health:
        return await self._send(_Calls.health())

    async def create_cube(self, id: str | None = None, *, name: str | None = None,
                          description: str | None = None,
                          metadata: Mapping[str, Any] | None = None,
                          embedder: Mapping[str, Any] | None = None) -> CubePublic:
        return await self._send(_Calls.create_cube(id, name, description, metadata,
                                                   embedder))

    async def switch_embedder(self, cube_id: str, embedder: Mapping[str, Any]) -> ReembedJob:
        return await self._send(_Calls.switch_embedder(cube_id, embedder))

    async def embedder_job(self, cube_id: str, job_id: int) -> ReembedJob:
        return await self._send(_Calls.embedder_job(cube_id, job_id))

    async def list_cubes(self) -> list[CubePublic]:
        return await self._send(_Calls.list_cubes())

    async def get_cube(self, cube_id: str) -> CubePublic:
        return await self._send(_Calls.get_cube(cube_id))

    async def delete_cube(self, cube_id: str) -> None:
        return await self._send(_Calls.delete_cube(cube_id))

    async def export_cube(self, cube_id: str, *, include_payloads: bool = False) -> CubeExport:
        """The cube as JSON (``include_payloads``: also its KV caches and adapters)."""
        return await self._send(_Calls.export_cube(cube_id, include_payloads))

    async def import_cube(self, data: CubeExport | Mapping[str, Any], *, id: str | None = None,
                          new_ids: bool = False) -> CubePublic:
        return await self._send(_Calls.import_cube(data, id, new_ids))

    async def add_messages(self, cube_id: str, *, session_id: str,
                           messages: Sequence[Mapping[str, Any]],
                           sync: bool = False) -> IngestResult:
        return await self._send(_Calls.add_messages(cube_id, session_id, messages, sync))

    async def add_memory(self, cube_id: str, *, text: str, **fields: Any) -> MemoryPublic:
        return await self._send(_Calls.add_memory(cube_id, {"text": text, **fields}))

    async def list_memories(self, cube_id: str, *,
                            filters: Filters | Mapping[str, Any] | None = None,
                            offset: int = 0, limit: int = 50) -> MemoryPage:
        return await self._send(_Calls.list_memories(cube_id, filters, offset, limit))

    async def get_memory(self, cube_id: str, memory_id: str) -> MemoryPublic:
        return await self._send(_Calls.get_memory(cube_id, memory_id))

    async def update_memory(self, cube_id: str, memory_id: str, **changes: Any) -> MemoryPublic:
        return await self._send(_Calls.update_memory(cube_id, memory_id, changes))

    async def delete_memory(self, cube_id: str, memory_id: str, *,
                            purge: bool = False) -> DeletionReport:
        return await self._send(_Calls.delete_memory(cube_id, memory_id, purge))

    async def session_memories(self, cube_id: str, session_id: str, *,
                               granularity: str = "fact") -> list[MemoryPublic]:
        return await self._send(_Calls.session_memories(cube_id, session_id, granularity))

    async def history(self, cube_id: str, memory_id: str) -> list[MemoryPublic]:
        return await self._send(_Calls.history(cube_id, memory_id))

    async def provenance(self, cube_id: str, memory_id: str) -> ProvenancePublic:
        return await self._send(_Calls.provenance(cube_id, memory_id))

    async def search(self, cube_id: str, *, query: str, top_k: int = 10,
                     filters: Filters | Mapping[str, Any] | None = None,
                     explain: bool = False, mode: str = "auto") -> SearchResponse:
        """The ``top_k`` best units for ``query``; ``mode``: ``auto``, ``router``,
        ``hybrid`` or ``dense`` (see :class:`memos.types.SearchRequest`)."""
        return await self._send(_Calls.search(cube_id, query, top_k, filters, explain, mode))

    async def context(self, cube_id: str, *, query: str, max_tokens: int = 512, top_k: int = 20,
                      filters: Filters | Mapping[str, Any] | None = None) -> ContextResponse:
        return await self._send(_Calls.context(cube_id, query, max_tokens, top_k, filters))

    async def tools(self) -> list[dict[str, Any]]:
        """OpenAI-style function schemas of the memory tools."""
        return await self._send(_Calls.tools())

    async def chat(self, cube_id: str, *, messages: Sequence[Mapping[str, Any]],
                   model: str = BUNDLED, memory: MemoryOptions | Mapping[str, Any] | None = None,
                   max_tool_rounds: int | None = None, max_tokens: int | None = None,
                   temperature: float | None = None) -> ChatResponse:
        """One assistant turn with the cube's memory (``memory``: ``plaintext``,
        ``activation``, ``parametric``); the reply and every memory unit it was shown."""
        return await self._send(_Calls.chat(cube_id, messages, model, memory, max_tool_rounds,
                                         max_tokens, temperature))

    def chat_stream(self, cube_id: str, *, messages: Sequence[Mapping[str, Any]],
                    model: str = BUNDLED,
                    memory: MemoryOptions | Mapping[str, Any] | None = None,
                    max_tool_rounds: int | None = None, max_tokens: int | None = None,
                    temperature: float | None = None) -> AsyncIterator[ChatStreamEvent]:
        """:meth:`MemosClient.chat_stream` as an async iterator (``async for``; not awaited)."""
        return self._stream(_Calls.chat_stream(cube_id, messages, model, memory,
                                               max_tool_rounds, max_tokens, temperature))

    async def create_activation(self, cube_id: str, *, unit_ids: Sequence[str] | None = None,
                                query: str | None = None, max_tokens: int | None = None,
                                top_k: int | None = None) -> ActivationPublic:
        """Compile plaintext units (``unit_ids``, or those a ``query`` finds) into a KV
        cache stored as an activation unit."""
        return await self._send(_Calls.create_activation(cube_id, {
            "unit_ids": list(unit_ids) if unit_ids is not None else None, "query": query,
            "max_tokens": max_tokens, "top_k": top_k}))

    async def list_activations(self, cube_id: str, *,
                               include_inactive: bool = False) -> list[ActivationPublic]:
        return await self._send(_Calls.list_activations(cube_id, include_inactive))

    async def get_activation(self, cube_id: str, unit_id: str) -> ActivationPublic:
        return await self._send(_Calls.get_activation(cube_id, unit_id))

    async def refresh_activations(self, cube_id: str, *,
                                  background: bool = False) -> ActivationRefresh:
        """Archive stale activation units and rebuild them now (``background``: as a job)."""
        return await self._send(_Calls.refresh_activations(cube_id, background))

    async def create_adapter(self, cube_id: str, *, unit_ids: Sequence[str],
                             rank: int | None = None, steps: int | None = None,
                             lr: float | None = None, n_layers: int | None = None,
                             targets: Sequence[str] | None = None, rehearsal: float | None = None,
                             sync: bool = False) -> AdapterPublic | TrainingJob:
        """Train a LoRA adapter on facts: a :class:`TrainingJob` to poll with
        :meth:`adapter_job` (its ``unit_id`` once done), or with ``sync=True`` the adapter
        itself. Unset options take the server's defaults."""
        return await self._send(_Calls.create_adapter(cube_id, {
            "unit_ids": list(unit_ids), "rank": rank, "steps": steps, "lr": lr,
            "n_layers": n_layers, "targets": list(targets) if targets is not None else None,
            "rehearsal": rehearsal, "sync": sync or None}))

    async def adapter_job(self, cube_id: str, job_id: int) -> TrainingJob:
        """Status and progress of a training job."""
        return await self._send(_Calls.adapter_job(cube_id, job_id))

    async def list_adapters(self, cube_id: str, *,
                            include_inactive: bool = False) -> list[AdapterPublic]:
        return await self._send(_Calls.list_adapters(cube_id, include_inactive))

    async def get_adapter(self, cube_id: str, unit_id: str) -> AdapterPublic:
        return await self._send(_Calls.get_adapter(cube_id, unit_id))

    async def scheduler_state(self, cube_id: str) -> SchedulerState:
        """Policy, hot units with their retrieval counts, stable facts, decision history."""
        return await self._send(_Calls.scheduler_state(cube_id))

    async def scheduler_tick(self, cube_id: str, *, background: bool = False) -> SchedulerTick:
        """Apply the scheduler's policy now (``background``: queue it as a job)."""
        return await self._send(_Calls.scheduler_tick(cube_id, background))

    async def cube_stats(self, cube_id: str) -> CubeStats:
        """Unit counts per granularity and kind (active) and per status."""
        return await self._send(_Calls.cube_stats(cube_id))

    async def cluster_map(self, cube_id: str, *, granularity: str = "turn",
                          limit: int = 2000) -> ClusterMap:
        """The GMM clustering of the newest ``limit`` units of ``granularity``, in 2-D."""
        return await self._send(_Calls.cluster_map(cube_id, granularity, limit))

    async def association_mixture(self, cube_id: str, memory_id: str) -> AssociationMixture:
        """How GMM association decided the unit's links (scores, Gaussians, threshold)."""
        return await self._send(_Calls.association_mixture(cube_id, memory_id))

    async def list_jobs(self, cube_id: str, *, status: str | None = None, offset: int = 0,
                        limit: int = 50) -> JobPage:
        """The cube's background jobs, newest first, with their errors."""
        return await self._send(_Calls.list_jobs(cube_id, status, offset, limit))

    async def retry_job(self, cube_id: str, job_id: int) -> JobPublic:
        """Queue a failed job again."""
        return await self._send(_Calls.retry_job(cube_id, job_id))
