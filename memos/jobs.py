"""The durable job table and the worker loop that drains it.

A job is a row in ``jobs`` (kind, cube, JSON payload, status, attempts, progress). It is
enqueued in the same transaction as the write that needs it, so a crash can lose neither.
Workers claim jobs with ``SELECT … FOR UPDATE SKIP LOCKED`` on PostgreSQL (any number of
workers on any number of machines) and with a conditional ``UPDATE`` on SQLite (one
process). A job whose worker died is reclaimed after ``lease_seconds``; a failing job is
retried with exponential back-off, then marked ``failed`` with its error.

    queue = JobQueue(store)
    with store.transaction() as session:
        queue.enqueue(session, kind="derive_session", cube_key=cube.key,
                      payload={"session_id": "s"})
    Worker(queue, {"derive_session": handler}).run_pending()
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta, timezone
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from memos.errors import Conflict, NotFound
from memos.store.models import CubeRow, JobRow, utcnow
from memos.store.sql import Store
from memos.types import JobPublic, JobStatus

log = logging.getLogger(__name__)

__all__ = ["Job", "JobQueue", "Worker", "Handler", "run_for_cube", "REEMBED_JOB"]

#: Re-embed a cube with another embedder, then switch it over (:mod:`memos.reembed`).
REEMBED_JOB = "reembed_cube"


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    #: the cube's public id (its tenant is ``payload["tenant"]``); None for a job of no
    #: cube, or of a cube deleted since it was queued
    cube_id: str | None
    payload: dict[str, Any]
    attempts: int


#: ``handler(job, report_progress)``; raising marks the attempt failed.
Handler = Callable[[Job, Callable[[float], None]], None]


def run_for_cube(progress: Callable[[float], None], action: Callable[[], object]) -> None:
    """The body of a per-cube job handler: ``action()``, then full progress. A cube deleted
    while its job waited (:class:`NotFound`) leaves nothing to do: the job ends quietly."""
    try:
        action()
    except NotFound:
        return
    progress(1.0)


class JobQueue:
    def __init__(self, store: Store, *, lease_seconds: float = 300, max_attempts: int = 5) -> None:
        self.store = store
        self.lease = timedelta(seconds=lease_seconds)
        self.max_attempts = max_attempts
        #: called by :meth:`wake` (the API wakes its worker with it)
        self.on_enqueue: Callable[[], None] | None = None

    def wake(self) -> None:
        """Tell the worker that jobs were committed; call it after the enqueuing commit."""
        if self.on_enqueue is not None:
            self.on_enqueue()

    def enqueue(self, session: Session, *, kind: str, cube_key: str | None,
                payload: Mapping[str, Any]) -> JobRow:
        """Add a job inside the caller's transaction (committed with the caller's write);
        ``cube_key`` is the cube's internal key (:attr:`CubeRow.key`)."""
        row = JobRow(kind=kind, cube_key=cube_key, payload=dict(payload), status="queued",
                     attempts=0, progress=0.0, run_after=utcnow(), created_at=utcnow())
        session.add(row)
        return row

    def claim(self, worker_id: str, kinds: set[str] | None = None) -> Job | None:
        """Take the oldest runnable job, or None. Safe under concurrent workers."""
        now = utcnow()
        runnable = [or_(JobRow.status == "queued",
                        (JobRow.status == "running") & (JobRow.locked_at < now - self.lease)),
                    JobRow.run_after <= now]
        if kinds:
            runnable.append(JobRow.kind.in_(kinds))
        with self.store.transaction() as session:
            query = select(JobRow).where(*runnable).order_by(JobRow.pk).limit(1)
            if self.store.is_postgres:
                row = session.scalars(query.with_for_update(skip_locked=True)).first()
                if row is None:
                    return None
            else:
                row = session.scalars(query).first()
                if row is None:
                    return None
                claimed = session.execute(
                    update(JobRow).where(JobRow.pk == row.pk, *runnable)
                    .values(status="running", locked_by=worker_id, locked_at=now,
                            attempts=JobRow.attempts + 1))
                if claimed.rowcount != 1:  # type: ignore[attr-defined]
                    return None
                session.refresh(row)
                return self._job(session, row)
            row.status, row.locked_by, row.locked_at = "running", worker_id, now
            row.attempts += 1
            return self._job(session, row)

    @staticmethod
    def _job(session: Session, row: JobRow) -> Job:
        cube = None if row.cube_key is None else session.get(CubeRow, row.cube_key)
        return Job(row.pk, row.kind, None if cube is None else cube.id, dict(row.payload),
                   row.attempts)

    def progress(self, job_id: int, fraction: float) -> None:
        with self.store.transaction() as session:
            session.execute(update(JobRow).where(JobRow.pk == job_id)
                            .values(progress=max(0.0, min(1.0, fraction)), locked_at=utcnow()))

    def complete(self, job_id: int) -> None:
        with self.store.transaction() as session:
            session.execute(update(JobRow).where(JobRow.pk == job_id).values(
                status="done", progress=1.0, finished_at=utcnow(), error=None))

    def fail(self, job_id: int, error: str) -> None:
        with self.store.transaction() as session:
            row = session.get(JobRow, job_id)
            if row is None:
                return
            row.error = error[-4000:]
            if row.attempts >= self.max_attempts:
                row.status, row.finished_at = "failed", utcnow()
            else:
                row.status = "queued"
                row.run_after = utcnow() + timedelta(seconds=2 ** row.attempts)

    def get(self, job_id: int) -> JobRow:
        with self.store.transaction() as session:
            row = session.get(JobRow, job_id)
            if row is None:
                raise NotFound(f"job {job_id} not found", details={"job_id": job_id})
            return row

    def pending(self, cube_key: str | None = None) -> int:
        """Queued and running jobs, of one cube (by internal key) or of all."""
        with self.store.transaction() as session:
            query = select(func.count()).select_from(JobRow).where(
                JobRow.status.in_(["queued", "running"]))
            if cube_key is not None:
                query = query.where(JobRow.cube_key == cube_key)
            return int(session.scalar(query) or 0)

    def page(self, *, cube_key: str, status: str | None, offset: int,
             limit: int) -> tuple[list[JobPublic], int]:
        """One cube's jobs, newest first, and how many match (``status``: one status or
        every one)."""
        where = [JobRow.cube_key == cube_key]
        if status is not None:
            where.append(JobRow.status == status)
        with self.store.transaction() as session:
            total = session.scalar(select(func.count()).select_from(JobRow).where(*where)) or 0
            rows = session.scalars(select(JobRow).where(*where).order_by(JobRow.pk.desc())
                                   .offset(offset).limit(limit)).all()
            return [_public(r) for r in rows], int(total)

    def retry(self, *, cube_key: str, job_id: int) -> JobPublic:
        """Queue a failed job of the cube again, its attempts counted from zero (the last
        error stays until it runs). :class:`NotFound` for a job of another cube, exactly as
        for none; :class:`Conflict` unless the job failed."""
        with self.store.transaction() as session:
            row = session.get(JobRow, job_id)
            if row is None or row.cube_key != cube_key:
                raise NotFound(f"job {job_id} not found", details={"job_id": job_id})
            if row.status != "failed":
                raise Conflict(f"job {job_id} is {row.status}; only a failed job can be retried",
                               details={"job_id": job_id, "status": row.status})
            row.status, row.attempts, row.run_after = "queued", 0, utcnow()
            row.finished_at = row.locked_by = row.locked_at = None
            session.flush()
            job = _public(row)
        self.wake()
        return job

    def depth(self) -> tuple[dict[str, int], float]:
        """Jobs of every cube per status (queued, running, done, failed; zeros included) and
        the seconds the oldest queued job has waited (0.0 when none is queued)."""
        with self.store.transaction() as session:
            counts = dict.fromkeys(("queued", "running", "done", "failed"), 0)
            for status, n in session.execute(select(JobRow.status, func.count())
                                             .group_by(JobRow.status)):
                counts[status] = int(n)
            oldest = session.scalar(select(func.min(JobRow.created_at))
                                    .where(JobRow.status == "queued"))
        if oldest is not None and oldest.tzinfo is None:  # a backend that drops the zone
            oldest = oldest.replace(tzinfo=timezone.utc)
        age = 0.0 if oldest is None else max(0.0, (utcnow() - oldest).total_seconds())
        return counts, age


def _public(row: JobRow) -> JobPublic:
    return JobPublic(id=row.pk, kind=row.kind, status=JobStatus(row.status), attempts=row.attempts,
                     progress=row.progress, error=row.error, created_at=row.created_at,
                     run_after=row.run_after, finished_at=row.finished_at)


class Worker:
    """Runs handlers for claimed jobs: ``run_pending()`` once, or ``start()`` a thread.

    ``housekeeping`` (optional) is called by the thread every ``housekeeping_seconds``
    between jobs (the API flushes retrieval counts with it). With no ``handlers`` the thread
    claims nothing and only keeps house.
    """

    def __init__(self, queue: JobQueue, handlers: Mapping[str, Handler], *,
                 poll_seconds: float = 0.5, housekeeping: Callable[[], object] | None = None,
                 housekeeping_seconds: float = 5.0) -> None:
        self.queue = queue
        self.handlers = dict(handlers)
        self.poll_seconds = poll_seconds
        self.housekeeping = housekeeping
        self.housekeeping_seconds = housekeeping_seconds
        self.id = f"worker-{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def run_one(self) -> bool:
        """Run one job if there is one; True when a job was run (done or failed)."""
        if not self.handlers:  # claim(kinds=∅) would mean "any kind"
            return False
        job = self.queue.claim(self.id, set(self.handlers))
        if job is None:
            return False
        try:
            self.handlers[job.kind](job, lambda f: self.queue.progress(job.id, f))
        except Exception as exc:  # a handler's failure must not kill the worker
            log.warning("job %s (%s) failed: %s", job.id, job.kind, exc)
            self.queue.fail(job.id, "".join(traceback.format_exception(exc)))
        else:
            self.queue.complete(job.id)
        return True

    def run_pending(self, limit: int = 10_000) -> int:
        done = 0
        while done < limit and self.run_one():
            done += 1
        return done

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name=self.id, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        chores_due = time.monotonic() + self.housekeeping_seconds
        while not self._stop.is_set():
            if self.housekeeping is not None and time.monotonic() >= chores_due:
                try:
                    self.housekeeping()
                except Exception:  # a failed chore is retried at the next interval
                    log.exception("worker housekeeping error")
                chores_due = time.monotonic() + self.housekeeping_seconds
            try:
                ran = self.run_one()
            except Exception:  # database hiccup: wait and retry
                log.exception("worker loop error")
                ran = False
            if not ran:
                wait = self.poll_seconds
                if self.housekeeping is not None:
                    wait = max(0.0, min(wait, chores_due - time.monotonic()))
                self._wake.wait(wait)
                self._wake.clear()
