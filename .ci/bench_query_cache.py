"""Query-embedding cache: server time of a search whose query vector is cached vs not.

Run under the timing lock, on a real store and the real model, no test framework:

    flock /tmp/memos-timing.lock python .ci/bench_query_cache.py \\
        --data ../shared/data/locomo/locomo_dev.json --json /tmp/query_cache.json

One LoCoMo conversation is ingested into a cube of an in-process app (SQLite + FAISS,
the bundled MiniLM, the router on); its questions are searched once each (misses: the
query is embedded), then again (hits). Server time is the ``total`` of each response's
``Server-Timing`` (the sum of its stages, checked here: what the server spent, HTTP client
excluded); p50/p95/p99 per stage and in total are reported for both passes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np


def _percentiles(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "p99": float(np.percentile(a, 99)), "n": int(a.size)}


def _stages(header: str) -> dict[str, float]:
    out = {}
    for part in header.split(","):
        name, _, dur = part.strip().partition(";dur=")
        out[name] = float(dur)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="a LoCoMo JSON file")
    ap.add_argument("--conversation", default="conv-26")
    ap.add_argument("--mode", default="auto", help="search mode (auto: router when usable)")
    ap.add_argument("--json", dest="json_path", default=None)
    args = ap.parse_args()

    from fastapi.testclient import TestClient

    from api.main import create_app
    from memos.config import Settings
    from memos.eval.locomo import load_locomo

    conv = load_locomo(args.data, conversations=[args.conversation])[0]
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), run_worker=False, extractor="none",
                            retrieval_flush_seconds=0)
        with TestClient(create_app(settings)) as api:
            api.post("/v1/cubes", json={"id": "bench"}).raise_for_status()
            turns = 0
            for session in conv.sessions:
                messages = [{"role": "user", "speaker": t.speaker,
                             "content": t.text.split(": ", 1)[-1]} for t in session.turns]
                turns += len(messages)
                api.post("/v1/cubes/bench/messages", json={
                    "session_id": f"s{session.index}", "messages": messages, "sync": True,
                }).raise_for_status()
            queries = list(dict.fromkeys(q.question for q in conv.questions))
            passes: dict[str, dict[str, list[float]]] = {"miss": {}, "hit": {}}
            modes = set()
            for name in ("miss", "hit"):
                for query in queries:
                    body = {"query": query, "top_k": 10}
                    if args.mode != "auto":
                        body["mode"] = args.mode
                    r = api.post("/v1/cubes/bench/search", json=body)
                    r.raise_for_status()
                    modes.add(r.json()["mode"])
                    stages = _stages(r.headers["Server-Timing"])
                    parts = sum(ms for stage, ms in stages.items() if stage != "total")
                    if abs(parts - stages["total"]) > 0.05:  # the header's own invariant
                        raise RuntimeError(f"stages sum to {parts} ms, total says "
                                           f"{stages['total']} ms")
                    for stage, ms in stages.items():
                        passes[name].setdefault(stage, []).append(ms)
    report = {
        "what": "server time (Server-Timing total, the sum of its stages) of "
                "/v1/cubes/{id}/search, ms",
        "conversation": args.conversation, "turns": turns, "queries": len(queries),
        "modes": sorted(modes),
        "miss": {stage: _percentiles(v) for stage, v in passes["miss"].items()},
        "hit": {stage: _percentiles(v) for stage, v in passes["hit"].items()},
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json_path:
        Path(args.json_path).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
