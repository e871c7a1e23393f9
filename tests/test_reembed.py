"""Switching a cube's embedder: the durable re-embed job, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import AppTransport, store_and_index
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.main import create_app
from memos.client import MemosClient
from memos.config import Settings
from memos.cube import MemCube
from memos.derive.granularity import GranularityDeriver
from memos.derive.session import turn_embedding_text
from memos.embed import HashingEmbedder, OnnxMiniLM
from memos.embedders import Embedders
from memos.errors import Conflict
from memos.jobs import REEMBED_JOB, Worker
from memos.retrieval.cache import RouterCache
from memos.store.models import CubeRow, JobRow, ReembedVectorRow, UnitRow
from memos.store.units import check_model_unchanged

HASHING = {"kind": "hashing", "dim": 64}
BUNDLED = {"kind": "bundled", "variant": "default"}
TURNS = ["I moved to Berlin in May", "My sister keeps bees in the garden",
         "I love hiking on weekends", "We adopted a cat called Miso",
         "My new job starts in June", "I am learning to play the cello"]


class Counting:
    """The real embedder, counting the texts it embeds."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.name, self.dim, self.texts = inner, inner.name, inner.dim, 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.texts += len(texts)
        return self.inner.embed(texts)


@pytest.fixture
def target(embedder: OnnxMiniLM) -> Counting:
    return Counting(embedder)


@pytest.fixture
def svc(backend: str, tmp_path: Path, target: Counting, pg_server: Any) -> Iterator[MemCube]:
    embedders = Embedders(default=HashingEmbedder(64), default_spec=HASHING,
                          build=lambda spec: target if spec["kind"] == "bundled"
                          else HashingEmbedder(spec["dim"]))
    store, index = store_and_index(backend, tmp_path, pg_server)
    service = MemCube(store=store, index=index, embedder=embedders, router=RouterCache(),
                      derivers=[GranularityDeriver()])
    service.reembedder.batch_size = 4
    yield service
    store.dispose()


@pytest.fixture
def api(svc: MemCube, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path, run_worker=False, retrieval_flush_seconds=0)
    with TestClient(create_app(settings, service=svc)) as c:
        yield c


def _ingest(api: TestClient, session_id: str, texts: Sequence[str]) -> None:
    r = api.post("/v1/cubes/c/messages", json={"session_id": session_id, "sync": True,
                 "messages": [{"role": "user", "speaker": "Ana", "content": t} for t in texts]})
    assert r.status_code == 201, r.text


def _search(api: TestClient, query: str) -> list[str]:
    r = api.post("/v1/cubes/c/search", json={"query": query, "top_k": 2, "mode": "dense",
                                             "filters": {"granularity": ["turn"]}})
    assert r.status_code == 200, r.text
    return [h["unit"]["text"] for h in r.json()["hits"]]


def test_switching_reembeds_every_vector_then_switches_atomically(
        api: TestClient, svc: MemCube, target: Counting, embedder: OnnxMiniLM) -> None:
    assert api.post("/v1/cubes", json={"id": "c"}).json()["embedding_model"] == "hashing-64"
    _ingest(api, "s1", TURNS[:3])
    _ingest(api, "s2", TURNS[3:])
    with MemosClient("http://testserver", transport=AppTransport(api)) as sdk:
        job = sdk.switch_embedder("c", BUNDLED)
        assert (job.status, job.source_model, job.target_model, job.target_dim) == (
            "queued", "hashing-64", embedder.name, 384)
        with pytest.raises(Conflict, match="already being re-embedded"):
            sdk.switch_embedder("c", BUNDLED)
        assert sdk.embedder_job("c", job.job_id).progress == 0.0

    seen: list[tuple[float, str, int]] = []

    def progress(fraction: float) -> None:
        svc.jobs.progress(job.job_id, fraction)
        cube = api.get("/v1/cubes/c").json()
        hits = _search(api, "Berlin")  # old vectors, old model, until the switch
        seen.append((fraction, cube["embedding_model"], len(hits)))
        if len(seen) == 1:  # a write during the job: caught up at the switch
            _ingest(api, "s3", ["Ana's brother lives in Lisbon"])

    with svc.store.transaction() as session:
        units = session.scalar(select(func.count()).select_from(UnitRow).where(
            UnitRow.embedding.is_not(None))) or 0
    claimed = svc.jobs.claim("w", {REEMBED_JOB})
    assert claimed is not None
    svc.run_reembed_job(claimed, progress)
    svc.jobs.complete(claimed.id)
    assert len(seen) > 2 and all(model == "hashing-64" and n for _, model, n in seen[:-1])
    assert seen[-1][0] == 1.0 and [f for f, *_ in seen] == sorted(f for f, *_ in seen)

    cube = api.get("/v1/cubes/c").json()
    assert (cube["embedding_model"], cube["embedding_dim"], cube["embedder"]) == (
        embedder.name, 384, BUNDLED)
    done = api.get(f"/v1/cubes/c/embedder/jobs/{job.job_id}").json()
    assert (done["status"], done["progress"]) == ("done", 1.0)
    with svc.store.transaction() as session:
        rows = session.scalars(select(UnitRow).where(UnitRow.embedding.is_not(None))).all()
        assert len(rows) > units  # s3's units were written during the job
        assert {len(r.embedding) for r in rows} == {384}
        turns = {r.pk: r for r in rows if r.granularity == "turn"}
        for row in turns.values():
            expected = embedder.embed([turn_embedding_text(row.speaker, row.text)])[0]
            assert np.allclose(row.embedding, expected, atol=1e-5)
        for row in rows:
            if row.granularity == "session" and row.status == "active":
                mine = [t.embedding for t in turns.values()
                        if t.session_id == row.session_id and t.status == "active"]
                mean = np.mean(mine, axis=0)
                assert np.allclose(row.embedding, mean / np.linalg.norm(mean), atol=1e-5)
        assert session.scalar(select(func.count()).select_from(ReembedVectorRow)) == 0
    assert _search(api, "moving to Berlin")[0] == "I moved to Berlin in May"
    assert "Lisbon" in _search(api, "where does her brother live")[0]
    r = api.post("/v1/cubes/c/embedder", json={"embedder": BUNDLED})
    assert r.status_code == 409 and "already embeds with" in r.text


def test_a_crashed_job_resumes_after_its_last_batch(api: TestClient, svc: MemCube,
                                                    target: Counting) -> None:
    api.post("/v1/cubes", json={"id": "c"})
    _ingest(api, "s1", TURNS)
    job = svc.switch_embedder("c", body=_switch(BUNDLED), tenant="default")

    class Crash(Exception):
        pass

    calls = {"n": 0}

    def crash_after_first_batch(job_: Any, progress: Any) -> None:
        def report(fraction: float) -> None:
            calls["n"] += 1
            raise Crash("worker died")
        svc.run_reembed_job(job_, report)

    Worker(svc.jobs, {REEMBED_JOB: crash_after_first_batch}).run_one()
    with svc.store.transaction() as session:
        row = session.get(JobRow, job.job_id)
        assert row is not None and (row.status, row.attempts) == ("queued", 1)
        assert "worker died" in (row.error or "")
        staged = session.scalar(select(func.count()).select_from(ReembedVectorRow)) or 0
        total = session.scalar(select(func.count()).select_from(UnitRow).where(
            UnitRow.embedding.is_not(None))) or 0
        row.run_after = row.created_at  # skip the back-off
        cube = session.scalar(select(CubeRow).where(CubeRow.id == "c"))
        assert cube is not None and cube.embedding_model == "hashing-64"
    assert staged == svc.reembedder.batch_size and total > staged
    embedded_before = target.texts
    assert Worker(svc.jobs, {REEMBED_JOB: svc.run_reembed_job}).run_one()
    assert target.texts - embedded_before == total - staged  # nothing embedded twice
    assert api.get(f"/v1/cubes/c/embedder/jobs/{job.job_id}").json()["status"] == "done"
    assert api.get("/v1/cubes/c").json()["embedding_dim"] == 384
    assert _search(api, "moving to Berlin")[0] == "I moved to Berlin in May"


def test_switch_errors_are_clear(api: TestClient, svc: MemCube) -> None:
    api.post("/v1/cubes", json={"id": "c"})
    r = api.post("/v1/cubes/c/embedder", json={"embedder": HASHING})
    assert r.status_code == 409 and "already embeds with 'hashing-64'" in r.text
    r = api.post("/v1/cubes/c/embedder", json={"embedder": {"kind": "onnx", "path": "/x.onnx",
                                               "tokenizer": "/t.json", "dim": 8}})
    assert r.status_code == 403 and "MEMOS_ONNX_MODEL_DIRS" in r.text
    r = api.post("/v1/cubes/c/embedder", json={})
    assert r.status_code == 422
    assert api.post("/v1/cubes/nope/embedder", json={"embedder": BUNDLED}).status_code == 404
    assert api.get("/v1/cubes/c/embedder/jobs/12345").status_code == 404


def test_a_write_embedded_before_a_switch_is_refused_after_it(svc: MemCube) -> None:
    svc.create_cube(_cube("c"), tenant="default")
    with svc.store.transaction() as session:
        cube = session.scalar(select(CubeRow).where(CubeRow.id == "c"))
        assert cube is not None
        check_model_unchanged(cube, "hashing-64")
        with pytest.raises(Conflict, match="switched its embedder"):
            check_model_unchanged(cube, "all-MiniLM-L6-v2-onnx-int8@8199be6f699a395f")


def _switch(spec: dict[str, Any]) -> Any:
    from memos.types import EmbedderSwitch

    return EmbedderSwitch.model_validate({"embedder": spec})


def _cube(cube_id: str) -> Any:
    from memos.types import CubeCreate

    return CubeCreate(id=cube_id)
