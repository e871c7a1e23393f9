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


def test_readme_architecture_names_the_real_tree() -> None:
    block = README.split("## Architecture", 1)[1].split("```", 2)[1]
    named = []
    for line in block.strip().splitlines():
        column = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
        for token in column.split():
            if token.endswith((".py", "/")):  # "memos/x.py" or "api/" as is, "x.py" in memos/
                bare = "/" not in token.rstrip("/") and token != "api/"
                named.append("memos/" + token if bare else token)
    assert len(named) > 20
    missing = [p for p in named if not (ROOT / p).exists()]
    assert not missing, f"README's architecture names paths that do not exist: {missing}"
    packages = {p.name for p in (ROOT / "memos").iterdir() if (p / "__init__.py").exists()}
    drawn = {p.rstrip("/").split("/")[-1] for p in named if p.endswith("/")}
    assert packages - {"data"} <= drawn, f"packages missing from the drawing: {packages - drawn}"


def test_every_setting_and_environment_variable_is_in_the_config_table() -> None:
    from memos.config import Settings

    table = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`(MEMOS_[A-Z_]+)`", table))
    settings = {(f.alias or f"MEMOS_{name.upper()}") for name, f in Settings.model_fields.items()}
    read = set()
    for path in list((ROOT / "memos").rglob("*.py")) + list((ROOT / "api").rglob("*.py")):
        read |= set(re.findall(r"\"(MEMOS_[A-Z_]+)\"", path.read_text()))
    missing = sorted((settings | read) - documented)
    assert not missing, f"not in the README's configuration table: {missing}"


def test_every_router_channel_is_documented() -> None:
    from memos.retrieval.cache import ROUTED

    text = README.split("## Retrieval: several granularities, one router", 1)[1]
    channels = text.split("The router's channels", 1)[1].split("\n\n", 1)[0]
    for name in [*ROUTED, "context"]:
        assert f"`{name}`" in channels, f"router channel {name!r} is not documented"


def test_tests_read_shared_data_only_through_the_conftest_helper() -> None:
    # A test that builds a path into ../shared itself fails on a clone without it.
    offenders = [p.name for p in (ROOT / "tests").glob("test_*.py")
                 if re.search(r"""["']shared["']|parents\[2\]""", p.read_text())]
    assert not offenders, f"use conftest.needs_shared / SHARED_DATA instead: {offenders}"
