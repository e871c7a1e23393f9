"""The README is a contract: its commands, routes and CLI lines must exist."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from memos.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _quick_start_commands() -> list[str]:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section, flags=re.S)


def test_readme_has_the_two_commands_and_ci_runs_the_second() -> None:
    serve, tests = _quick_start_commands()[:2]
    assert "memos serve" in serve
    assert "pytest" in tests
    assert tests in (ROOT / ".ci" / "run").read_text()


def test_readme_routes_exist(client: TestClient) -> None:
    paths = set(client.get("/openapi.json").json()["paths"])
    table = README.split("## REST API (v1)", 1)[1].split("\n## ", 1)[0]
    for cell in re.findall(r"^\| `([^`]+)`", table, flags=re.M):
        for route in re.findall(r"(/[\w/{}]+)", cell.split(" ", 1)[1] if " " in cell else cell):
            route = route.replace("{id}", "{memory_id}")
            assert route in paths, f"README names {route}, which the API lacks"


def test_readme_cli_lines_parse() -> None:
    block = README.split("## Command line", 1)[1].split("```", 2)[1]
    parser = build_parser()
    commands = {a.dest: a for a in parser._subparsers._group_actions}  # type: ignore[union-attr]
    names = set(commands["command"].choices)
    for line in block.strip().splitlines():
        words = line.split()
        assert words[0] == "memos" and words[1] in names, line
