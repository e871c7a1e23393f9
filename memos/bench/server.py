"""``memos bench``: ingest and search speed end to end over HTTP.

Starts a server on a free loopback port with a fresh data directory (or targets
``--base-url``), ingests ``--units`` realistic turn-length texts through the SDK in
conversation-sized sessions, then runs ``--searches`` searches and reports latency
percentiles. A local run also reports ``embedder_texts_per_s``: the embedder alone on the
same turns, batched as ingest batches them, which bounds ingest speed on this machine.
Texts come from a seeded generator of everyday dialogue (:mod:`memos.bench.dialogue`), so
runs are repeatable.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from memos.bench.dialogue import realistic_queries, realistic_turns
from memos.local_server import local_server


def _dir_bytes(path: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in path.glob(pattern) if p.is_file())


def run_bench(*, units: int, searches: int = 1000, base_url: str | None = None,
              session_size: int = 50, seed: int = 0, progress: bool = True,
              extractor: str = "rules", mode: str = "auto") -> dict[str, Any]:
    """Ingest ``units`` turns over HTTP, then time ``searches`` searches (in search ``mode``:
    auto, router or dense). Returns the report."""
    if mode not in ("auto", "router", "dense"):
        raise ValueError(f"mode must be auto, router or dense, got {mode!r}")
    if base_url is not None:
        report = _run(base_url, units=units, searches=searches, session_size=session_size,
                      seed=seed, progress=progress, mode=mode)
        return {**report, "base_url": base_url, "db_bytes": None, "index_bytes": None}
    with tempfile.TemporaryDirectory(prefix="memos-bench-") as tmp:
        data = Path(tmp)
        with local_server(data, env={"MEMOS_EXTRACTOR": extractor}) as url:
            report = _run(url, units=units, searches=searches, session_size=session_size,
                          seed=seed, progress=progress, mode=mode)
            report["db_bytes"] = _dir_bytes(data, "memos.db*")
        # The server writes its index snapshot on graceful shutdown: measure after it.
        report["index_bytes"] = _dir_bytes(data / "index", "*.faiss")
        report["embedder_texts_per_s"] = embedder_ceiling(
            list(realistic_turns(min(units, 2000), seed=seed)), batch=session_size)
        return {**report, "base_url": "local (started by bench)", "extractor": extractor}


def embedder_ceiling(turns: list[tuple[str, str]], *, batch: int) -> float:
    """Texts/s of the default embedder alone on these turns, embedded as ingest embeds them
    (speaker prefix, one call per session): the most turns/s ingest could reach here."""
    from memos.derive.session import turn_embedding_text
    from memos.embed import OnnxMiniLM

    embedder = OnnxMiniLM()
    texts = [turn_embedding_text(who, text) for who, text in turns]
    embedder.embed(texts[:batch])  # warm-up
    started = time.perf_counter()
    for start in range(0, len(texts), batch):
        embedder.embed(texts[start:start + batch])
    return round(len(texts) / (time.perf_counter() - started), 1)


def _run(base_url: str, *, units: int, searches: int, session_size: int, seed: int,
         progress: bool, mode: str) -> dict[str, Any]:
    import httpx
    from tqdm import tqdm

    from memos.client import MemosClient

    with MemosClient(base_url, timeout=120) as client:
        cube = f"bench-{int(time.time())}-{random.Random().randrange(1 << 30):x}"
        client.create_cube(cube)
        turns = list(realistic_turns(units, seed=seed))
        t0 = time.perf_counter()
        sessions = 0
        with tqdm(total=units, unit="turn", desc="ingest", disable=not progress) as bar:
            for s, start in enumerate(range(0, units, session_size)):
                chunk = turns[start:start + session_size]
                client.add_messages(cube, session_id=f"s{s}", messages=[
                    {"id": f"m{start + i}", "role": "user", "speaker": who, "content": text}
                    for i, (who, text) in enumerate(chunk)])
                sessions += 1
                bar.update(len(chunk))
        ingest_s = time.perf_counter() - t0
        # Derived units and facts are built in the background: let them finish so the
        # searches below are timed on a quiet server, and report how long they took.
        while client.get_cube(cube).pending_jobs:
            time.sleep(0.5)
        derived_s = time.perf_counter() - t0
        queries = realistic_queries(searches, seed=seed + 1)
        latencies = []
        modes: set[str] = set()
        with httpx.Client(base_url=base_url, timeout=120,
                          headers=dict(client._http.headers)) as http:
            http.post(f"/v1/cubes/{cube}/search",
                      json={"query": "warm-up", "top_k": 10, "mode": mode}).raise_for_status()
            for q in tqdm(queries, desc="search", disable=not progress):
                t = time.perf_counter()
                r = http.post(f"/v1/cubes/{cube}/search",
                              json={"query": q, "top_k": 10, "mode": mode})
                latencies.append((time.perf_counter() - t) * 1000)
                r.raise_for_status()
                modes.add(r.json()["mode"])
    lat = np.asarray(latencies)
    return {
        "units": units,
        "sessions": sessions,
        "ingest_seconds": round(ingest_s, 2),
        "ingest_units_per_s": round(units / ingest_s, 1),
        "derived_done_seconds": round(derived_s, 2),
        "searches": searches,
        "search_mode": "+".join(sorted(modes)),
        "search_p50_ms": round(float(np.percentile(lat, 50)), 2),
        "search_p95_ms": round(float(np.percentile(lat, 95)), 2),
        "search_p99_ms": round(float(np.percentile(lat, 99)), 2),
    }


def cmd_bench(args: argparse.Namespace) -> int:
    report = run_bench(units=args.units, searches=args.searches, base_url=args.base_url,
                       session_size=args.session_size, seed=args.seed,
                       extractor=args.extractor, mode=args.mode)
    width = max(len(k) for k in report)
    for key, value in report.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def add_bench_command(sub: Any) -> None:
    p = sub.add_parser("bench", help="ingest/search speed over HTTP")
    p.add_argument("--units", type=int, default=10_000,
                   help="turn-length texts to ingest (default 10000)")
    p.add_argument("--searches", type=int, default=1000,
                   help="searches to time after ingest (default 1000)")
    p.add_argument("--session-size", type=int, default=50,
                   help="turns per ingested session (default 50)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the texts")
    p.add_argument("--base-url", help="target a running server instead of starting one")
    p.add_argument("--extractor", default="rules",
                   help="fact extraction in the started server: rules (default) or none")
    p.add_argument("--mode", default="auto", choices=["auto", "router", "dense"],
                   help="search mode of the timed searches (default auto: the router)")
    p.add_argument("--json", help="write the report here")
    p.set_defaults(func=cmd_bench)
    from memos.bench.durability import add_durability_command
    from memos.bench.model_memory import add_model_memory_command
    from memos.bench.needle import add_needle_command
    from memos.bench.pools import add_pools_command

    kinds = p.add_subparsers(dest="bench_kind",
                             metavar="{model-memory,durability,pools,needle}")
    add_model_memory_command(kinds)
    add_durability_command(kinds)
    add_pools_command(kinds)
    add_needle_command(kinds)
