"""``memos bench`` end to end: a real server process, real embedder, a small cube."""

from __future__ import annotations

import json
from pathlib import Path

from memos.bench.dialogue import realistic_turns
from memos.cli import main


def test_bench_reports_every_field(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "--units", "120", "--searches", "30", "--session-size", "40",
                 "--extractor", "none", "--mode", "router", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["units"] == 120 and report["sessions"] == 3 and report["searches"] == 30
    assert report["search_mode"] == "router"
    assert report["ingest_units_per_s"] > 0 and report["embedder_texts_per_s"] > 0
    assert 0 < report["search_p50_ms"] <= report["search_p95_ms"] <= report["search_p99_ms"]
    assert report["db_bytes"] > 0 and report["index_bytes"] > 0


def test_realistic_turns_are_repeatable() -> None:
    assert list(realistic_turns(50, seed=3)) == list(realistic_turns(50, seed=3))
    assert list(realistic_turns(50, seed=3)) != list(realistic_turns(50, seed=4))


def test_durability_bench_times_both_levels_side_by_side(tmp_path: Path) -> None:
    out = tmp_path / "durability.json"
    assert main(["bench", "durability", "--messages", "40", "--batch", "20", "--runs", "2",
                 "--embedder", "hashing", "--dir", str(tmp_path), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["commits"] == 2 and report["dir"] == str(tmp_path.resolve())
    for level in ("full", "normal"):
        assert len(report[f"{level}_seconds"]) == 2
        assert report[f"{level}_messages_per_s"] > 0
    assert report["full_over_normal"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["durability.json"]  # cleaned up


def test_vector_cache_adds_missing_texts_and_the_cached_embedder_reads_it(tmp_path: Path) -> None:
    from memos.bench.needle import CachedEmbedder, VectorCache
    from memos.embed import HashingEmbedder

    class Counting(HashingEmbedder):
        calls: list[int] = []

        def embed(self, texts):  # type: ignore[no-untyped-def]
            self.calls.append(len(texts))
            return super().embed(texts)

    emb = Counting(32)
    path = tmp_path / "c.npy"
    first = VectorCache.build(path, ["a b", "c d", "a b"], emb, progress=False)
    assert emb.calls == [2] and len(first.rows) == 2
    again = VectorCache.build(path, ["c d", "e f"], emb, progress=False)  # only "e f" is new
    assert emb.calls == [2, 1] and set(again.rows) == {"a b", "c d", "e f"}
    assert VectorCache.build(path, ["e f"], emb, progress=False).rows == again.rows
    assert emb.calls == [2, 1]
    cached = CachedEmbedder(emb, [VectorCache.load(path)])
    out = cached.embed(["e f", "never seen"])
    assert emb.calls == [2, 1, 1]  # the unseen text only
    assert out.tobytes() == emb.embed(["e f", "never seen"]).tobytes()
    assert cached.name == emb.name and cached.dim == 32
