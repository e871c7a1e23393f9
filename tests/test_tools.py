"""Memory tools: schemas and execution against the real store (the MCP server: test_mcp.py)."""

from __future__ import annotations

import json
import logging
from typing import Any

import jsonschema
import pytest

from memos.cube import MemCube
from memos.tools import TOOL_NAMES, execute_tool, result_unit_ids, tool_schemas
from memos.types import ContextRequest, CubeCreate, Granularity, SearchRequest

NAMES = ["search_memory", "add_memory", "update_memory", "delete_memory", "get_context"]


def _params(name: str) -> dict[str, Any]:
    return next(t["function"]["parameters"] for t in tool_schemas()
                if t["function"]["name"] == name)


# ----------------------------------------------------------------- schemas
def test_schemas_are_openai_functions_with_valid_json_schema() -> None:
    schemas = tool_schemas()
    assert [t["function"]["name"] for t in schemas] == NAMES == list(TOOL_NAMES)
    for tool in schemas:
        assert tool["type"] == "function"
        assert set(tool["function"]) == {"name", "description", "parameters"}
        params = tool["function"]["parameters"]
        jsonschema.Draft202012Validator.check_schema(params)
        assert params["type"] == "object" and params["additionalProperties"] is False
        assert "$ref" not in json.dumps(params) and "$defs" not in params
    assert _params("search_memory")["required"] == ["query"]
    assert _params("update_memory")["required"] == ["memory_id", "text"]
    tool_schemas()[0]["function"]["name"] = "mutated"
    assert tool_schemas()[0]["function"]["name"] == "search_memory"  # a copy each time


def test_schema_bounds_match_the_api_schemas() -> None:
    """Generated from the tools' pydantic models, and in line with the REST request models."""
    search, context = SearchRequest.model_json_schema(), ContextRequest.model_json_schema()
    top_k = _params("search_memory")["properties"]["top_k"]
    assert (top_k["minimum"], top_k["maximum"]) == (search["properties"]["top_k"]["minimum"],
                                                    search["properties"]["top_k"]["maximum"])
    budget = _params("get_context")["properties"]["max_tokens"]
    assert ((budget["minimum"], budget["maximum"])
            == (context["properties"]["max_tokens"]["minimum"],
                context["properties"]["max_tokens"]["maximum"]))
    assert _params("search_memory")["properties"]["granularity"]["enum"] == [
        g.value for g in Granularity]


@pytest.mark.parametrize("args, ok", [
    ({"query": "dog"}, True),
    ({"query": "dog", "top_k": 3, "granularity": "fact"}, True),
    ({"query": "dog", "top_k": 0}, False),
    ({"query": "dog", "granularity": "chapter"}, False),
    ({"top_k": 3}, False),
    ({"query": "dog", "colour": "red"}, False),
])
def test_schema_and_validation_agree(args: dict[str, Any], ok: bool) -> None:
    valid = jsonschema.Draft202012Validator(_params("search_memory")).is_valid(args)
    assert valid is ok
    from memos.tools import SearchMemoryArgs

    try:
        SearchMemoryArgs.model_validate(args)
        accepted = True
    except ValueError:
        accepted = False
    assert accepted is ok


# ----------------------------------------------------------------- execute_tool
def _run(service: MemCube, name: str, arguments: Any, cube_id: str = "t") -> dict[str, Any]:
    result = execute_tool(service, cube_id=cube_id, tenant="default", name=name,
                          arguments=arguments)
    json.dumps(result)  # always JSON-serialisable
    return result


def test_execute_tool_round_trip_on_the_real_store(service: MemCube) -> None:
    service.create_cube(CubeCreate(id="t"), tenant="default")
    added = _run(service, "add_memory", '{"text": "Ana adopted a dog named Pixel", '
                                        '"tags": ["pets"]}')
    unit_id = added["memory"]["id"]
    _run(service, "add_memory", {"text": "Ana works as a nurse in Berlin"})

    found = _run(service, "search_memory", {"query": "What is the name of Ana's dog?",
                                            "top_k": 1})
    assert [m["id"] for m in found["memories"]] == [unit_id]
    assert found["memories"][0]["text"] == "Ana adopted a dog named Pixel"
    assert result_unit_ids(found) == [unit_id]
    facts = _run(service, "search_memory", {"query": "dog", "granularity": "turn"})
    assert facts == {"memories": []}

    ctx = _run(service, "get_context", '{"query": "dog", "max_tokens": 64}')
    assert f"[{unit_id}]" in ctx["context"] and unit_id in ctx["unit_ids"]

    updated = _run(service, "update_memory", {"memory_id": unit_id,
                                              "text": "Ana adopted a cat named Pixel"})
    assert updated["replaces"] == unit_id and updated["memory"]["version"] == 2
    new_id = updated["memory"]["id"]
    assert service.get_memory("t", new_id, tenant="default").tags == ["pets"]

    stale = _run(service, "update_memory", {"memory_id": unit_id, "text": "x"})
    assert stale["error"]["type"] == "conflict"

    assert _run(service, "delete_memory", {"memory_id": new_id}) == {"deleted": new_id}
    again = _run(service, "search_memory", {"query": "Pixel", "top_k": 5})
    assert new_id not in [m["id"] for m in again["memories"]]


def test_execute_tool_reports_errors_instead_of_raising(service: MemCube,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    service.create_cube(CubeCreate(id="t"), tenant="default")
    with caplog.at_level(logging.WARNING, logger="memos.tools"):
        unknown = _run(service, "launch_rocket", {})
        assert unknown["error"]["type"] == "invalid_input"
        assert "search_memory" in unknown["error"]["message"]
        assert _run(service, "search_memory", "{not json")["error"]["type"] == "invalid_input"
        assert _run(service, "search_memory", "[1, 2]")["error"]["type"] == "invalid_input"
        missing = _run(service, "search_memory", {"top_k": 500})
        assert "query" in missing["error"]["message"] and "top_k" in missing["error"]["message"]
        assert _run(service, "search_memory", {"query": "   "})["error"]["type"] == "invalid_input"
        gone = _run(service, "delete_memory", {"memory_id": "nope"})
        assert gone["error"]["type"] == "not_found"
        other = _run(service, "search_memory", {"query": "dog"}, cube_id="missing")
        assert other["error"]["type"] == "not_found"
    assert "launch_rocket" in caplog.text
