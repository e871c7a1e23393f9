"""Shared fixtures: real components at small sizes.

- ``embedder``: the real MiniLM (int8 ONNX) model, loaded once per session.
- ``backend``: parametrises a test over SQLite (in ``tmp_path``) and a real PostgreSQL 16 +
  pgvector started from the ``pgserver`` wheel. When PostgreSQL cannot start, the PostgreSQL
  half is skipped and the reason is printed loudly at the end of the run.
- ``app`` / ``client`` / ``sdk``: the FastAPI app over that backend, through TestClient and
  through the SDK on an in-process transport.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from memos.client import MemosClient
from memos.config import Settings
from memos.cube import MemCube
from memos.embed import OnnxMiniLM
from memos.index.faiss import FaissIndex
from memos.index.pgvector import PgVectorIndex
from memos.retrieval.cache import RouterCache
from memos.store.sql import Store

# litellm fetches its model cost map from the network on import unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

_PG_PROBLEM: list[str] = []

#: Evaluation data beside the repository (``../shared/data``); a clone on its own has none.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
_MISSING_SHARED: set[str] = set()


def cube_key(service: MemCube, cube_id: str, *, tenant: str = "default") -> str:
    """The internal key of the tenant's cube: what its rows, jobs, caches and index files
    are keyed by (the API never shows it)."""
    with service.store.transaction() as session:
        return service.units.cube_row(session, cube_id=cube_id, tenant=tenant).key


def needs_shared(*parts: str) -> pytest.MarkDecorator:
    """Skip unless ``../shared/data/<parts>`` exists, naming the file, and say so at the end."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        _MISSING_SHARED.add(str(path))
    return pytest.mark.skipif(not path.exists(), reason=(
        f"needs {path} (evaluation data from ../shared, which is not beside this clone)"))


@pytest.fixture(scope="session")
def embedder() -> OnnxMiniLM:
    return OnnxMiniLM()


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    try:
        import warnings

        import pgserver

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
        server.psql("select 1;")
    except Exception as exc:  # pragma: no cover - depends on the machine
        _PG_PROBLEM.append(f"{type(exc).__name__}: {exc}")
        yield None
        return
    yield server
    server.cleanup()


_TEMPLATE = "memos_template"


def pg_database(server: Any) -> str:
    """A fresh, migrated database: copied from a template migrated once per session."""
    base = server.get_uri()
    if not getattr(server, "_memos_template_ready", False):
        server.psql(f"CREATE DATABASE {_TEMPLATE};")
        store = Store(base.replace("/postgres?", f"/{_TEMPLATE}?"))
        store.upgrade()
        store.dispose()
        server._memos_template_ready = True
    name = "t_" + uuid.uuid4().hex[:12]
    server.psql(f"CREATE DATABASE {name} TEMPLATE {_TEMPLATE};")
    return base.replace("/postgres?", f"/{name}?")


def store_and_index(backend: str, tmp_path: Path, pg_server: Any) -> tuple[Store, Any]:
    """A migrated store and its vector index: SQLite + FAISS in ``tmp_path``, or a fresh
    PostgreSQL database + pgvector (skipped, saying why, when pgserver could not start)."""
    if backend == "postgres":
        if pg_server is None:
            pytest.skip(f"PostgreSQL (pgserver) could not start: {_PG_PROBLEM}")
        store = Store(pg_database(pg_server))
        store.upgrade()  # a no-op on the migrated copy; kept so the test proves it is one
        return store, PgVectorIndex()
    store = Store(f"sqlite:///{tmp_path}/memos.db")
    store.upgrade()
    return store, FaissIndex(tmp_path / "index", store.session_factory)


def build_service(backend: str, tmp_path: Path, embedder: Any, pg_server: Any) -> MemCube:
    store, index = store_and_index(backend, tmp_path, pg_server)
    return MemCube(store=store, index=index, embedder=embedder, router=RouterCache())


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def service(backend: str, tmp_path: Path, embedder: OnnxMiniLM,
            pg_server: Any) -> Iterator[MemCube]:
    svc = build_service(backend, tmp_path, embedder, pg_server)
    yield svc
    svc.store.dispose()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # No background worker in the in-process app: tests ingest with sync=true or run a
    # Worker themselves, so nothing happens behind an assertion's back (retrieval counts
    # too are flushed only by the tests, or at shutdown).
    return Settings(data_dir=tmp_path, run_worker=False, retrieval_flush_seconds=0)


@pytest.fixture
def client(service: MemCube, settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, service=service)) as c:
        yield c


class AppTransport(httpx.BaseTransport):
    """Sends the SDK's requests into the in-process app through a running TestClient."""

    def __init__(self, test_client: TestClient) -> None:
        self.test_client = test_client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        r = self.test_client.request(request.method, str(request.url), content=request.read(),
                                     headers=dict(request.headers))
        return httpx.Response(r.status_code, headers=r.headers, content=r.content)


@pytest.fixture
def sdk(client: TestClient) -> Iterator[MemosClient]:
    with MemosClient("http://testserver", transport=AppTransport(client)) as c:
        yield c


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _MISSING_SHARED:
        terminalreporter.write_sep("!", "TESTS ON ../shared DATA SKIPPED", yellow=True, bold=True)
        for path in sorted(_MISSING_SHARED):
            terminalreporter.write_line(f"missing: {path}", yellow=True)
        terminalreporter.write_line("Tests that evaluate on real data did NOT run; put the "
                                    "shared/ folder beside the repository to run them.",
                                    yellow=True)
    if _PG_PROBLEM:
        terminalreporter.write_sep("!", "POSTGRESQL TESTS SKIPPED", red=True, bold=True)
        terminalreporter.write_line(f"pgserver could not start: {_PG_PROBLEM[0]}", red=True)
        terminalreporter.write_line("The PostgreSQL half of the store/API tests did NOT run.",
                                    red=True)
