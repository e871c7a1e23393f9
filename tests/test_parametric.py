"""Parametric memory: LoRA adapters trained from facts, attached per request, exact detach."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

torch = pytest.importorskip("torch", reason="torch is not installed (extra: backbone)")

from test_activation import TinyLM, add_routes  # noqa: E402

from memos.errors import Conflict  # noqa: E402
from memos.jobs import Worker  # noqa: E402
from memos.memory.parametric import (  # noqa: E402
    TRAIN_ADAPTER_JOB,
    LoRAConfig,
    attach,
    detach,
    init_lora,
    merge,
    render_examples,
    train_lora,
    unmerge,
)


def _random_adapter(model: Any, cfg: LoRAConfig) -> dict[str, torch.Tensor]:
    tensors = init_lora(model, cfg, seed=3)
    gen = torch.Generator().manual_seed(4)
    return {k: (torch.randn(v.shape, generator=gen) * 0.1 if k.endswith(".b") else v)
            for k, v in tensors.items()}


def _out(model: Any, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(ids)[0]


def test_attach_detach_and_merge_unmerge_restore_base_exactly() -> None:
    model = TinyLM().model
    cfg = LoRAConfig(rank=4, alpha=8, n_layers=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.randint(0, 128, (2, 20), generator=torch.Generator().manual_seed(0))
    base = _out(model, ids)
    tensors = _random_adapter(model, cfg)
    attach(model, tensors, cfg)
    adapted = _out(model, ids)
    assert float((adapted - base).abs().max()) > 1e-3
    with pytest.raises(Conflict):
        attach(model, tensors, cfg)  # never stack two adapters
    detach(model)
    assert all(type(b.self_attn.q_proj) is torch.nn.Linear for b in model.layers)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(_out(model, ids), base)
    saved = merge(model, tensors, cfg)
    assert float((_out(model, ids) - adapted).abs().max()) < 1e-4  # merged == attached
    unmerge(model, saved, cfg)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(_out(model, ids), base)


def test_training_lowers_the_loss_and_leaves_the_model_untouched() -> None:
    lm = TinyLM()
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    examples = render_examples(lm, [("Zorvan's pet is Pickle.",
                                     [{"question": "Pet?", "answer": "Pickle"}])])
    cfg = LoRAConfig(rank=4, alpha=8, n_layers=1)

    def loss(tensors: dict[str, torch.Tensor] | None) -> float:
        from memos.bench.model_memory import mean_nll

        if tensors is not None:
            attach(lm.model, tensors, cfg)
        try:
            return mean_nll(lm.model, examples)
        finally:
            detach(lm.model)

    base = loss(None)
    report: dict[str, object] = {}
    tensors = train_lora(lm, examples, cfg, steps=40, lr=1e-2, report=report)
    assert loss(tensors) < 0.7 * base
    # what the adapter's unit records: the NLL before/after (the same as measured outside)
    # and one training loss per step
    assert report["nll_before"] == pytest.approx(base, rel=1e-3)
    assert report["nll_after"] == pytest.approx(loss(tensors), rel=1e-3)
    curve = report["loss_curve"]
    assert isinstance(curve, list) and len(curve) == 40 and curve[-1] < curve[0]
    assert all(torch.equal(before[k], v) for k, v in lm.model.state_dict().items())
    assert all(p.requires_grad for p in lm.model.parameters())
    assert set(tensors) == {f"1.{t}.{ab}" for t in cfg.targets for ab in "ab"}


def test_adapters_over_http_sync_and_as_a_job(client: TestClient, tmp_path: Path) -> None:
    mm = add_routes(client, TinyLM(), tmp_path / "blobs")
    assert client.post("/v1/cubes", json={"id": "c1"}).status_code == 201
    ids = [client.post("/v1/cubes/c1/memories", json={
        "text": t, "metadata": {"qa": [{"question": q, "answer": a}]}}).json()["id"]
        for t, q, a in [("Zorvan's pet is Pickle.", "Zorvan's pet?", "Pickle"),
                        ("Okelu lives in Tartu.", "Okelu's city?", "Tartu")]]
    body = {"unit_ids": ids, "rank": 2, "steps": 3, "n_layers": 1}
    r = client.post("/v1/cubes/c1/adapters", json={**body, "sync": True})
    assert r.status_code == 202, r.text
    unit = r.json()["unit"]
    assert unit["kind"] == "parametric" and r.json()["source_ids"] == ids
    meta = client.get(f"/v1/cubes/c1/adapters/{unit['id']}").json()["payload_meta"]
    assert meta["lora"]["rank"] == 2 and {"backbone", "tokenizer", "variant"} <= set(meta)
    assert len(meta["loss_curve"]) == 3 and meta["nll_before"] > 0 and meta["nll_after"] > 0
    adapter = mm.adapters.load("c1", unit["id"], tenant="default")
    assert adapter.config.targets == ("q_proj", "v_proj", "o_proj")
    # as a background job, with progress
    job = client.post("/v1/cubes/c1/adapters", json=body).json()
    assert job["status"] == "queued" and job["unit_id"] is None
    assert Worker(mm.jobs, {TRAIN_ADAPTER_JOB: mm.adapters.run_train_job}).run_pending() == 1
    done = client.get(f"/v1/cubes/c1/adapters/jobs/{job['job_id']}").json()
    assert done["status"] == "done" and done["progress"] == 1.0 and done["unit_id"]
    # another model refuses it; a deleted source makes it stale
    mm.provider._backbone = TinyLM(fingerprint="tiny-other")
    with pytest.raises(Conflict, match="backbone"):
        mm.adapters.load("c1", unit["id"], tenant="default")
    client.delete(f"/v1/cubes/c1/memories/{ids[0]}")
    assert set(mm.adapters.refresh("c1", tenant="default")) == {unit["id"], done["unit_id"]}
    assert mm.adapters.resolve("c1", "auto", tenant="default") is None


def test_api_training_mixes_in_rehearsal_text_by_default(client: TestClient,
                                                         tmp_path: Path) -> None:
    from memos.backbone.prepare import CALIBRATION_FILE, HELDOUT_FILE, read_data_text
    from memos.memory.parametric import rehearsal_examples

    lm = TinyLM()
    windows = rehearsal_examples(lm, 3)
    assert [(len(ids), start) for ids, start in windows] == [(48, 1)] * 3
    text = lm.decode(windows[1][0])
    assert text in read_data_text(CALIBRATION_FILE) and text not in read_data_text(HELDOUT_FILE)
    add_routes(client, lm, tmp_path / "blobs")
    client.post("/v1/cubes", json={"id": "c1"})
    ids = [client.post("/v1/cubes/c1/memories", json={
        "text": t, "metadata": {"qa": [{"question": q, "answer": a}]}}).json()["id"]
        for t, q, a in [("Zorvan's pet is Pickle.", "Zorvan's pet?", "Pickle"),
                        ("Okelu lives in Tartu.", "Okelu's city?", "Tartu")]]
    body = {"unit_ids": ids, "rank": 2, "steps": 2, "n_layers": 1, "sync": True}
    meta = client.post("/v1/cubes/c1/adapters", json=body).json()["payload_meta"]
    # 2 facts × (recall turn, statement, one QA turn) = 6, plus 0.5 × 6 generic windows
    assert (meta["examples"], meta["rehearsal_examples"]) == (9, 3)
    meta = client.post("/v1/cubes/c1/adapters", json={**body, "rehearsal": 0}).json()
    assert (meta["payload_meta"]["examples"], meta["payload_meta"]["rehearsal_examples"]) == \
        (6, 0)
    r = client.post("/v1/cubes/c1/adapters", json={**body, "rehearsal": -1})
    assert r.status_code == 422 and "rehearsal" in r.json()["error"]["message"]
