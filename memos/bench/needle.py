"""``memos bench needle``: LoCoMo needles in a big cube, router against dense, over HTTP.

One cube holds the LoCoMo dev conversations (each session a cube session, its turns
messages with their session's date) spread evenly among ``--distractors`` generated turns
(:func:`memos.bench.dialogue.realistic_turns`, sessions of ``session_size`` turns dated
across 2022–2024). Every scored LoCoMo question (categories 1–4) is then asked twice over
HTTP, in router mode and in dense mode (turns only), and turn recall@{1,5,10} of its
evidence is reported for both, with search latency percentiles and the ``Server-Timing``
stages.

The run has two halves:

- **build** (:func:`build_needle_cube`): the sessions go through the service's own write
  path in-process — :meth:`memos.cube.MemCube.ingest` with ``sync`` on, the code ``POST
  /v1/cubes/{id}/messages`` runs, deriving inline what the ``derive_session`` job derives,
  with the router cache and its GMM associations kept current on every write — into
  ``--data-dir`` (SQLite + FAISS) or ``--database-url`` (PostgreSQL + pgvector). Ingest
  throughput is reported per slice of ``slice_turns`` turns, to show whether it stays flat
  as the cube grows. Turn vectors are computed once and cached on disk
  (:class:`VectorCache`, files named by the embedder's fingerprint under ``--cache-dir``,
  never in the repository), so the build times the write path, not the model.
  A ``needle.json`` manifest in the data directory records what was built.
- **search** (:func:`search_needle`): a real server (``uvicorn api.main:create_app``,
  ``--workers N``) over the built cube; queries are embedded by the real model.

``--reuse`` skips the build when the data directory's manifest matches the run, so the
search half can be rerun on another code version in minutes.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["VectorCache", "CachedEmbedder", "cache_path", "build_needle_cube",
           "search_needle", "run_needle", "timing_lock", "add_needle_command", "MANIFEST"]

#: The build's manifest, in the data directory.
MANIFEST = "needle.json"

Session = tuple[str, "datetime | None", list[dict[str, Any]]]


class VectorCache:
    """Vectors of known texts: ``<stem>.npy`` (float32 rows) beside ``<stem>.json``
    (``{"model": …, "texts": [...]}``, row order)."""

    def __init__(self, model: str, texts: list[str], vectors: np.ndarray) -> None:
        self.model = model
        self.rows = {t: i for i, t in enumerate(texts)}
        self.vectors = vectors

    @classmethod
    def load(cls, npy_path: str | Path) -> VectorCache:
        path = Path(npy_path)
        meta = json.loads(path.with_suffix(".json").read_text())
        return cls(meta["model"], meta["texts"], np.load(path))

    @classmethod
    def build(cls, npy_path: str | Path, texts: Sequence[str], embedder: Any, *,
              progress: bool = True, batch: int = 256) -> VectorCache:
        """The cache at ``npy_path`` with every one of ``texts``: texts it lacks (all, when
        it is missing or of another model) are embedded and added to the file."""
        path = Path(npy_path)
        cached = None
        if path.exists() and path.with_suffix(".json").exists():
            cached = cls.load(path)
            if cached.model != embedder.name:
                cached = None
        have = cached.rows if cached is not None else {}
        missing = [t for t in dict.fromkeys(texts) if t not in have]
        if not missing and cached is not None:
            return cached
        from tqdm.auto import tqdm

        out = np.empty((len(missing), embedder.dim), dtype=np.float32)
        for start in tqdm(range(0, len(missing), batch), desc="embed (cached once)",
                          disable=not progress):
            out[start:start + batch] = embedder.embed(missing[start:start + batch])
        all_texts = [*have, *missing]
        vectors = out if cached is None else np.concatenate([cached.vectors, out])
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors)
        path.with_suffix(".json").write_text(json.dumps({"model": embedder.name,
                                                         "texts": all_texts}))
        return cls(embedder.name, all_texts, vectors)


def cache_path(cache_dir: str | Path, kind: str, model: str) -> Path:
    """The cache file of ``kind`` texts embedded by ``model`` (an embedder's ``name``, its
    fingerprint): one file per model, so two models never overwrite each other's vectors."""
    digest = hashlib.sha256(model.encode()).hexdigest()[:12]
    return Path(cache_dir) / f"{kind}-{digest}.npy"


class CachedEmbedder:
    """An embedder that answers texts found in ``caches`` (of the same model) from them
    and embeds the rest with ``base``; same ``name`` and ``dim`` as ``base``."""

    def __init__(self, base: Any, caches: Sequence[VectorCache]) -> None:
        self.base = base
        self.name, self.dim = base.name, base.dim
        self.caches = [c for c in caches if c.model == base.name]
        #: texts answered from the caches and embedded by ``base``
        self.hits = self.misses = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        missing = []
        for i, text in enumerate(texts):
            for cache in self.caches:
                row = cache.rows.get(text)
                if row is not None:
                    out[i] = cache.vectors[row]
                    break
            else:
                missing.append(i)
        if missing:
            out[missing] = self.base.embed([texts[i] for i in missing])
        self.misses += len(missing)
        self.hits += len(texts) - len(missing)
        return out


def _distractor_sessions(n: int, *, seed: int, session_size: int
                         ) -> list[tuple[str, datetime, list[tuple[str, str]]]]:
    from memos.bench.dialogue import realistic_turns

    rng = random.Random(seed)
    turns = list(realistic_turns(n, seed=seed))
    start = datetime(2022, 1, 1, tzinfo=timezone.utc)
    return [(f"d{s}", start + timedelta(minutes=rng.randrange(3 * 365 * 24 * 60)),
             turns[i:i + session_size]) for s, i in enumerate(range(0, n, session_size))]


def _needle_sessions(convs: Sequence[Any]) -> list[Session]:
    from memos.eval.loaders import parse_locomo_time

    return [(f"{c.sample_id}-s{s.index}", parse_locomo_time(s.date_time), [
        {"id": f"{c.sample_id}:{t.dia_id}", "role": "user", "speaker": t.speaker,
         "content": t.text.removeprefix(f"{t.speaker}: ")} for t in s.turns])
        for c in convs for s in c.sessions]


def _interleave(needles: list[Session], noise: list[Session]) -> list[Session]:
    """The needles evenly among the distractors, as old conversations in a long history."""
    order: list[Session] = []
    step = max(1, len(noise) // max(1, len(needles)))
    it = iter(needles)
    for i, item in enumerate(noise):
        order.append(item)
        if i % step == step - 1:
            order.extend(x for x in [next(it, None)] if x is not None)
    order.extend(it)
    return order


def _texts(sessions: Sequence[Session]) -> list[str]:
    from memos.derive.session import turn_embedding_text

    return [turn_embedding_text(m["speaker"], m["content"]) for *_, ms in sessions for m in ms]


@contextmanager
def timing_lock(path: str | Path | None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (the machine's timing lock) for the block,
    so no other timed run shares the machine; ``None``: no lock."""
    if path is None:
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _settings(data_dir: Path, database_url: str | None) -> Any:
    from memos.config import Settings

    settings = Settings(data_dir=data_dir, extractor="none", run_worker=False)
    if database_url:
        settings = settings.model_copy(update={"database_url_override": database_url})
    return settings


def _params(data_path: str | Path, *, distractors: int, seed: int, session_size: int,
            database_url: str | None) -> dict[str, Any]:
    return {"dataset": str(data_path),
            "dataset_sha256": hashlib.sha256(Path(data_path).read_bytes()).hexdigest(),
            "distractor_turns": distractors, "seed": seed, "session_size": session_size,
            "backend": "postgres" if database_url else "sqlite"}


def build_needle_cube(data_path: str | Path, data_dir: str | Path, *, distractors: int,
                      seed: int = 0, session_size: int = 25,
                      cache_dir: str | Path = "/tmp/memos-bench-cache",
                      database_url: str | None = None, slice_turns: int = 10_000,
                      lock: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Ingest the needle cube (cube id ``needle``) into ``data_dir`` (or the PostgreSQL
    database at ``database_url``) through :meth:`MemCube.ingest`; write and return the
    manifest (parameters, ingest throughput overall and per ``slice_turns`` slice).

    Each slice is timed holding ``lock`` (the machine's timing lock), released between
    slices so other timed runs can interleave. :class:`ValueError` when ``data_dir``
    already holds a manifest.
    """
    from tqdm.auto import tqdm

    from memos.embedders import Embedders
    from memos.eval.locomo import load_locomo
    from memos.service import embedders_for, open_cube
    from memos.types import CubeCreate, MessagesIngest

    data_dir = Path(data_dir)
    if (data_dir / MANIFEST).exists():
        raise ValueError(f"{data_dir} already holds a needle cube ({MANIFEST}); "
                              "pass --reuse to search it, or another --data-dir")
    data_dir.mkdir(parents=True, exist_ok=True)
    params = _params(data_path, distractors=distractors, seed=seed,
                     session_size=session_size, database_url=database_url)
    needles = _needle_sessions(load_locomo(data_path))
    noise: list[Session] = [
        (sid, when, [{"id": f"{sid}:{i}", "role": "user", "speaker": who, "content": text}
                     for i, (who, text) in enumerate(turns)])
        for sid, when, turns in _distractor_sessions(distractors, seed=seed,
                                                     session_size=session_size)]
    order = _interleave(needles, noise)
    settings = _settings(data_dir, database_url)
    base = embedders_for(settings)
    caches = [VectorCache.build(cache_path(cache_dir, f"distractors-s{seed}", base.name),
                                _texts(noise), base.default, progress=progress),
              VectorCache.build(cache_path(cache_dir, "locomo-dev-turns", base.name),
                                _texts(needles), base.default, progress=progress)]
    cached = CachedEmbedder(base.default, caches)
    cube = open_cube(settings, embedders=Embedders(default=cached,
                                                   default_spec=base.default_spec))
    total = sum(len(m) for *_, m in order)
    slices: list[dict[str, Any]] = []
    try:
        cube.create_cube(CubeCreate(id="needle"), tenant="default")
        done, busy = 0, 0.0
        it = iter(order)
        with tqdm(total=total, unit="turn", desc="ingest", disable=not progress) as bar:
            while done < total:
                start_turns = done
                with timing_lock(lock):
                    t0 = time.perf_counter()
                    for sid, when, msgs in it:
                        cube.ingest("needle", MessagesIngest.model_validate({
                            "session_id": sid, "sync": True, "messages": [
                                {**m, "timestamp": when.isoformat() if when else None}
                                for m in msgs]}), tenant="default")
                        done += len(msgs)
                        bar.update(len(msgs))
                        if done - start_turns >= slice_turns:
                            break
                    seconds = time.perf_counter() - t0
                busy += seconds
                slices.append({"turns_before": start_turns, "turns": done - start_turns,
                               "seconds": round(seconds, 2),
                               "turns_per_s": round((done - start_turns) / seconds, 1)})
        cube.index.flush()
        stats = cube.stats("needle", tenant="default")
        links = _link_counts(cube)
    finally:
        cube.store.dispose()
    rates = [s["turns_per_s"] for s in slices if s["turns"] >= slice_turns // 2]
    manifest = {
        **params, "cube": "needle", "embedder": base.name,
        "needle_turns": sum(len(m) for *_, m in needles), "turns": total,
        "units": stats.granularity, "links": links,
        "ingest": {
            "path": "MemCube.ingest (sync derive), in-process, one call per session",
            "turns": total, "seconds": round(busy, 1),
            "turns_per_s": round(total / busy, 1),
            "slice_turns": slice_turns, "slices": slices,
            "last_over_first_slice": round(rates[-1] / rates[0], 3) if rates else None,
            "cache_hits": cached.hits, "embedded_live": cached.misses,
            "timing_lock": str(lock) if lock else None},
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    (data_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _link_counts(cube: Any) -> dict[str, int]:
    """Links of the needle cube by type (``associated``: the router's GMM associations,
    formed as the units arrived)."""
    from sqlalchemy import func, select

    from memos.store.models import CubeRow, LinkRow

    with cube.store.transaction() as session:
        key = session.scalar(select(CubeRow.key).where(CubeRow.id == "needle",
                                                       CubeRow.tenant == "default"))
        return {t: n for t, n in session.execute(
            select(LinkRow.type, func.count()).where(LinkRow.cube_key == key)
            .group_by(LinkRow.type))}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _server(data_dir: Path, *, workers: int = 1, database_url: str | None = None
            ) -> Iterator[str]:
    """A real API server (``api.main:create_app``, ``workers`` processes on one port) over
    ``data_dir`` or ``database_url``; its log goes to ``data_dir/server.log``."""
    import httpx

    port = _free_port()
    environ = {k: v for k, v in os.environ.items()
               if k not in ("MEMOS_DATABASE_URL", "MEMOS_API_KEYS", "MEMOS_DATA_DIR")}
    environ.update({"MEMOS_DATA_DIR": str(data_dir), "MEMOS_EXTRACTOR": "none"})
    if database_url:
        environ["MEMOS_DATABASE_URL"] = database_url
    with (data_dir / "server.log").open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.main:create_app",
                                 "--factory", "--host", "127.0.0.1", "--port", str(port),
                                 "--log-level", "warning", "--workers", str(workers),
                                 "--http", "api.tcp:NoDelayH11Protocol"],
                                env=environ, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"needle server exited with {proc.returncode}; see "
                                   f"{data_dir / 'server.log'}")
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("needle server did not start within 300 s")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()


def _pct(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {f"p{q}": round(float(np.percentile(a, q)), 2) for q in (50, 95, 99)}


def search_needle(data_path: str | Path, data_dir: str | Path, *, workers: int = 1,
                  database_url: str | None = None, max_questions: int | None = None,
                  lock: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Ask every scored question of ``data_path`` of the built needle cube over HTTP, in
    router and in dense mode; the report (recalls in percent, latencies in ms). The timed
    questions run holding ``lock``; the server's start and one warm-up search per mode
    (which builds the router cache from SQL) do not."""
    import httpx
    from tqdm.auto import tqdm

    from memos.eval.locomo import CATEGORIES, load_locomo

    data_dir = Path(data_dir)
    convs = load_locomo(data_path)
    questions = [(c.sample_id, q) for c in convs for q in
                 [q for q in c.questions if q.category in CATEGORIES and q.evidence]
                 [:max_questions]]
    report: dict[str, Any] = {"questions": len(questions), "workers": workers}
    with _server(data_dir, workers=workers, database_url=database_url) as url, \
            httpx.Client(base_url=url, timeout=600) as http:
        cube = "needle"
        warm: dict[str, float] = {}
        for mode in ("router", "dense"):
            # workers each build their own router cache: warm every worker (connections
            # land on workers at random, so a few searches per worker)
            t = time.perf_counter()
            for i in range(4 * workers):
                with httpx.Client(base_url=url, timeout=600) as fresh:
                    fresh.post(f"/v1/cubes/{cube}/search", json={
                        "query": f"warm up {i}", "mode": mode}).raise_for_status()
            warm[mode] = round(time.perf_counter() - t, 1)
        report["warmup_seconds"] = warm
        with timing_lock(lock):
            for mode in ("router", "dense"):
                rec: dict[int, list[float]] = {1: [], 5: [], 10: []}
                lat: list[float] = []
                stages: dict[str, list[float]] = {}
                modes: set[str] = set()
                for sample, q in tqdm(questions, desc=mode, disable=not progress):
                    t = time.perf_counter()
                    # dense ranks turns only (its hits would else hold session, summary and
                    # keyword units too); the router ranks turns with every granularity as
                    # evidence, as the default search does
                    r = http.post(f"/v1/cubes/{cube}/search", json={
                        "query": q.question, "top_k": 10, "mode": mode,
                        **({"filters": {"granularity": ["turn"]}} if mode == "dense" else {})})
                    lat.append((time.perf_counter() - t) * 1000)
                    r.raise_for_status()
                    for part in r.headers.get("server-timing", "").split(","):
                        if ";dur=" in part:
                            name, ms = part.strip().split(";dur=")
                            stages.setdefault(name, []).append(float(ms))
                    body = r.json()
                    modes.add(body["mode"])
                    got = [str(h["unit"]["metadata"].get("message_id")) for h in body["hits"]
                           if h["unit"]["granularity"] == "turn"]
                    ev = {f"{sample}:{e}" for e in q.evidence}
                    for k in rec:
                        rec[k].append(len(ev & set(got[:k])) / len(ev))
                report[mode] = {**{f"turn_recall@{k}": round(100 * float(np.mean(v)), 2)
                                   for k, v in rec.items()},
                                "served_mode": "+".join(sorted(modes)),
                                "search_ms": _pct(lat),
                                "server_timing_ms": {n: _pct(v) for n, v in stages.items()}}
    report["router_minus_dense_r5"] = round(
        report["router"]["turn_recall@5"] - report["dense"]["turn_recall@5"], 2)
    return report


def run_needle(data_path: str | Path, *, distractors: int, seed: int = 0,
               session_size: int = 25, cache_dir: str | Path = "/tmp/memos-bench-cache",
               data_dir: str | Path | None = None, reuse: bool = False,
               database_url: str | None = None, workers: int = 1,
               max_questions: int | None = None, build_only: bool = False,
               slice_turns: int = 10_000, lock: str | Path | None = None,
               progress: bool = True) -> dict[str, Any]:
    """Build the needle cube (or, with ``reuse``, take the one ``data_dir`` holds when its
    manifest matches these parameters) and search it; return the report: the manifest
    (``build``) and the search results. ``data_dir`` ``None``: a temporary directory."""
    tmp = tempfile.TemporaryDirectory(prefix="memos-needle-") if data_dir is None else None
    directory = Path(tmp.name if tmp is not None else data_dir)  # type: ignore[arg-type]
    try:
        manifest_path = directory / MANIFEST
        if reuse and manifest_path.exists():
            manifest = json.loads(manifest_path.read_text())
            want = _params(data_path, distractors=distractors, seed=seed,
                           session_size=session_size, database_url=database_url)
            differ = {k: (manifest.get(k), v) for k, v in want.items() if manifest.get(k) != v}
            if differ:
                raise ValueError(f"{manifest_path} was built with other parameters "
                                 f"(built, asked): {differ}")
            reused = True
        else:
            manifest = build_needle_cube(
                data_path, directory, distractors=distractors, seed=seed,
                session_size=session_size, cache_dir=cache_dir, database_url=database_url,
                slice_turns=slice_turns, lock=lock, progress=progress)
            reused = False
        report: dict[str, Any] = {"build": manifest, "reused": reused,
                                  "data_dir": str(directory)}
        if not build_only:
            report.update(search_needle(data_path, directory, workers=workers,
                                        database_url=database_url,
                                        max_questions=max_questions, lock=lock,
                                        progress=progress))
        return report
    finally:
        if tmp is not None:
            tmp.cleanup()


def _cmd(args: argparse.Namespace) -> int:
    if args.reuse and not args.data_dir:
        raise SystemExit("--reuse needs --data-dir (the directory of the built cube)")
    if args.workers > 1 and not args.database_url:
        raise SystemExit("--workers > 1 needs --database-url: an embedded data directory "
                         "is locked to one process")
    report = run_needle(args.data, distractors=args.distractors, seed=args.seed,
                        session_size=args.session_size,
                        cache_dir=args.cache_dir, data_dir=args.data_dir, reuse=args.reuse,
                        database_url=args.database_url, workers=args.workers,
                        max_questions=args.max_questions, build_only=args.build_only,
                        slice_turns=args.slice_turns, lock=args.timing_lock,
                        progress=not args.no_progress)
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def add_needle_command(kinds: Any) -> None:
    """Add ``needle`` to ``memos bench``'s kinds."""
    p = kinds.add_parser("needle", help="LoCoMo dev needles among N distractor turns: "
                         "router vs dense recall and latency over HTTP")
    p.add_argument("--data", required=True, help="path to the LoCoMo dev JSON file")
    p.add_argument("--distractors", type=int, default=10_000,
                   help="generated distractor turns (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the distractor turns")
    p.add_argument("--session-size", type=int, default=25,
                   help="turns per distractor session (default 25)")
    p.add_argument("--cache-dir", default="/tmp/memos-bench-cache",
                   help="where the turn vectors are cached between runs, one file per "
                   "embedder fingerprint (never the repo)")
    p.add_argument("--data-dir", help="build the cube here and keep it (default: a "
                   "temporary directory, deleted after the run)")
    p.add_argument("--reuse", action="store_true",
                   help="search the cube --data-dir already holds (its needle.json must "
                   "match these parameters) instead of building one")
    p.add_argument("--build-only", action="store_true", help="build, do not search")
    p.add_argument("--database-url", help="build and search on this PostgreSQL + pgvector "
                   "database instead of SQLite + FAISS in the data directory")
    p.add_argument("--workers", type=int, default=1,
                   help="API worker processes of the search server (more than one needs "
                   "--database-url)")
    p.add_argument("--slice-turns", type=int, default=10_000,
                   help="report ingest throughput per slice of this many turns")
    p.add_argument("--timing-lock", help="flock this file while timing (each ingest slice, "
                   "the timed searches), releasing it in between")
    p.add_argument("--max-questions", type=int, default=None,
                   help="ask at most this many questions per conversation")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", help="write the report here")
    p.set_defaults(func=_cmd)
