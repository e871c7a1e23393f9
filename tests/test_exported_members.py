"""Each module's public surface is explicit and the import graph has no cycles.

Like httpx's ``test_exported_members.py``: a package that re-exports (``memos.extract``,
``memos.memory``) exports exactly its ``__all__``; every module with an ``__all__`` lists
every public class and function it defines, and everything it lists exists. The layer
contracts themselves are import-linter's (``lint-imports``, run by CI).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import grimp
import pytest

import memos

ROOT = Path(__file__).resolve().parents[1]
# Importing these needs optional heavy extras or starts nothing useful to inspect here.
SKIP = {"memos.backbone.cli", "memos.backbone.evaluate", "memos.backbone.prepare"}


def _modules() -> list[str]:
    names = ["memos"]
    for info in pkgutil.walk_packages(memos.__path__, "memos."):
        if info.name not in SKIP:
            names.append(info.name)
    return names


@pytest.mark.parametrize("name", ["memos.extract", "memos.memory"])
def test_reexporting_packages_export_exactly_their_all(name: str) -> None:
    package = importlib.import_module(name)
    submodules = {m.name for m in pkgutil.iter_modules(package.__path__)}
    public = {n for n in dir(package) if not n.startswith("_")} - submodules - {"annotations"}
    assert sorted(public) == sorted(package.__all__)


def test_every_all_lists_what_its_module_defines() -> None:
    problems = []
    for name in _modules():
        module = importlib.import_module(name)
        exported = getattr(module, "__all__", None)
        if exported is None:
            continue
        problems += [f"{name}.{n} is in __all__ but missing" for n in exported
                     if not hasattr(module, n)]
        for attr, obj in vars(module).items():
            defined_here = getattr(obj, "__module__", None) == name
            if (not attr.startswith("_") and defined_here and attr not in exported
                    and (inspect.isclass(obj) or inspect.isfunction(obj))):
                problems.append(f"{name}.{attr} is public but not in __all__")
    assert not problems, "\n".join(problems)


def test_no_module_imports_another_modules_private_name() -> None:
    found = []
    for path in sorted((ROOT / "memos").rglob("*.py")) + sorted((ROOT / "api").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in (
                    "memos", "api"):
                found += [f"{path.relative_to(ROOT)}: {node.module}.{a.name}"
                          for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert not found, found


def test_the_import_graph_has_no_cycles() -> None:
    graph = grimp.build_graph("memos", "api", include_external_packages=False)
    cycles = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back:
                cycles.append(" -> ".join([importer, *back]))
    assert not cycles, "\n".join(cycles[:20])
