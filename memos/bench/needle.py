"""``memos bench needle``: LoCoMo needles in a big cube, router against dense, over HTTP.

One cube holds the LoCoMo dev conversations (each session a cube session, its turns
messages with their session's date) spread among ``--distractors`` generated turns
(:func:`memos.bench.dialogue.realistic_turns`, sessions of ``session_size`` turns dated
across 2022–2024). Every scored LoCoMo question (categories 1–4) is then asked twice over
HTTP, in router mode and in dense mode (turns only), and turn recall@{1,5,10} of its evidence is
reported for both, with search latency percentiles and the ``Server-Timing`` stages.
Ingest throughput is reported for the first 10,000 turns and for the whole run.

Embedding 100k turns costs minutes on two cores, so the turns' vectors are computed once
and cached on disk (:class:`VectorCache`, ``.npy`` + ``.json`` under ``--cache-dir``, never
in the repository); the benchmark server (:mod:`api.bench`) embeds ingest texts from the
cache and queries with the real model.
"""

from __future__ import annotations

import argparse
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

__all__ = ["VectorCache", "CachedEmbedder", "run_needle", "add_needle_command"]


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


class CachedEmbedder:
    """An embedder that answers texts found in ``caches`` (of the same model) from them
    and embeds the rest with ``base``; same ``name`` and ``dim`` as ``base``."""

    def __init__(self, base: Any, caches: Sequence[VectorCache]) -> None:
        self.base = base
        self.name, self.dim = base.name, base.dim
        self.caches = [c for c in caches if c.model == base.name]

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
        return out


def _distractor_sessions(n: int, *, seed: int, session_size: int
                         ) -> list[tuple[str, datetime, list[tuple[str, str]]]]:
    from memos.bench.dialogue import realistic_turns

    rng = random.Random(seed)
    turns = list(realistic_turns(n, seed=seed))
    start = datetime(2022, 1, 1, tzinfo=timezone.utc)
    return [(f"d{s}", start + timedelta(minutes=rng.randrange(3 * 365 * 24 * 60)),
             turns[i:i + session_size]) for s, i in enumerate(range(0, n, session_size))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _bench_server(data_dir: Path, caches: Sequence[Path], *, workers: int = 1,
                  env: dict[str, str] | None = None) -> Iterator[str]:
    import httpx

    port = _free_port()
    environ = {**os.environ, "MEMOS_DATA_DIR": str(data_dir), "MEMOS_EXTRACTOR": "none",
               "MEMOS_BENCH_VECTOR_CACHE": os.pathsep.join(str(p) for p in caches),
               **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.bench:create_bench_app",
                             "--factory", "--host", "127.0.0.1", "--port", str(port),
                             "--log-level", "warning", "--workers", str(workers)],
                            env=environ)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"bench server exited with {proc.returncode}")
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("bench server did not start within 300 s")
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


def run_needle(data_path: str | Path, *, distractors: int, seed: int = 0,
               session_size: int = 25, cache_dir: str | Path = "/tmp/memos-bench-cache",
               max_questions: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Build the needle cube over HTTP, ask every scored question in both modes; return the
    report (recalls in percent, latencies in ms)."""
    import httpx
    from tqdm.auto import tqdm

    from memos.client import MemosClient
    from memos.derive.session import turn_embedding_text
    from memos.embed import default_embedder
    from memos.eval.loaders import parse_locomo_time
    from memos.eval.locomo import CATEGORIES, load_locomo

    convs = load_locomo(data_path)
    sessions: list[tuple[str, datetime | None, list[dict[str, Any]]]] = []
    for c in convs:
        for s in c.sessions:
            when = parse_locomo_time(s.date_time)
            sessions.append((f"{c.sample_id}-s{s.index}", when, [
                {"id": f"{c.sample_id}:{t.dia_id}", "role": "user", "speaker": t.speaker,
                 "content": t.text.removeprefix(f"{t.speaker}: ")} for t in s.turns]))
    needle_turns = sum(len(m) for *_, m in sessions)
    noise = _distractor_sessions(distractors, seed=seed, session_size=session_size)
    noise_msgs = [(sid, when, [{"id": f"{sid}:{i}", "role": "user", "speaker": who,
                                "content": text} for i, (who, text) in enumerate(turns)])
                  for sid, when, turns in noise]
    # the needles sit evenly among the distractors, as old conversations in a long history
    order: list[tuple[str, datetime | None, list[dict[str, Any]]]] = []
    step = max(1, len(noise_msgs) // max(1, len(sessions)))
    it = iter(sessions)
    for i, item in enumerate(noise_msgs):
        order.append(item)
        if i % step == step - 1:
            order.extend(x for x in [next(it, None)] if x is not None)
    order.extend(it)

    embedder = default_embedder()
    cache_dir = Path(cache_dir)
    texts = [turn_embedding_text(m["speaker"], m["content"]) for *_, ms in noise_msgs
             for m in ms]
    # the distractor stream is prefix-stable: one cache per seed serves every N
    digest = hashlib.sha256(f"{seed}/{session_size}".encode()).hexdigest()[:12]
    caches = [cache_dir / f"distractors-{digest}.npy", cache_dir / "locomo-dev-turns.npy"]
    VectorCache.build(caches[0], texts, embedder, progress=progress)
    VectorCache.build(caches[1], [turn_embedding_text(m["speaker"], m["content"])
                                  for *_, ms in sessions for m in ms], embedder,
                      progress=progress)
    questions = [(c.sample_id, q) for c in convs for q in
                 [q for q in c.questions if q.category in CATEGORIES and q.evidence]
                 [:max_questions]]
    report: dict[str, Any] = {"dataset": str(data_path), "distractor_turns": distractors,
                              "needle_turns": needle_turns, "questions": len(questions),
                              "seed": seed, "session_size": session_size}
    with tempfile.TemporaryDirectory(prefix="memos-needle-") as tmp, \
            _bench_server(Path(tmp), caches) as url, \
            MemosClient(url, timeout=600) as client:
        cube = "needle"
        client.create_cube(cube)
        done = 0
        first_10k_s = None
        t0 = time.perf_counter()
        with tqdm(total=needle_turns + distractors, unit="turn", desc="ingest",
                  disable=not progress) as bar:
            for sid, when, msgs in order:
                client.add_messages(cube, session_id=sid, messages=[
                    {**m, "timestamp": when.isoformat() if when else None} for m in msgs])
                done += len(msgs)
                bar.update(len(msgs))
                if first_10k_s is None and done >= 10_000:
                    first_10k_s = (time.perf_counter() - t0, done)
        ingest_s = time.perf_counter() - t0
        while client.get_cube(cube).pending_jobs:
            time.sleep(0.5)
        report["ingest"] = {
            "turns": done, "seconds": round(ingest_s, 1),
            "turns_per_s": round(done / ingest_s, 1),
            "first_10k_turns_per_s": None if first_10k_s is None else round(
                first_10k_s[1] / first_10k_s[0], 1),
            "derived_done_seconds": round(time.perf_counter() - t0, 1)}
        with httpx.Client(base_url=url, timeout=120) as http:
            for mode in ("router", "dense"):  # warm: builds the router cache and BM25 once
                http.post(f"/v1/cubes/{cube}/search", json={"query": "warm up", "mode": mode})
            for mode in ("router", "dense"):
                rec: dict[int, list[float]] = {1: [], 5: [], 10: []}
                lat: list[float] = []
                stages: dict[str, list[float]] = {}
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
                    got = [str(h["unit"]["metadata"].get("message_id")) for h in r.json()["hits"]
                           if h["unit"]["granularity"] == "turn"]
                    ev = {f"{sample}:{e}" for e in q.evidence}
                    for k in rec:
                        rec[k].append(len(ev & set(got[:k])) / len(ev))
                report[mode] = {**{f"turn_recall@{k}": round(100 * float(np.mean(v)), 2)
                                   for k, v in rec.items()},
                                "search_ms": _pct(lat),
                                "server_timing_ms": {n: _pct(v) for n, v in stages.items()}}
    report["router_minus_dense_r5"] = round(
        report["router"]["turn_recall@5"] - report["dense"]["turn_recall@5"], 2)
    return report


def _cmd(args: argparse.Namespace) -> int:
    report = run_needle(args.data, distractors=args.distractors, seed=args.seed,
                        cache_dir=args.cache_dir, max_questions=args.max_questions,
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
    p.add_argument("--cache-dir", default="/tmp/memos-bench-cache",
                   help="where the turn vectors are cached between runs (never the repo)")
    p.add_argument("--max-questions", type=int, default=None,
                   help="ask at most this many questions per conversation")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", help="write the report here")
    p.set_defaults(func=_cmd)
