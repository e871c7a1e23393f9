"""The durable job table: claim once, retry with back-off, reclaim after a dead worker."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import update

from memos.cube import MemCube
from memos.jobs import Job, JobQueue, Worker
from memos.store.models import JobRow, utcnow


def _enqueue(queue: JobQueue, n: int, kind: str = "echo") -> None:
    with queue.store.transaction() as session:
        for i in range(n):
            queue.enqueue(session, kind=kind, cube_key=None, payload={"i": i})


def test_each_job_runs_exactly_once_across_workers(service: MemCube) -> None:
    queue = JobQueue(service.store)
    _enqueue(queue, 30)
    seen: list[int] = []
    lock = threading.Lock()

    def handler(job: Job, progress) -> None:
        progress(0.5)
        with lock:
            seen.append(job.payload["i"])

    workers = [Worker(queue, {"echo": handler}) for _ in range(3)]
    threads = [threading.Thread(target=w.run_pending) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seen) == list(range(30))
    assert queue.pending() == 0


def test_failures_retry_then_fail_with_the_error(service: MemCube) -> None:
    queue = JobQueue(service.store, max_attempts=2)
    _enqueue(queue, 1, kind="boom")
    calls = []

    def boom(job: Job, progress) -> None:
        calls.append(job.attempts)
        raise RuntimeError("disk on fire")

    worker = Worker(queue, {"boom": boom})
    assert worker.run_one()
    with service.store.transaction() as session:  # skip the back-off wait
        session.execute(update(JobRow).values(run_after=utcnow()))
    assert worker.run_one()
    assert calls == [1, 2]
    with service.store.transaction() as session:
        row = session.query(JobRow).one()
        assert row.status == "failed" and "disk on fire" in (row.error or "")


def test_a_dead_workers_job_is_reclaimed_after_its_lease(service: MemCube) -> None:
    queue = JobQueue(service.store, lease_seconds=60)
    _enqueue(queue, 1)
    assert queue.claim("dead-worker") is not None  # claimed, then the worker "dies"
    assert queue.claim("other") is None
    with service.store.transaction() as session:
        session.execute(update(JobRow).values(locked_at=utcnow() - timedelta(minutes=5)))
    job = queue.claim("other")
    assert job is not None and job.attempts == 2


def test_housekeeping_runs_on_its_interval_and_alone_claims_nothing(service: MemCube) -> None:
    queue = JobQueue(service.store)
    _enqueue(queue, 1)
    chores = threading.Event()
    calls: list[int] = []

    def chore() -> None:
        calls.append(1)
        if len(calls) >= 3:
            chores.set()

    worker = Worker(queue, {}, poll_seconds=0.01, housekeeping=chore,
                    housekeeping_seconds=0.02)
    worker.start()
    try:
        assert chores.wait(10)
    finally:
        worker.stop()
    assert queue.pending() == 1  # no handlers: the job is left for a real worker
    assert not worker.run_one()
