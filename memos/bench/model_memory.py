"""``memos bench model-memory``: activation and parametric memory on the bundled backbone.

Side by side, in one process, on the prepared checkpoint:

* activation — time to first token for a question after a ~1,024-token memory prefix,
  with the prefix's KV cache injected (loaded from its safetensors blob) vs recomputed
  (median of ``repeats``), and the largest logit difference over a greedy continuation;
* parametric — a LoRA adapter trained on ``n_facts`` synthetic facts (names and values the
  base model cannot know): NLL per token of the fact statements and of held-out text
  (``memos/data/backbone_heldout.txt``) with and without it, closed-book QA accuracy (the
  question alone, no memory in the prompt; correct when the answer string is in the greedy
  reply) with and without it, and the training time.

    report = run_model_memory_bench("./memos-data")
    report["activation"]["speedup"], report["parametric"]["facts_nll_adapter"]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = [
    "make_facts",
    "mean_nll",
    "run_model_memory_bench",
    "add_model_memory_command",
    "format_report",
    "bench_activation",
    "bench_parametric",
]

_NAMES = ["Zorvan", "Quillia", "Brannoch", "Tesmira", "Okelu", "Vantrell", "Mirabeth", "Dostik",
          "Yelvane", "Corrigan", "Iskaro", "Phaedrix", "Lunetta", "Gavrosh", "Ubrecht",
          "Selwyna", "Thornby", "Kazimir", "Orlaith", "Penwick", "Rastelle", "Fennick",
          "Hollisandre", "Marguin", "Estrova", "Jaspery", "Nimbrel", "Calderon", "Wystan",
          "Ardelia", "Bexley", "Cordova", "Delphine", "Emrick", "Florentin", "Gisella",
          "Halvard", "Ingrith", "Jovanka", "Kestrel", "Leopold", "Marisol", "Norbert",
          "Ottilie", "Percival", "Quintessa", "Roderick", "Sabine", "Tobias", "Ursula"]
_ATTRS = [("favourite colour", ["teal", "mauve", "amber", "crimson", "ochre", "lilac"]),
          ("home city", ["Tromso", "Valdivia", "Kumasi", "Tartu", "Hobart", "Ushuaia"]),
          ("pet's name", ["Pickle", "Juniper", "Noodle", "Waffles", "Pepper", "Mango"]),
          ("job", ["glassblower", "beekeeper", "cartographer", "luthier", "falconer",
                   "locksmith"]),
          ("favourite food", ["dumplings", "paella", "goulash", "pierogi", "ramen", "falafel"])]


def make_facts(n: int = 50, seed: int = 0) -> list[dict[str, str]]:
    """``n`` facts ``{"memory", "question", "answer"}`` about made-up people (≤ 50)."""
    if not 1 <= n <= len(_NAMES):
        raise ValueError(f"n must be in 1..{len(_NAMES)}")
    rng = random.Random(seed)
    out = []
    for i, name in enumerate(_NAMES[:n]):
        attr, values = _ATTRS[i % len(_ATTRS)]
        value = rng.choice(values)
        out.append({"memory": f"{name}'s {attr} is {value}.",
                    "question": f"What is {name}'s {attr}?", "answer": value})
    return out


def mean_nll(model: Any, seqs: list[tuple[list[int], int]]) -> float:
    """Mean NLL per target token (nats) of ``(ids, start)``: tokens ``start..`` are scored."""
    import torch
    import torch.nn.functional as F

    total, count = 0.0, 0
    with torch.inference_mode():
        for ids, start in seqs:
            logits, _ = model(torch.tensor([ids]))
            lp = F.log_softmax(logits[0, start - 1:-1].float(), dim=-1)
            tgt = torch.tensor(ids[start:])
            total -= float(lp.gather(1, tgt[:, None]).sum())
            count += len(tgt)
    return total / max(count, 1)


def _heldout(bb: Any, tokens: int, window: int = 256) -> list[tuple[list[int], int]]:
    from memos.backbone.prepare import HELDOUT_FILE, read_data_text

    ids = bb.encode(read_data_text(HELDOUT_FILE))[:tokens]
    return [(ids[i:i + window], 1) for i in range(0, len(ids) - 8, window)]


def _qa_acc(bb: Any, facts: list[dict[str, str]], max_new_tokens: int = 10) -> float:
    ok = 0
    for f in facts:
        reply = bb.generate(bb.chat_prompt([{"role": "user", "content": f["question"]}]),
                            max_new_tokens=max_new_tokens)
        ok += f["answer"].lower() in reply.lower()
    return ok / len(facts)


def _ms(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def bench_activation(bb: Any, *, prefix_tokens: int = 1024, repeats: int = 5,
                     blob_dir: Path) -> dict[str, Any]:
    import torch

    from memos.backbone.prepare import HELDOUT_FILE, read_data_text
    from memos.memory import model_fingerprint
    from memos.memory.activation import greedy, prefill, render_prefix, render_turns
    from memos.store.blobs import BlobStore

    lines = [ln.strip() for ln in read_data_text(HELDOUT_FILE).splitlines()
             if ln.strip() and not ln.startswith("#")]
    memories: list[str] = []
    for line in lines:
        if len(bb.encode(render_prefix(bb, memories + [line]))) > prefix_tokens:
            break
        memories.append(line)
    prefix = bb.encode(render_prefix(bb, memories))
    suffix = bb.encode(render_turns(bb, [{"role": "user",
                                          "content": "What did Declan say about the drums?"}]))
    store = BlobStore(blob_dir)
    cache = prefill(bb.model, prefix)
    tensors = {f"{kv}.{i}": t for i, pair in enumerate(cache) for kv, t in zip("kv", pair)}
    sha = store.put(tensors, model_fingerprint(bb))
    loaded_t, _ = store.get(sha)
    loaded = [(loaded_t[f"k.{i}"], loaded_t[f"v.{i}"]) for i in range(len(cache))]
    start = len(prefix)

    def first_token(ids: list[int], kv: Any, pos: int) -> int:
        with torch.inference_mode():
            logits, _ = bb.model(torch.tensor([ids]), kv, pos, last_only=True)
        return int(logits[0, -1].argmax())

    first_token(suffix, loaded, start)  # warm-up
    injected = _ms(lambda: first_token(suffix, loaded, start), repeats)
    recomputed = _ms(lambda: first_token(prefix + suffix, None, 0), repeats)
    load_ms = _ms(lambda: store.get(sha), repeats)
    inj_ids, inj_logits = greedy(bb.model, suffix, cache=loaded, max_new_tokens=16)
    rec_ids, rec_logits = greedy(bb.model, prefix + suffix, max_new_tokens=16)
    return {"prefix_tokens": len(prefix), "question_tokens": len(suffix),
            "ttft_injected_ms": injected, "ttft_recomputed_ms": recomputed,
            "blob_load_ms": load_ms, "speedup": recomputed / injected,
            "same_greedy_tokens": inj_ids == rec_ids,
            "max_logit_diff": float((inj_logits - rec_logits).abs().max()),
            "blob_mb": (store.path(sha).stat().st_size) / 2**20}


def bench_parametric(bb: Any, *, n_facts: int = 50, steps: int = 100, rank: int = 8,
                     n_layers: int = 12, lr: float = 1e-3, rehearsal: bool = True,
                     heldout_tokens: int = 2048) -> dict[str, Any]:
    from memos.memory.parametric import (
        LoRAConfig,
        attach,
        detach,
        rehearsal_examples,
        render_examples,
        train_lora,
    )
    from memos.types import AdapterCreate

    facts = make_facts(n_facts)
    qa = {f["memory"]: [{"question": f["question"], "answer": f["answer"]}] for f in facts}
    statements = [(bb.encode(f["memory"]), 1) for f in facts]
    held = _heldout(bb, heldout_tokens)
    base = {"facts_nll": mean_nll(bb.model, statements), "heldout_nll": mean_nll(bb.model, held),
            "qa_acc": _qa_acc(bb, facts)}
    cfg = LoRAConfig(rank=rank, alpha=2.0 * rank, n_layers=n_layers)
    examples = render_examples(bb, [(f["memory"], qa[f["memory"]]) for f in facts])
    if rehearsal:  # the API's default mix (AdapterCreate.rehearsal generic windows/example)
        ratio = AdapterCreate.model_fields["rehearsal"].default
        examples += rehearsal_examples(bb, int(len(examples) * ratio))
    t = time.perf_counter()
    tensors = train_lora(bb, examples, cfg, steps=steps, lr=lr)
    train_s = time.perf_counter() - t
    attach(bb.model, tensors, cfg)
    try:
        adapted = {"facts_nll": mean_nll(bb.model, statements),
                   "heldout_nll": mean_nll(bb.model, held), "qa_acc": _qa_acc(bb, facts)}
    finally:
        detach(bb.model)
    return {"n_facts": n_facts, "examples": len(examples), "steps": steps, "rank": rank,
            "n_layers": n_layers, "lr": lr, "rehearsal": rehearsal,
            "facts_nll_base": base["facts_nll"], "facts_nll_adapter": adapted["facts_nll"],
            "heldout_nll_base": base["heldout_nll"],
            "heldout_nll_adapter": adapted["heldout_nll"],
            "qa_acc_base": base["qa_acc"], "qa_acc_adapter": adapted["qa_acc"],
            "train_s": train_s}


def run_model_memory_bench(data_dir: str | Path | None = None, *, n_facts: int = 50,
                           steps: int = 100, prefix_tokens: int = 1024, repeats: int = 5,
                           threads: int | None = None, json_path: str | Path | None = None,
                           parts: tuple[str, ...] = ("activation", "parametric"),
                           say: Any = None) -> dict[str, Any]:
    """Run the benchmark on the prepared backbone in ``data_dir``; returns (and with
    ``json_path`` writes) ``{"activation": {...}, "parametric": {...}, ...}``; ``say(text)``
    reports each stage (the CLI prints to stderr)."""
    import torch

    from memos.backbone.checkpoint import load_backbone

    if threads:
        torch.set_num_threads(threads)
    bb = load_backbone(data_dir)
    report: dict[str, Any] = {"backbone": bb.fingerprint, "variant": bb.variant,
                              "threads": torch.get_num_threads()}
    say = say or (lambda _text: None)
    if "activation" in parts:
        say(f"activation: {prefix_tokens}-token prefix, {repeats} repeats")
        with tempfile.TemporaryDirectory() as tmp:
            report["activation"] = bench_activation(bb, prefix_tokens=prefix_tokens,
                                                    repeats=repeats, blob_dir=Path(tmp))
    if "parametric" in parts:
        say(f"parametric: {n_facts} facts, {steps} steps (base eval, train, adapted eval)")
        report["parametric"] = bench_parametric(bb, n_facts=n_facts, steps=steps)
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2))
    return report


def format_report(report: dict[str, Any]) -> str:
    out = []
    for part in ("activation", "parametric"):
        for key, value in report.get(part, {}).items():
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            out.append(f"{part:<11} {key:<22} {shown}")
    return "\n".join(out)


def add_model_memory_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``model-memory`` under a ``bench`` subparsers object."""
    p = subparsers.add_parser("model-memory", help="activation / parametric memory on the "
                              "bundled backbone (TTFT, NLL, closed-book QA)")
    p.add_argument("--backbone-data-dir", default=None,
                   help="data directory holding backbone/ (default: --data-dir, "
                        "$MEMOS_DATA_DIR, ./memos-data)")
    p.add_argument("--facts", type=int, default=50, help="facts the adapter learns")
    p.add_argument("--steps", type=int, default=100, help="LoRA training steps")
    p.add_argument("--prefix-tokens", type=int, default=1024,
                   help="tokens in the activation-memory prefix")
    p.add_argument("--repeats", type=int, default=5,
                   help="timing repeats (median reported)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's, one per core)")
    p.add_argument("--only", choices=["activation", "parametric"], default=None,
                   help="measure one kind only")
    p.add_argument("--json", dest="json_path", default=None, help="write the report here")
    p.set_defaults(func=_main)
    return p


def _main(args: argparse.Namespace) -> int:
    data_dir = args.backbone_data_dir or getattr(args, "data_dir", None)
    parts = (args.only,) if args.only else ("activation", "parametric")
    report = run_model_memory_bench(data_dir, n_facts=args.facts, steps=args.steps,
                                    prefix_tokens=args.prefix_tokens, repeats=args.repeats,
                                    threads=args.threads, json_path=args.json_path,
                                    parts=parts,
                                    say=lambda text: print(text, file=sys.stderr, flush=True))
    print(format_report(report))
    return 0
