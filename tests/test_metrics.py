"""``/metrics`` through prometheus-client: latency per route template, search stages, ingest
counts, job depth and age, embedder batch sizes; one registry per app; admin keys only."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.main import create_app
from memos.config import Settings
from memos.cube import MemCube


@pytest.fixture
def backend() -> str:
    return "sqlite"


def _samples(client: TestClient, **headers: str) -> dict[tuple[str, frozenset], float]:
    r = client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _ingest(client: TestClient, messages: list[dict], *, sync: bool = True) -> dict:
    r = client.post("/v1/cubes/a/messages",
                    json={"session_id": "s1", "messages": messages, "sync": sync})
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_latency_is_labelled_by_route_template_docs_schema_and_ui_included(
        client: TestClient) -> None:
    client.post("/v1/cubes", json={"id": "a"})
    for path in ["/v1/cubes/a", "/v1/cubes/nope", "/docs", "/openapi.json", "/ui",
                 "/ui/cubes/a", "/ui/static/inspector.js", "/nowhere"]:
        client.get(path)
    s = _samples(client)
    count = "memos_request_duration_seconds_count"
    assert _value(s, count, method="GET", path="/v1/cubes/{cube_id}") == 2  # 200 and 404
    assert _value(s, "memos_requests_total", method="GET", path="/v1/cubes/{cube_id}",
                  status="404") == 1
    for route in ["/docs", "/openapi.json", "/ui", "/ui/cubes/{cube_id}", "/ui/static/{path}"]:
        assert _value(s, count, method="GET", path=route) == 1, route
    assert _value(s, count, method="GET", path="unmatched") == 1  # /nowhere only
    assert _value(s, "memos_request_duration_seconds_sum", method="GET",
                  path="/openapi.json") > 0
    assert not [k for k in s if "/v1/cubes/a" in dict(k[1]).get("path", "")]


def test_search_stages_ingest_counts_and_embedder_batches(client: TestClient) -> None:
    client.post("/v1/cubes", json={"id": "a"})
    msgs = [{"id": f"m{i}", "speaker": "Ana", "content": f"I planted {i} lemon trees."}
            for i in range(3)]
    _ingest(client, msgs)
    _ingest(client, msgs[:1])  # already known: skipped
    r = client.post("/v1/cubes/a/search", json={"query": "lemon trees", "mode": "dense"})
    assert r.status_code == 200
    s = _samples(client)
    assert _value(s, "memos_ingest_messages_total", outcome="stored") == 3
    assert _value(s, "memos_ingest_messages_total", outcome="skipped") == 1
    assert _value(s, "memos_ingest_units_total") >= 3  # a turn per message
    stages = {dict(k[1])["stage"] for k in s if k[0] == "memos_search_stage_seconds_count"}
    assert {"db", "embed", "index"} <= stages
    assert _value(s, "memos_search_stage_seconds_count", stage="embed") == 1
    # the real MiniLM embedder reported its batches: the 3 turns, then the query
    assert _value(s, "memos_embed_batch_size_count") >= 2
    assert _value(s, "memos_embed_batch_size_sum") >= 4


def test_job_depth_and_age_are_read_at_scrape_time(service: MemCube,
                                                   client: TestClient) -> None:
    client.post("/v1/cubes", json={"id": "a"})
    _ingest(client, [{"id": "m1", "content": "Stored."}])
    with service.store.transaction() as session:
        service.jobs.enqueue(session, kind="derive_session", cube_key=None, payload={})
    time.sleep(0.05)
    s = _samples(client)
    assert _value(s, "memos_jobs", status="queued") >= 1  # the app runs no worker here
    assert _value(s, "memos_jobs", status="failed") == 0
    assert _value(s, "memos_job_oldest_queued_age_seconds") > 0
    assert _value(s, "memos_cubes") == 1 and _value(s, "memos_units") >= 1


def test_each_app_counts_in_its_own_registry(service: MemCube, tmp_path: Path) -> None:
    one = create_app(Settings(data_dir=tmp_path / "1", run_worker=False,
                              retrieval_flush_seconds=0), service=service)
    two = create_app(Settings(data_dir=tmp_path / "2", run_worker=False,
                              retrieval_flush_seconds=0), service=service)
    with TestClient(one) as a, TestClient(two) as b:
        for _ in range(3):
            a.get("/healthz")
        b.get("/healthz")
        assert _value(_samples(a), "memos_requests_total", method="GET", path="/healthz",
                      status="200") == 3
        assert _value(_samples(b), "memos_requests_total", method="GET", path="/healthz",
                      status="200") == 1


def test_metrics_stay_admin_only(service: MemCube, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, run_worker=False, retrieval_flush_seconds=0,
                        api_keys="alice:tenant-key", admin_keys="admin-key")
    with TestClient(create_app(settings, service=service)) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer tenant-key"}
                          ).status_code == 403
        s = _samples(client, Authorization="Bearer admin-key")
        assert _value(s, "memos_requests_total", method="GET", path="/metrics",
                      status="403") == 1
