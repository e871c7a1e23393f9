"""The bundled model against its per-channel dynamic int8 build: agreement and speed.

    python -m memos.cli --data-dir DIR embedders quantize          # builds the variant
    flock /tmp/memos-timing.lock python .ci/bench_embedders.py --models-dir DIR/models \\
        --data ../shared/data/locomo/locomo_dev.json --json /tmp/embedders.json

Agreement: cosine between the two models' vectors of every LoCoMo dev turn (as ingest
embeds them, ``"speaker: text"``) and question. Speed, on 1 and on 2 intra-op threads:
one query at a time (the search path; the questions, ms per query) and batches of turns
(the ingest path, turns per second). Medians of ``--repeats`` timed passes after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--models-dir", required=True, type=Path)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--turns", type=int, default=1500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", dest="json_path", default=None)
    args = ap.parse_args()

    from memos.embed import OnnxMiniLM
    from memos.embedders.quantize import load_quantized
    from memos.eval.locomo import load_locomo

    convs = load_locomo(args.data)
    turns = [t.text for c in convs for s in c.sessions for t in s.turns]
    questions = list(dict.fromkeys(q.question for c in convs for q in c.questions))

    base, quant = OnnxMiniLM(), load_quantized(args.models_dir)
    texts = turns + questions
    cos = np.sum(base.embed(texts) * quant.embed(texts), axis=1)
    report: dict[str, object] = {
        "models": {"current": base.name, "int8-per-channel": quant.name},
        "agreement": {"texts": len(texts), "cosine_min": float(cos.min()),
                      "cosine_p1": float(np.percentile(cos, 1)),
                      "cosine_p5": float(np.percentile(cos, 5)),
                      "cosine_mean": float(cos.mean())},
        "speed": {}}
    speed: dict[str, dict[str, float]] = {}
    for threads in (1, 2):
        for label, make in (("current", lambda t: OnnxMiniLM(threads=t)),
                            ("int8-per-channel", lambda t: load_quantized(args.models_dir,
                                                                          threads=t))):
            model = make(threads)
            model.embed(questions[:20])  # warm-up
            per_query, per_turn = [], []
            for _ in range(args.repeats):
                started = time.perf_counter()
                for q in questions[:args.queries]:
                    model.embed([q])
                per_query.append((time.perf_counter() - started) * 1000 / args.queries)
                started = time.perf_counter()
                model.embed(turns[:args.turns])
                per_turn.append(args.turns / (time.perf_counter() - started))
            speed[f"{label}@{threads}t"] = {"query_ms": float(np.median(per_query)),
                                            "ingest_turns_per_s": float(np.median(per_turn))}
    for threads in (1, 2):
        cur, q = speed[f"current@{threads}t"], speed[f"int8-per-channel@{threads}t"]
        speed[f"speedup@{threads}t"] = {
            "query": cur["query_ms"] / q["query_ms"],
            "ingest": q["ingest_turns_per_s"] / cur["ingest_turns_per_s"]}
    report["speed"] = speed
    text = json.dumps(report, indent=2)
    print(text)
    if args.json_path:
        Path(args.json_path).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
