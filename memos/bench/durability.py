"""``memos bench durability``: what ``MEMOS_DURABILITY=full`` costs ingest, beside ``normal``.

Ingests ``--messages`` everyday dialogue turns (:func:`memos.bench.dialogue.realistic_turns`)
through the library, ``--batch`` per request (one commit each, each batch its own session),
into a fresh embedded cube — SQLite + FAISS, the configured embedder, fact extraction off,
no worker — once per durability per run. Runs alternate (full, normal, full, …) so drift on
a busy machine falls on both; the report gives each run and the medians.

The data directories are made under ``--dir`` (default: the current directory) because
the cost is the disk's fsync: on tmpfs it is nil, on a network disk it is large.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from memos.bench.dialogue import realistic_turns
from memos.config import Settings
from memos.service import open_cube
from memos.store.sql import Durability
from memos.types import CubeCreate, MessageIn, MessagesIngest, Role

__all__ = ["run_durability_bench", "add_durability_command"]

_LEVELS: tuple[Durability, ...] = ("full", "normal")


def _ingest_seconds(directory: Path, durability: Durability, turns: list[tuple[str, str]], *,
                    batch: int, embedder: str) -> float:
    settings = Settings(data_dir=directory, durability=durability, embedder=embedder,
                        extractor="none", run_worker=False)
    cube = open_cube(settings)
    try:
        cube.create_cube(CubeCreate(id="bench"), tenant="default")
        cube.embed(["warm-up"])
        started = time.perf_counter()
        for n, start in enumerate(range(0, len(turns), batch)):
            cube.ingest("bench", MessagesIngest(session_id=f"s{n}", messages=[
                MessageIn(id=f"m{start + i}", role=Role.user, speaker=who, content=text)
                for i, (who, text) in enumerate(turns[start:start + batch])]),
                tenant="default")
        return time.perf_counter() - started
    finally:
        cube.store.dispose()


def run_durability_bench(*, messages: int = 2000, batch: int = 20, runs: int = 3,
                         embedder: str = "minilm", directory: Path | None = None,
                         seed: int = 0) -> dict[str, Any]:
    """Seconds to ingest ``messages`` turns at each durability, ``runs`` times each."""
    turns = list(realistic_turns(messages, seed=seed))
    root = Path(directory or ".").resolve()
    seconds: dict[str, list[float]] = {level: [] for level in _LEVELS}
    for _ in range(runs):
        for level in _LEVELS:
            with tempfile.TemporaryDirectory(prefix="memos-bench-durability-", dir=root) as tmp:
                seconds[level].append(_ingest_seconds(Path(tmp), level, turns, batch=batch,
                                                      embedder=embedder))
    commits = -(-messages // batch)
    medians = {level: statistics.median(seconds[level]) for level in _LEVELS}
    report: dict[str, Any] = {"messages": messages, "batch": batch, "commits": commits,
                              "runs": runs, "embedder": embedder, "dir": str(root)}
    for level in _LEVELS:
        report[f"{level}_seconds"] = [round(s, 2) for s in seconds[level]]
        report[f"{level}_median_seconds"] = round(medians[level], 2)
        report[f"{level}_messages_per_s"] = round(messages / medians[level], 1)
    report["full_over_normal"] = round(medians["full"] / medians["normal"], 3)
    report["full_extra_ms_per_commit"] = round(
        (medians["full"] - medians["normal"]) * 1000 / commits, 2)
    return report


def add_durability_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``durability`` under a ``bench`` subparsers object."""
    p = subparsers.add_parser("durability", help="ingest cost of MEMOS_DURABILITY=full "
                              "beside normal (embedded SQLite)")
    p.add_argument("--messages", type=int, default=2000, help="turns to ingest (default 2000)")
    p.add_argument("--batch", type=int, default=20, help="turns per request (default 20)")
    p.add_argument("--runs", type=int, default=3, help="runs per durability (median reported)")
    p.add_argument("--embedder", default="minilm",
                   help="minilm (default: what ingest really costs) or hashing (storage alone)")
    p.add_argument("--dir", type=Path, default=None,
                   help="where the data directories are made (default: the current "
                        "directory; use the disk you deploy on)")
    p.add_argument("--json", dest="json_path", default=None, help="write the report here")
    p.set_defaults(func=_main)
    return p


def _main(args: argparse.Namespace) -> int:
    report = run_durability_bench(messages=args.messages, batch=args.batch, runs=args.runs,
                                  embedder=args.embedder, directory=args.dir)
    width = max(len(k) for k in report)
    for key, value in report.items():
        print(f"{key:<{width}}  {value}")
    if args.json_path:
        Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_path).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json_path}", file=sys.stderr)
    return 0
