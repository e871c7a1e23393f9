"""``memos bench needle`` end to end on a tiny cube: the build goes through MemCube.ingest
(router structures maintained), a real server answers the searches, a built cube is
reused, and the vector cache is one file per embedder fingerprint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import _PG_PROBLEM, pg_database

from memos.bench.needle import CachedEmbedder, VectorCache, cache_path, timing_lock
from memos.cli import main


def _locomo(path: Path) -> Path:
    turns = [("Ana", "I moved to Berlin last spring."), ("Ben", "Nice! How is the city?"),
             ("Ana", "My dog Pixel loves the canal."), ("Ben", "I started learning the cello.")]
    path.write_text(json.dumps([{"sample_id": "conv-t", "conversation": {
        "speaker_a": "Ana", "speaker_b": "Ben", "session_1_date_time": "1:56 pm on 8 May, 2023",
        "session_1": [{"speaker": s, "dia_id": f"D1:{i}", "text": t}
                      for i, (s, t) in enumerate(turns, 1)]},
        "qa": [{"question": "What is the name of Ana's dog?", "answer": "Pixel",
                "evidence": ["D1:3"], "category": 4},
               {"question": "Which instrument is Ben learning?", "answer": "cello",
                "evidence": ["D1:4"], "category": 4}]}]))
    return path


def test_needle_builds_once_then_reuses_the_cube(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MEMOS_EMBEDDER", "hashing")
    data = _locomo(tmp_path / "locomo.json")
    cube_dir, cache = tmp_path / "cube", tmp_path / "cache"
    common = ["bench", "needle", "--data", str(data), "--distractors", "60",
              "--session-size", "10", "--cache-dir", str(cache), "--data-dir", str(cube_dir),
              "--no-progress"]
    built = tmp_path / "built.json"
    assert main([*common, "--build-only", "--slice-turns", "20",
                 "--timing-lock", str(tmp_path / "lock"), "--json", str(built)]) == 0
    manifest = json.loads((cube_dir / "needle.json").read_text())
    assert json.loads(built.read_text())["build"] == manifest
    assert manifest["turns"] == 64 and manifest["needle_turns"] == 4
    assert manifest["units"]["turn"] == 64 and manifest["units"]["session"] == 7
    assert manifest["units"]["summary"] > 0 and manifest["units"]["keyword"] > 0
    assert manifest["links"].get("associated", 0) > 0  # the router associated units on add
    ingest = manifest["ingest"]
    assert [s["turns"] for s in ingest["slices"]] == [20, 20, 20, 4]
    assert ingest["turns_per_s"] > 0 and ingest["cache_hits"] >= 64  # turn vectors cached
    model = manifest["embedder"]
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        p.name for kind in ("distractors-s0", "locomo-dev-turns")
        for p in [cache_path(cache, kind, model), cache_path(cache, kind, model)
                  .with_suffix(".json")])

    assert main([*common, "--build-only"]) == 2  # never builds over a built cube
    assert "pass --reuse" in capsys.readouterr().err
    assert main([*common[:5], "61", *common[6:], "--reuse"]) == 2
    assert "built with other parameters" in capsys.readouterr().err

    out = tmp_path / "search.json"
    assert main([*common, "--reuse", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["reused"] is True and report["build"] == manifest
    assert report["questions"] == 2 and report["workers"] == 1
    for mode in ("router", "dense"):
        assert report[mode]["served_mode"] == mode
        assert 0 <= report[mode]["turn_recall@5"] <= 100
        assert 0 < report[mode]["search_ms"]["p50"] <= report[mode]["search_ms"]["p99"]
        assert "total" in report[mode]["server_timing_ms"]


def test_reuse_needs_a_data_dir_and_workers_need_postgres(tmp_path: Path) -> None:
    data = _locomo(tmp_path / "locomo.json")
    with pytest.raises(SystemExit, match="--data-dir"):
        main(["bench", "needle", "--data", str(data), "--reuse"])
    with pytest.raises(SystemExit, match="--database-url"):
        main(["bench", "needle", "--data", str(data), "--workers", "2"])


def test_vector_caches_are_one_file_per_embedder_fingerprint(tmp_path: Path) -> None:
    from memos.embed import HashingEmbedder

    a, b = HashingEmbedder(16), HashingEmbedder(32)
    assert a.name != b.name
    pa, pb = cache_path(tmp_path, "turns", a.name), cache_path(tmp_path, "turns", b.name)
    assert pa != pb and pa.suffix == ".npy"
    VectorCache.build(pa, ["x y"], a, progress=False)
    VectorCache.build(pb, ["x y"], b, progress=False)
    assert VectorCache.load(pa).vectors.shape == (1, 16)  # b did not overwrite a's vectors
    assert VectorCache.load(pb).vectors.shape == (1, 32)
    # a cache of another model is never read
    mixed = CachedEmbedder(a, [VectorCache.load(pb)])
    mixed.embed(["x y"])
    assert (mixed.hits, mixed.misses) == (0, 1)


def test_timing_lock_is_exclusive(tmp_path: Path) -> None:
    import fcntl

    path = tmp_path / "lock"
    with timing_lock(path), open(path) as other:
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with timing_lock(None):
        pass
    with open(path) as other:  # released after the block
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_needle_on_postgres_with_two_workers(tmp_path: Path, pg_server: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The PostgreSQL + pgvector variant: built there, searched by two API processes."""
    if pg_server is None:
        pytest.skip(f"PostgreSQL (pgserver) could not start: {_PG_PROBLEM}")
    monkeypatch.setenv("MEMOS_EMBEDDER", "hashing")
    url = pg_database(pg_server)
    data = _locomo(tmp_path / "locomo.json")
    out = tmp_path / "pg.json"
    assert main(["bench", "needle", "--data", str(data), "--distractors", "30",
                 "--session-size", "10", "--cache-dir", str(tmp_path / "cache"),
                 "--data-dir", str(tmp_path / "cube"), "--database-url", url,
                 "--workers", "2", "--no-progress", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["build"]["backend"] == "postgres" and report["workers"] == 2
    assert report["build"]["units"]["turn"] == 34
    assert not (tmp_path / "cube" / "memos.db").exists()  # nothing went to SQLite
    for mode in ("router", "dense"):
        assert report[mode]["served_mode"] == mode
