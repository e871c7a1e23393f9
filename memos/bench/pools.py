"""``memos bench pools``: the router's candidate-pool sizes, chosen leave-one-conversation-out.

Each LoCoMo conversation is ingested once into a :class:`~memos.retrieval.granular_index.
GranularIndex` (as ``memos eval locomo``'s ``router`` does); every question is then answered
by exhaustive scoring (the reference) and by candidate scoring under each pool setting of a
grid (``dense_pool = lexical_pool``, ``session_pool``, ``graph_pool``). For each held-out
conversation a setting is chosen on the *other* conversations — the one with the smallest
mean pool whose turn recall@5 there is within ``tolerance`` points of exhaustive scoring
(else the best recall@5) — and scored on the held-out one, so no conversation is scored with
a pool size chosen on itself. Recalls are in percent.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["run_pool_study", "add_pools_command", "DEFAULT_GRID"]

#: ``(dense_pool = lexical_pool, session_pool, graph_pool)`` settings tried.
DEFAULT_GRID: tuple[tuple[int, int, int], ...] = tuple(
    (p, s, g) for p in (10, 25, 50, 100, 200) for s in (0, 3, 5, 10) for g in (0, 3))

_KS = (1, 5, 10)


def _recalls(evidence: set[str], turns: list[str]) -> dict[str, float]:
    return {f"turn_recall@{k}": len(evidence & set(turns[:k])) / len(evidence) for k in _KS}


def run_pool_study(data_path: str | Path, *, grid: Sequence[tuple[int, int, int]] = DEFAULT_GRID,
                   tolerance: float = 0.5, conversations: Sequence[str] | None = None,
                   max_questions: int | None = None, embedder: Any = None,
                   progress: bool = True) -> dict[str, Any]:
    """Score exhaustive and candidate router search over ``grid``; return the report.

    Report keys: ``exhaustive`` and ``settings.<p/s/g>`` (each ``{turn_recall@k, pool_mean,
    pool_p95, by_conversation}``), ``loco`` (per held-out conversation: the chosen setting,
    its recall and the exhaustive recall there; ``mean`` of both over conversations).
    """
    from tqdm.auto import tqdm

    from memos.embed import default_embedder
    from memos.eval.locomo import CATEGORIES, QueryEmbeddings, RouterRetriever, load_locomo

    convs = load_locomo(data_path, conversations=conversations)
    embedder = embedder or default_embedder()
    queries = QueryEmbeddings(embedder)
    names = ["exhaustive"] + [f"{p}/{s}/{g}" for p, s, g in grid]
    # name -> conversation -> list of per-question metrics (+ pool size)
    per: dict[str, dict[str, list[dict[str, float]]]] = {n: {} for n in names}
    started = time.perf_counter()
    for conv in tqdm(convs, desc="conversations", disable=not progress):
        vecs = embedder.embed([t.text for t in conv.turns])
        retriever = RouterRetriever(embedder, queries, vectors=vecs)
        retriever.ingest(conv)
        index = retriever.index
        base = index.config
        qs = [q for q in conv.questions if q.category in CATEGORIES and q.evidence]
        if max_questions is not None:
            qs = qs[:max_questions]
        for q in qs:
            qv, _ = queries.get(q.question)
            ev = set(q.evidence)
            qtok = index.analyzer.tokens(q.question)
            for name in names:
                if name == "exhaustive":
                    index.config = base
                    res = index.search(q.question, qv, top_k=max(_KS), candidates=False)
                    pool = float(len(index._channels["turn"].vectors))
                else:
                    p, s, g = (int(x) for x in name.split("/"))
                    index.config = dataclasses.replace(base, dense_pool=p, lexical_pool=p,
                                                       session_pool=s, graph_pool=g)
                    res = index.search(q.question, qv, top_k=max(_KS), candidates=True)
                    pool = float(len(index.candidate_turns(qtok, qv)[0]))
                m = _recalls(ev, [retriever.dia_of[h.id] for h in res.turns
                                  if h.id is not None])
                m["pool"] = pool
                per[name].setdefault(conv.sample_id, []).append(m)
        index.config = base
    ids = [c.sample_id for c in convs]

    def summary(name: str, keep: Sequence[str]) -> dict[str, Any]:
        rows = [m for c in keep for m in per[name].get(c, [])]
        out = {f"turn_recall@{k}": round(100 * float(np.mean([r[f"turn_recall@{k}"]
                                                               for r in rows])), 2)
               for k in _KS}
        pools = [r["pool"] for r in rows]
        out["pool_mean"] = round(float(np.mean(pools)), 1)
        out["pool_p95"] = round(float(np.percentile(pools, 95)), 1)
        return out

    report: dict[str, Any] = {"dataset": str(data_path), "conversations": ids,
                              "tolerance_points": tolerance,
                              "questions": sum(len(v) for v in per["exhaustive"].values()),
                              "seconds": 0.0, "settings": {}}
    for name in names:
        entry = summary(name, ids)
        entry["by_conversation"] = {c: summary(name, [c])["turn_recall@5"] for c in ids}
        if name == "exhaustive":
            report["exhaustive"] = entry
        else:
            report["settings"][name] = entry
    loco: dict[str, Any] = {}
    for held in ids:
        train = [c for c in ids if c != held] or [held]
        ref = summary("exhaustive", train)["turn_recall@5"]
        scored = {n: summary(n, train) for n in names[1:]}
        ok = [n for n, v in scored.items() if v["turn_recall@5"] >= ref - tolerance]
        chosen = (min(ok, key=lambda n: (scored[n]["pool_mean"], n)) if ok
                  else max(scored, key=lambda n: scored[n]["turn_recall@5"]))
        test = summary(chosen, [held])
        loco[held] = {"chosen": chosen, "turn_recall@5": test["turn_recall@5"],
                      "exhaustive_turn_recall@5": summary("exhaustive", [held])["turn_recall@5"],
                      "pool_mean": test["pool_mean"]}
    report["loco"] = {
        "by_conversation": loco,
        "mean_turn_recall@5": round(float(np.mean([v["turn_recall@5"]
                                                   for v in loco.values()])), 2),
        "mean_exhaustive_turn_recall@5": round(float(np.mean(
            [v["exhaustive_turn_recall@5"] for v in loco.values()])), 2)}
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def _cmd(args: argparse.Namespace) -> int:
    report = run_pool_study(args.data, tolerance=args.tolerance,
                            max_questions=args.max_questions, progress=not args.no_progress)
    print(json.dumps({"exhaustive": report["exhaustive"], "loco": report["loco"]}, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def add_pools_command(kinds: Any) -> None:
    """Add ``pools`` to ``memos bench``'s kinds."""
    p = kinds.add_parser("pools", help="router candidate-pool sizes, leave-one-"
                         "conversation-out on LoCoMo")
    p.add_argument("--data", required=True, help="path to a LoCoMo JSON file")
    p.add_argument("--tolerance", type=float, default=0.5,
                   help="points of turn recall@5 a pool may lose against exhaustive scoring "
                   "on the training conversations (default 0.5)")
    p.add_argument("--max-questions", type=int, default=None,
                   help="score at most this many questions per conversation")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", help="write the report here")
    p.set_defaults(func=_cmd)
