"""Prometheus metrics of one server, in its own registry (never the process-global one).

:class:`Metrics` holds every metric object in a fresh ``CollectorRegistry``, so several apps
in one process (tests, an embedding application) count separately. ``/metrics`` renders it
with :meth:`Metrics.render`. Names (all prefixed ``memos_``):

=======================================  =========  ============================================
``requests_total{method,path,status}``   counter    requests by route template (``path``)
``request_duration_seconds{method,path}`` histogram  time to the end of the response body
``search_stage_seconds{stage}``          histogram  search stages (its ``Server-Timing``)
``ingest_messages_total{outcome}``       counter    messages ``stored`` or ``skipped``
``ingest_units_total``                   counter    units created by ingestion
``embed_batch_size``                     histogram  texts per model batch of the embedder
``jobs{status}``                         gauge      background jobs per status (at scrape)
``job_oldest_queued_age_seconds``        gauge      age of the oldest queued job, 0 if none
``units``, ``cubes``, ``uptime_seconds`` gauge      server-wide counts
=======================================  =========  ============================================

The embedder reports its batches with :func:`observe_embed_batch` (one call, keyed by the
embedder object); an app sees the batches of the embedders it :meth:`Metrics.watch`-es.

    metrics = Metrics()
    metrics.watch(embedder)
    metrics.requests.labels("GET", "/healthz", "200").inc()
    text = metrics.render()
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics", "observe_embed_batch", "CONTENT_TYPE"]

#: the Prometheus text exposition format, version 0.0.4
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: seconds: a cached search is well under a millisecond, a cold ingest several seconds
_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            10.0, 30.0)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

# embedder -> the Metrics watching it; weak both ways, so neither outlives its owner
_watchers: weakref.WeakKeyDictionary[object, weakref.WeakSet[Metrics]] = \
    weakref.WeakKeyDictionary()
_lock = threading.Lock()


def observe_embed_batch(embedder: object, size: int) -> None:
    """Record one model batch of ``size`` texts run by ``embedder`` in every app watching it.
    Cheap when no app watches (a dictionary miss)."""
    with _lock:
        watching = list(_watchers.get(embedder, ()))
    for metrics in watching:
        metrics.embed_batch.observe(size)


class Metrics:
    """The metric objects of one server, registered in :attr:`registry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("memos_requests", "HTTP requests by route template and status.",
                                ["method", "path", "status"], registry=r)
        self.latency = Histogram("memos_request_duration_seconds",
                                 "HTTP request latency by route template, to the last body byte.",
                                 ["method", "path"], buckets=_LATENCY, registry=r)
        self.search_stage = Histogram("memos_search_stage_seconds",
                                      "Time per search stage (db, embed, router, index).",
                                      ["stage"], buckets=_LATENCY, registry=r)
        self.ingest_messages = Counter("memos_ingest_messages",
                                       "Messages ingested: stored, or skipped as already known.",
                                       ["outcome"], registry=r)
        self.ingest_units = Counter("memos_ingest_units", "Memory units created by ingestion.",
                                    registry=r)
        self.embed_batch = Histogram("memos_embed_batch_size",
                                     "Texts per batch the embedding model runs.",
                                     buckets=_BATCH, registry=r)
        self.jobs = Gauge("memos_jobs", "Background jobs per status, read at scrape time.",
                          ["status"], registry=r)
        self.job_age = Gauge("memos_job_oldest_queued_age_seconds",
                             "Seconds the oldest queued job has waited (0 when none is queued).",
                             registry=r)
        self.units = Gauge("memos_units", "Active memory units of every tenant.", registry=r)
        self.cubes = Gauge("memos_cubes", "Cubes of every tenant.", registry=r)
        self.uptime = Gauge("memos_uptime_seconds", "Seconds since the server started.",
                            registry=r)

    def watch(self, embedder: object) -> None:
        """Count ``embedder``'s batches in :attr:`embed_batch` (see :func:`observe_embed_batch`)."""
        with _lock:
            _watchers.setdefault(embedder, weakref.WeakSet()).add(self)

    def observe_request(self, *, method: str, path: str, status: int, seconds: float) -> None:
        self.requests.labels(method, path, str(status)).inc()
        self.latency.labels(method, path).observe(seconds)

    def observe_stages(self, stages: Mapping[str, float]) -> None:
        """Search stages in milliseconds, as :class:`memos.retrieval.search.Timings` has them."""
        for stage, ms in stages.items():
            self.search_stage.labels(stage).observe(ms / 1000)

    def observe_ingest(self, *, stored: int, skipped: int, units: int) -> None:
        self.ingest_messages.labels("stored").inc(stored)
        self.ingest_messages.labels("skipped").inc(skipped)
        self.ingest_units.inc(units)

    def set_jobs(self, counts: Mapping[str, int], *, oldest_queued_seconds: float) -> None:
        """Job counts per status (every status named, zeros included) and the queue's age."""
        for status, n in counts.items():
            self.jobs.labels(status).set(n)
        self.job_age.set(oldest_queued_seconds)

    def render(self) -> bytes:
        """The registry in the Prometheus text format (:data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)
