"""The memory scheduler: pinned units → KV cache, stable facts → adapter, rebuilds, history."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

pytest.importorskip("torch", reason="torch is not installed (extra: backbone)")

from test_activation import TinyLM, add_routes  # noqa: E402

from memos.jobs import Worker  # noqa: E402
from memos.memory.parametric import TRAIN_ADAPTER_JOB  # noqa: E402
from memos.scheduler import SCHEDULE_JOB, Scheduler, SchedulerPolicy  # noqa: E402


def test_scheduler_compiles_consolidates_rebuilds_and_records(client: TestClient,
                                                              tmp_path: Path) -> None:
    mm = add_routes(client, TinyLM(), tmp_path / "blobs")
    assert client.post("/v1/cubes", json={"id": "c1"}).status_code == 201
    pinned = [client.post("/v1/cubes/c1/memories", json={"text": t, "tags": ["pinned"]})
              .json()["id"] for t in ["Tom has a dog named Biscuit.", "Aisha lives in Lisbon."]]
    client.post("/v1/cubes/c1/memories", json={"text": "Peter is allergic to peanuts."})
    policy = SchedulerPolicy(stable_after_s=0, adapter_min_facts=3, adapter_steps=2,
                             adapter_rank=2)
    sched = Scheduler(mm, policy)
    first = sched.tick("c1", tenant="default")
    assert [d.action for d in first] == ["compile_activation", "train_adapter"]
    assert sorted(first[0].unit_ids) == sorted(pinned) and len(first[1].unit_ids) == 3
    assert Worker(mm.cube.jobs, {TRAIN_ADAPTER_JOB: mm.adapters.run_train_job}).run_pending() == 1
    assert sched.tick("c1", tenant="default") == []  # nothing changed: nothing to do
    client.patch(f"/v1/cubes/c1/memories/{pinned[0]}", json={"text": "Tom has a cat."})
    job = sched.enqueue("c1", tenant="default")
    assert Worker(mm.cube.jobs, {SCHEDULE_JOB: sched.run_job}).run_pending() == 1
    assert mm.cube.jobs.get(job).status == "done"
    state = client.get("/v1/cubes/c1/scheduler").json()
    actions = [d["action"] for d in state["history"]]
    assert actions[:2] == ["compile_activation", "train_adapter"]
    assert {"rebuild_activation", "archive_adapter"} <= set(actions[2:])
    assert state["policy"]["pinned_tag"] == "pinned" and len(state["activations"]) >= 1
