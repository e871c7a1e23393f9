"""Every import the code makes is a declared dependency of the part that needs it."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
OWN = {"memos", "api", "migrations", "tests"}


def _name(requirement: str) -> str:
    bare = re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", bare).lower()


def _declared(*parts: str) -> set[str]:
    project = PYPROJECT["project"]
    names = {_name(r) for r in project["dependencies"]}
    extras = project["optional-dependencies"]
    for part in parts or tuple(extras):
        names |= {_name(r) for r in extras[part]}
    return names - {"memos-memory"}


def _imports(files: list[Path]) -> dict[str, str]:
    """Top-level third-party module → first file importing it."""
    found: dict[str, str] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in OWN and top != "__future__":
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


@functools.cache
def _installed() -> dict[str, list[str]]:
    return dict(importlib.metadata.packages_distributions())


def _distributions(module: str) -> set[str]:
    dists = _installed().get(module, [])
    return {re.sub(r"[-_.]+", "-", d).lower() for d in dists}


def test_every_third_party_import_is_declared() -> None:
    files = sorted((ROOT / "memos").rglob("*.py")) + sorted((ROOT / "api").rglob("*.py"))
    declared = _declared()
    undeclared = {module: where for module, where in _imports(files).items()
                  if not _distributions(module) & declared}
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_the_sdk_needs_only_the_base_dependencies() -> None:
    sdk = [ROOT / "memos" / f for f in ("client.py", "types.py", "errors.py", "__init__.py")]
    base = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    assert base == {"httpx", "pydantic"}
    for module, where in _imports(sdk).items():
        assert _distributions(module) & base, f"{where} imports {module}, not an SDK dependency"
