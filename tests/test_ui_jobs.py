"""The jobs routes the inspector's jobs table reads (``GET /v1/cubes/{id}/jobs``) and its
retry button calls (``POST …/jobs/{job_id}/retry``), through the SDK against the real store."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import AppTransport, cube_key
from fastapi.testclient import TestClient

from api.main import create_app
from memos.client import MemosClient
from memos.config import Settings
from memos.cube import MemCube
from memos.errors import Conflict, InvalidInput, NotFound


def _job(service: MemCube, cube_id: str, *, tenant: str = "default", failed: bool) -> int:
    with service.store.transaction() as session:
        row = service.jobs.enqueue(session, kind="derive_session",
                                   cube_key=cube_key(service, cube_id, tenant=tenant),
                                   payload={"session_id": "s", "tenant": tenant})
        if failed:
            row.status, row.attempts, row.error = "failed", 5, "ValueError: bad session"
        session.flush()
        return int(row.pk)


def test_jobs_are_listed_newest_first_filtered_and_a_failed_one_retried(
        service: MemCube, sdk: MemosClient) -> None:
    sdk.create_cube("a")
    sdk.create_cube("b")
    queued = _job(service, "a", failed=False)
    failed = _job(service, "a", failed=True)
    other = _job(service, "b", failed=True)
    page = sdk.list_jobs("a")
    assert [j.id for j in page.items] == [failed, queued] and page.total == 2
    (bad,) = sdk.list_jobs("a", status="failed").items
    assert bad.error == "ValueError: bad session" and bad.attempts == 5
    again = sdk.retry_job("a", failed)
    assert again.status.value == "queued" and again.attempts == 0
    assert again.error == "ValueError: bad session"  # kept until it runs again
    assert sdk.list_jobs("a", status="failed").total == 0
    with pytest.raises(Conflict, match="only a failed job"):
        sdk.retry_job("a", queued)
    with pytest.raises(NotFound):  # b's job, asked for through a
        sdk.retry_job("a", other)
    with pytest.raises(NotFound):
        sdk.list_jobs("nope")
    assert sdk.list_jobs("a", offset=1, limit=1).items[0].id == queued


def test_bad_job_queries_are_422(sdk: MemosClient) -> None:
    sdk.create_cube("a")
    with pytest.raises(InvalidInput):
        sdk.list_jobs("a", status="sleeping")
    with pytest.raises(InvalidInput):
        sdk.list_jobs("a", limit=0)


def test_another_tenants_jobs_answer_like_missing_ones(service: MemCube,
                                                      tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, run_worker=False, retrieval_flush_seconds=0,
                        api_keys="alice:ka,bob:kb")
    with TestClient(create_app(settings, service=service)) as client:
        alice = MemosClient("http://testserver", api_key="ka", transport=AppTransport(client))
        bob = MemosClient("http://testserver", api_key="kb", transport=AppTransport(client))
        bob.create_cube("b")
        job = _job(service, "b", tenant="bob", failed=True)
        with pytest.raises(NotFound) as seen:
            alice.list_jobs("b")
        with pytest.raises(NotFound) as missing:
            alice.list_jobs("zzz")
        assert str(seen.value).replace("'b'", "'zzz'") == str(missing.value)
        with pytest.raises(NotFound):
            alice.retry_job("b", job)
        assert bob.list_jobs("b").items[0].status.value == "failed"


def test_cube_stats_count_per_granularity_kind_and_status(sdk: MemosClient) -> None:
    sdk.create_cube("a")
    sdk.add_messages("a", session_id="s1", messages=[
        {"id": "m1", "speaker": "Ana", "content": "I moved to Lisbon."},
        {"id": "m2", "speaker": "Ben", "content": "Nice."}], sync=True)
    one = sdk.add_memory("a", text="Ana lives in Lisbon.")
    two = sdk.add_memory("a", text="Ana likes tea.")
    gone = sdk.add_memory("a", text="Ana is 30.")
    sdk.update_memory("a", one.id, text="Ana lives in Porto.")
    sdk.update_memory("a", two.id, status="archived", reason="stale")
    sdk.delete_memory("a", gone.id)
    stats = sdk.cube_stats("a")
    listed = {g: sdk.list_memories("a", filters={"granularity": [g]}, limit=1).total
              for g in stats.granularity}
    assert stats.granularity == listed  # the list's own counts, one query instead of six
    assert stats.granularity["turn"] == 2 and stats.granularity["fact"] == 1
    # the correction and the archiving each wrote a version over the one they superseded
    assert stats.status["superseded"] == 2 and stats.status["archived"] == 1
    assert stats.status["active"] == sum(stats.granularity.values())
    assert stats.kind == {"plaintext": stats.status["active"], "activation": 0, "parametric": 0}
    assert set(stats.status) == {"active", "superseded", "archived", "quarantined"}
    with pytest.raises(NotFound):
        sdk.cube_stats("nope")
