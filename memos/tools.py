"""Memory as tools an LLM can call: OpenAI-style function schemas and one executor.

Five tools, each defined once by a pydantic argument model (the JSON schema handed to the
LLM is generated from it, so schema and validation never drift):

    search_memory(query, top_k?, granularity?)   → {"memories": [{id, text, score, …}]}
    add_memory(text, tags?)                      → {"memory": {id, text, …}}
    update_memory(memory_id, text)               → {"memory": {…new version…}, "replaces": id}
    delete_memory(memory_id)                     → {"deleted": id}
    get_context(query, max_tokens?)              → {"context": lines, "unit_ids": [...], "tokens"}

:func:`run_tool` executes a call against any :class:`MemoryBackend` (the library's
:class:`~memos.cube.MemCube` through :class:`CubeBackend`, or a running server through the
SDK in :mod:`memos.mcp_server`). It never raises: an unknown tool, bad arguments or a memos
error comes back as ``{"error": {"type", "message", "details"}}`` (the API's wire form), so
one bad call cannot kill a chat loop, and the model can read the error and retry.

>>> [t["function"]["name"] for t in tool_schemas()]
['search_memory', 'add_memory', 'update_memory', 'delete_memory', 'get_context']
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from memos.errors import InvalidInput, MemosError
from memos.types import (
    ContextRequest,
    ContextResponse,
    Filters,
    Granularity,
    MemoryCreate,
    MemoryPublic,
    MemoryUpdate,
    SearchRequest,
    SearchResponse,
)

if TYPE_CHECKING:
    from memos.cube import MemCube

__all__ = [
    "TOOL_NAMES",
    "MemoryBackend",
    "CubeBackend",
    "tool_schemas",
    "run_tool",
    "execute_tool",
    "result_unit_ids",
    "SearchMemoryArgs",
    "AddMemoryArgs",
    "UpdateMemoryArgs",
    "DeleteMemoryArgs",
    "GetContextArgs",
]

log = logging.getLogger("memos.tools")

#: Extractor recorded on memories written by the ``add_memory`` tool.
TOOL_EXTRACTOR = "tool"


# --------------------------------------------------------------------------- arguments
def _nonblank(value: str, field: str) -> str:
    if not value.strip():
        raise ValueError(f"{field} must not be empty or whitespace")
    return value


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchMemoryArgs(_Args):
    query: str = Field(min_length=1,
                       description="What to look for, in natural language.")
    top_k: int = Field(default=5, ge=1, le=100, description="How many memories to return.")
    granularity: Granularity | None = Field(
        default=None, description="Only memories of this granularity (default: any).")

    @field_validator("query")
    @classmethod
    def _nonblank(cls, v: str) -> str:
        return _nonblank(v, "query")


class AddMemoryArgs(_Args):
    text: str = Field(min_length=1,
                      description="The fact to remember, as one self-contained sentence.")
    tags: list[str] = Field(default_factory=list,
                            description="Optional labels for filtering later.")


class UpdateMemoryArgs(_Args):
    memory_id: str = Field(min_length=1, description="Id of the memory to correct.")
    text: str = Field(min_length=1,
                      description="The corrected text; the old version stays in the history.")


class DeleteMemoryArgs(_Args):
    memory_id: str = Field(min_length=1, description="Id of the memory to forget.")


class GetContextArgs(_Args):
    query: str = Field(min_length=1,
                       description="What the context is for, in natural language.")
    max_tokens: int = Field(default=512, ge=16, le=32_000,
                            description="Token budget of the returned context.")

    @field_validator("query")
    @classmethod
    def _nonblank(cls, v: str) -> str:
        return _nonblank(v, "query")


# --------------------------------------------------------------------------- backends
class MemoryBackend(Protocol):
    """Where tool calls land: one cube, reached in-process or over HTTP."""

    def search(self, *, query: str, top_k: int,
               granularity: Granularity | None) -> SearchResponse: ...

    def add(self, *, text: str, tags: list[str]) -> MemoryPublic: ...

    def update(self, *, memory_id: str, text: str) -> MemoryPublic: ...

    def delete(self, *, memory_id: str) -> None: ...

    def context(self, *, query: str, max_tokens: int) -> ContextResponse: ...


@dataclass
class CubeBackend:
    """One cube of one tenant in the library's :class:`~memos.cube.MemCube`."""

    memos: MemCube
    cube_id: str
    tenant: str

    def search(self, *, query: str, top_k: int,
               granularity: Granularity | None) -> SearchResponse:
        filters = Filters(granularity=[granularity] if granularity else None)
        return self.memos.search(self.cube_id, SearchRequest(query=query, top_k=top_k,
                                                             filters=filters), tenant=self.tenant)

    def add(self, *, text: str, tags: list[str]) -> MemoryPublic:
        body = MemoryCreate(text=text, tags=tags, extractor=TOOL_EXTRACTOR)
        return self.memos.create_memory(self.cube_id, body, tenant=self.tenant)

    def update(self, *, memory_id: str, text: str) -> MemoryPublic:
        return self.memos.update_memory(self.cube_id, memory_id, MemoryUpdate(text=text),
                                        tenant=self.tenant)

    def delete(self, *, memory_id: str) -> None:
        self.memos.delete_memory(self.cube_id, memory_id, tenant=self.tenant)

    def context(self, *, query: str, max_tokens: int) -> ContextResponse:
        return self.memos.context(self.cube_id, ContextRequest(query=query, max_tokens=max_tokens),
                                  tenant=self.tenant)


# --------------------------------------------------------------------------- tools
def _brief(unit: MemoryPublic) -> dict[str, Any]:
    """What a model needs of a unit: id to cite, text, and when/who when known."""
    out: dict[str, Any] = {"id": unit.id, "text": unit.text, "granularity": unit.granularity.value}
    if unit.speaker:
        out["speaker"] = unit.speaker
    if unit.valid_from:
        out["valid_from"] = unit.valid_from.isoformat()
    if unit.version > 1:
        out["version"] = unit.version
    return out


def _search(backend: MemoryBackend, a: SearchMemoryArgs) -> dict[str, Any]:
    found = backend.search(query=a.query, top_k=a.top_k, granularity=a.granularity)
    return {"memories": [{**_brief(h.unit), "score": round(h.score, 4)} for h in found.hits]}


def _add(backend: MemoryBackend, a: AddMemoryArgs) -> dict[str, Any]:
    return {"memory": _brief(backend.add(text=a.text, tags=a.tags))}


def _update(backend: MemoryBackend, a: UpdateMemoryArgs) -> dict[str, Any]:
    return {"memory": _brief(backend.update(memory_id=a.memory_id, text=a.text)),
            "replaces": a.memory_id}


def _delete(backend: MemoryBackend, a: DeleteMemoryArgs) -> dict[str, Any]:
    backend.delete(memory_id=a.memory_id)
    return {"deleted": a.memory_id}


def _context(backend: MemoryBackend, a: GetContextArgs) -> dict[str, Any]:
    ctx = backend.context(query=a.query, max_tokens=a.max_tokens)
    return {"context": ctx.text, "unit_ids": ctx.unit_ids, "tokens": ctx.tokens}


@dataclass(frozen=True)
class _Tool:
    name: str
    description: str
    args: type[_Args]
    run: Callable[[MemoryBackend, Any], dict[str, Any]]


_TOOLS: dict[str, _Tool] = {t.name: t for t in (
    _Tool("search_memory",
          "Search the user's long-term memory. Returns the most relevant memories, best "
          "first, each with its id (cite it as [id]) and a similarity score.",
          SearchMemoryArgs, _search),
    _Tool("add_memory",
          "Remember a new durable fact about the user or the conversation (a preference, "
          "an event, a plan). Do not store small talk or questions.",
          AddMemoryArgs, _add),
    _Tool("update_memory",
          "Correct a stored memory that is out of date or wrong. Writes a new version; the "
          "old one is kept in the history.",
          UpdateMemoryArgs, _update),
    _Tool("delete_memory",
          "Forget a stored memory (for example when the user asks you to). It no longer "
          "appears in search.",
          DeleteMemoryArgs, _delete),
    _Tool("get_context",
          "Prompt-ready memory for a question within a token budget: one line per memory, "
          "best first, each ending with its [id].",
          GetContextArgs, _context),
)}

#: The tool names, in the order the schemas list them.
TOOL_NAMES: tuple[str, ...] = tuple(_TOOLS)


def _parameters(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema made self-contained and compact for function calling.

    ``$ref``s are inlined, titles dropped, and an optional ``X | None`` field is offered as
    plain ``X``: leaving the argument out is how a model says "none".
    """
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})
    schema.pop("title", None)
    schema.pop("description", None)

    def clean(node: Any) -> Any:
        if isinstance(node, list):
            return [clean(n) for n in node]
        if not isinstance(node, dict):
            return node
        branches = node.get("anyOf")
        if isinstance(branches, list):
            non_null = [b for b in branches if b != {"type": "null"}]
            if len(non_null) == 1 and len(non_null) < len(branches):
                node = {**{k: v for k, v in node.items() if k != "anyOf"}, **non_null[0]}
                if node.get("default", ...) is None:
                    node.pop("default")
        if "$ref" in node:
            target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        out = {}
        for key, value in node.items():
            if key == "title" and isinstance(value, str):
                continue
            out[key] = ({k: clean(v) for k, v in value.items()} if key == "properties"
                        else clean(value))
        return out

    return clean(schema)  # type: ignore[no-any-return]


_SCHEMAS: list[dict[str, Any]] = [
    {"type": "function", "function": {"name": t.name, "description": t.description,
                                      "parameters": _parameters(t.args)}}
    for t in _TOOLS.values()
]


def tool_schemas() -> list[dict[str, Any]]:
    """OpenAI-style function schemas of the memory tools (a fresh copy; safe to mutate).

    Each is ``{"type": "function", "function": {"name", "description", "parameters"}}``
    with ``parameters`` a JSON schema generated from the tool's pydantic argument model.
    """
    return copy.deepcopy(_SCHEMAS)


def _error(err: MemosError) -> dict[str, Any]:
    return err.to_dict()


def _invalid_arguments(name: str, exc: ValidationError) -> InvalidInput:
    problems = [f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
                for e in exc.errors()]
    return InvalidInput(f"bad arguments for {name}: " + "; ".join(problems),
                        details={"tool": name, "errors": problems})


def _parse_arguments(name: str, arguments: str | Mapping[str, Any] | None) -> dict[str, Any]:
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"arguments for {name} are not valid JSON: {exc.msg}",
                               details={"tool": name}) from exc
    else:
        parsed = arguments
    if not isinstance(parsed, Mapping):
        raise InvalidInput(f"arguments for {name} must be a JSON object",
                           details={"tool": name})
    return dict(parsed)


def run_tool(backend: MemoryBackend, name: str,
             arguments: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """Execute one tool call; the result is JSON-serialisable and never an exception.

    ``arguments`` is the JSON string a model produced, or an already-parsed mapping. On any
    failure the result is ``{"error": {"type", "message", "details"}}`` and the failure is
    logged.
    """
    tool = _TOOLS.get(name)
    try:
        if tool is None:
            raise InvalidInput(f"unknown tool {name!r}; known tools: {', '.join(TOOL_NAMES)}",
                               details={"tool": name, "known": list(TOOL_NAMES)})
        try:
            args = tool.args.model_validate(_parse_arguments(name, arguments))
        except ValidationError as exc:
            raise _invalid_arguments(name, exc) from exc
        return tool.run(backend, args)
    except MemosError as err:
        log.warning("tool %s failed: %s", name, err.message)
        return _error(err)
    except Exception as exc:  # a tool call must never take the chat loop down with it
        log.exception("tool %s raised", name)
        return {"error": {"type": "internal_error", "message": f"tool {name} failed",
                          "details": {"exception": type(exc).__name__}}}


def execute_tool(memos: MemCube, *, cube_id: str, tenant: str, name: str,
                 arguments: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """:func:`run_tool` against one cube of the library's service.

    >>> execute_tool(memos, cube_id="ana", tenant="default", name="search_memory",
    ...              arguments='{"query": "dog name", "top_k": 1}')   # doctest: +SKIP
    {'memories': [{'id': '…', 'text': 'My dog Pixel loves the canal.', …, 'score': 0.61}]}
    """
    return run_tool(CubeBackend(memos, cube_id, tenant), name, arguments)


def result_unit_ids(result: Mapping[str, Any]) -> list[str]:
    """Ids of the memory units a tool result shows the model (for citations/bookkeeping).

    A deleted unit is not counted: the model can no longer use it.
    """
    ids: list[str] = [m["id"] for m in result.get("memories", ()) if isinstance(m, dict)]
    memory = result.get("memory")
    if isinstance(memory, dict) and "id" in memory:
        ids.append(memory["id"])
    ids.extend(i for i in result.get("unit_ids", ()) if isinstance(i, str))
    return ids
