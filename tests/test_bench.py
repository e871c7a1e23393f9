"""``memos bench`` end to end: a real server process, real embedder, a small cube."""

from __future__ import annotations

import json
from pathlib import Path

from memos.bench.server import realistic_turns
from memos.cli import main


def test_bench_reports_every_field(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "--units", "120", "--searches", "30", "--session-size", "40",
                 "--extractor", "none", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["units"] == 120 and report["sessions"] == 3 and report["searches"] == 30
    assert report["ingest_units_per_s"] > 0 and report["embedder_texts_per_s"] > 0
    assert 0 < report["search_p50_ms"] <= report["search_p95_ms"] <= report["search_p99_ms"]
    assert report["db_bytes"] > 0 and report["index_bytes"] > 0


def test_realistic_turns_are_repeatable() -> None:
    assert list(realistic_turns(50, seed=3)) == list(realistic_turns(50, seed=3))
    assert list(realistic_turns(50, seed=3)) != list(realistic_turns(50, seed=4))
