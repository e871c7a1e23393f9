"""The memory scheduler: pinned units → KV cache, stable facts → adapter, rebuilds, history."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

pytest.importorskip("torch", reason="torch is not installed (extra: backbone)")

from test_activation import TinyLM, add_routes  # noqa: E402

from memos.jobs import Worker  # noqa: E402
from memos.memory.parametric import TRAIN_ADAPTER_JOB  # noqa: E402
from memos.scheduler import SCHEDULE_JOB, Scheduler  # noqa: E402
from memos.types import SchedulerPolicy  # noqa: E402


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
    assert Worker(mm.jobs, {TRAIN_ADAPTER_JOB: mm.adapters.run_train_job}).run_pending() == 1
    assert sched.tick("c1", tenant="default") == []  # nothing changed: nothing to do
    client.patch(f"/v1/cubes/c1/memories/{pinned[0]}", json={"text": "Tom has a cat."})
    job = sched.enqueue("c1", tenant="default")
    assert Worker(mm.jobs, {SCHEDULE_JOB: sched.run_job}).run_pending() == 1
    assert mm.jobs.get(job).status == "done"
    state = client.get("/v1/cubes/c1/scheduler").json()
    actions = [d["action"] for d in state["history"]]
    assert actions[:2] == ["compile_activation", "train_adapter"]
    assert {"rebuild_activation", "archive_adapter"} <= set(actions[2:])
    assert state["policy"]["pinned_tag"] == "pinned" and len(state["activations"]) >= 1


def _search(client: TestClient, query: str, times: int = 1) -> str:
    for _ in range(times):
        r = client.post("/v1/cubes/c1/search", json={"query": query, "top_k": 1,
                                                      "mode": "dense"})
    return str(r.json()["hits"][0]["unit"]["id"])


def test_retrieved_units_become_hot_compiled_and_rebuilt(client: TestClient,
                                                         tmp_path: Path) -> None:
    mm = add_routes(client, TinyLM(), tmp_path / "blobs")
    client.post("/v1/cubes", json={"id": "c1"})
    for text in ["Tom has a dog named Biscuit.", "Aisha lives in Lisbon.",
                 "Peter is allergic to peanuts."]:
        client.post("/v1/cubes/c1/memories", json={"text": text})
    sched = Scheduler(mm, SchedulerPolicy(hot_min_retrievals=3, stable_after_s=1e9))
    dog = _search(client, "Which dog does Tom have?", times=3)
    _search(client, "Where does Aisha live?", times=2)  # 2 < 3: not hot
    state = sched.state("c1", tenant="default")
    assert state.hot_units == [dog] and state.retrievals == {dog: 3}
    [compiled] = sched.tick("c1", tenant="default")
    assert compiled.action == "compile_activation" and compiled.unit_ids == [dog]
    first = compiled.result["unit_id"]
    # a pinned unit is core memory: it goes first, and the new cache replaces the old one
    pinned = client.post("/v1/cubes/c1/memories", json={"text": "Ana is vegetarian.",
                                                        "tags": ["pinned"]}).json()["id"]
    [compiled] = sched.tick("c1", tenant="default")
    assert compiled.unit_ids == [pinned, dog] and compiled.result["replaced"] == first
    assert client.get(f"/v1/cubes/c1/activations/{first}").json()["unit"]["status"] == \
        "archived"
    # changing a source queues the rebuild; the scheduler's handler rebuilds and records it,
    # and the replacement stays the scheduler's own (no second compile on the next tick)
    newer = client.patch(f"/v1/cubes/c1/memories/{dog}",
                         json={"text": "Tom has a dog named Rex."}).json()["id"]
    assert Worker(mm.jobs, sched.handlers()).run_pending() == 1
    rebuilt = sched.state("c1", tenant="default")
    assert rebuilt.history[-1].action == "rebuild_activation"
    assert rebuilt.hot_units == [pinned, newer] and rebuilt.retrievals[newer] == 3
    assert sched.tick("c1", tenant="default") == []
    [unit_id] = rebuilt.activations
    act = client.get(f"/v1/cubes/c1/activations/{unit_id}").json()
    assert act["source_ids"] == [pinned, newer] and act["unit"]["version"] == 2


def test_fit_skips_a_unit_too_long_for_the_budget(client: TestClient, tmp_path: Path) -> None:
    mm = add_routes(client, TinyLM(), tmp_path / "blobs")  # one token per character
    client.post("/v1/cubes", json={"id": "c1"})
    ids = [client.post("/v1/cubes/c1/memories", json={"text": t, "tags": ["pinned"]})
           .json()["id"] for t in ["Short one.", "x" * 400, "Short two."]]
    sched = Scheduler(mm, SchedulerPolicy(activation_max_tokens=200, stable_after_s=1e9))
    [compiled] = sched.tick("c1", tenant="default")
    assert compiled.unit_ids == [ids[0], ids[2]]
    assert compiled.result["n_tokens"] <= 200


def test_scheduler_routes(client: TestClient, tmp_path: Path) -> None:
    add_routes(client, TinyLM(), tmp_path / "blobs")
    client.post("/v1/cubes", json={"id": "c1"})
    client.post("/v1/cubes/c1/memories", json={"text": "Tom has a dog.", "tags": ["pinned"]})
    queued = client.post("/v1/cubes/c1/scheduler/tick?background=true").json()
    assert queued["job_id"] and queued["decisions"] == []
    again = client.post("/v1/cubes/c1/scheduler/tick?background=true").json()
    assert again["job_id"] == queued["job_id"]  # one queued tick per cube
    done = client.post("/v1/cubes/c1/scheduler/tick").json()
    assert [d["action"] for d in done["decisions"]] == ["compile_activation"]
    state = client.get("/v1/cubes/c1/scheduler").json()
    assert state["last_tick"] and state["policy"]["tick_every_retrievals"] == 50
    assert client.post("/v1/cubes/nope/scheduler/tick").status_code == 404
