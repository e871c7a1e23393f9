"""``memos backbone eval``: quality, sparsity and speed of every routing variant.

For each variant, on the shipped held-out text (never used for calibration):

* ``ppl`` — perplexity over non-overlapping 512-token windows;
* ``ffn_active_frac`` — fraction of the dense FFN weights read per token, router (the full
  gate projection) included, measured on the same tokens;
* ``load_cv`` — coefficient of variation of expert usage (0 = balanced);
* ``prefill_tok_s`` / ``decode_tok_s`` — batch-1 speed, median of ``runs`` rounds in which
  all variants run side by side (interleaved) in one process;
* ``qa_acc`` — the 30 memory-QA items answered greedily with the memory in the prompt;
  correct when the answer occurs in the reply (case-insensitive).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from typing import Any

from .checkpoint import Backbone
from .prepare import HELDOUT_FILE, QA_FILE, read_data_text

__all__ = ["perplexity", "speed", "qa_accuracy", "load_qa_items", "evaluate", "format_table"]


def perplexity(model: Any, ids: list[int], *, window: int = 512, progress: Any = None) -> float:
    """exp(mean next-token NLL) over non-overlapping windows of ``window`` tokens."""
    import torch
    import torch.nn.functional as F

    nll, n = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(ids) - 1, window):
            x = torch.tensor([ids[i : i + window + 1]])
            if x.shape[1] < 2:
                break
            logits, _ = model(x[:, :-1])
            nll += F.cross_entropy(logits[0], x[0, 1:], reduction="sum").item()
            n += x.shape[1] - 1
            if progress is not None:
                progress.update()
    if n == 0:
        raise ValueError("need at least 2 tokens")
    return math.exp(nll / n)


def speed(model: Any, prompt: list[int], *, new_tokens: int = 32) -> tuple[float, float]:
    """(prefill tokens/s, decode tokens/s) for one greedy batch-1 generation."""
    import torch

    with torch.inference_mode():
        t0 = time.perf_counter()
        logits, cache = model(torch.tensor([prompt]), last_only=True)
        t1 = time.perf_counter()
        pos = len(prompt)
        for _ in range(new_tokens):
            tok = logits[0, -1].argmax().view(1, 1)
            logits, cache = model(tok, cache, pos)
            pos += 1
        t2 = time.perf_counter()
    return len(prompt) / (t1 - t0), new_tokens / (t2 - t1)


def load_qa_items() -> list[dict[str, str]]:
    return json.loads(read_data_text(QA_FILE))["items"]


def qa_prompt(bb: Backbone, item: dict[str, str]) -> str:
    return bb.chat_prompt(
        [{"role": "user", "content": f"Memory: {item['memory']}\nQuestion: {item['question']}"}]
    )


def qa_accuracy(
    bb: Backbone, items: list[dict[str, str]], *, max_new_tokens: int = 16, progress: Any = None
) -> float:
    """Share of items whose greedy reply contains the answer (case-insensitive)."""
    if not items:
        raise ValueError("no QA items")
    ok = 0
    for it in items:
        reply = bb.generate(qa_prompt(bb, it), max_new_tokens=max_new_tokens)
        ok += it["answer"].lower() in reply.lower()
        if progress is not None:
            progress.update()
    return ok / len(items)


def evaluate(
    bb: Backbone,
    *,
    variants: list[str] | None = None,
    runs: int = 5,
    heldout_tokens: int | None = None,
    qa_items: int | None = None,
    prompt_tokens: int = 128,
    new_tokens: int = 32,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate variants of ``bb`` (default: all in its config); returns the report dict."""
    import torch
    from tqdm import tqdm

    from .moe import expert_usage, ffn_read_frac, load_cv, reset_stats

    names = variants or list(bb.config["variants"])
    unknown = set(names) - set(bb.config["variants"])
    if unknown:
        raise ValueError(f"unknown variants {sorted(unknown)}")
    if runs < 1:
        raise ValueError("runs must be >= 1")
    ids = bb.encode(read_data_text(HELDOUT_FILE))[:heldout_tokens]
    items = load_qa_items()[:qa_items]
    n_dense = bb.model.config.n_hidden
    n_win = math.ceil((len(ids) - 1) / 512)
    res: dict[str, dict[str, Any]] = {}
    before = bb.variant
    bar = tqdm(
        total=len(names) * (n_win + len(items)) + runs * len(names),
        desc="backbone eval",
        disable=not progress,
        unit="step",
    )
    for name in names:
        bar.set_postfix_str(name)
        bb.use(name)
        reset_stats(bb.model, track_usage=True)
        ppl = perplexity(bb.model, ids, progress=bar)
        frac = ffn_read_frac(bb.model, n_dense)
        cv = load_cv(expert_usage(bb.model))
        reset_stats(bb.model)
        qa = qa_accuracy(bb, items, progress=bar) if items else None
        res[name] = {
            "ppl": ppl,
            "ffn_active_frac": frac,
            "load_cv": cv,
            "qa_acc": qa,
            "spec": bb.config["variants"][name],
        }
    prompt = ids[:prompt_tokens]
    timings: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    bb.use(names[0])
    speed(bb.model, prompt[:16], new_tokens=4)  # warm-up
    for _ in range(runs):
        for name in names:  # interleaved: every variant sees the same machine state
            bar.set_postfix_str(f"speed {name}")
            bb.use(name)
            timings[name].append(speed(bb.model, prompt, new_tokens=new_tokens))
            bar.update()
    bar.close()
    bb.use(before)
    default = bb.config.get("default_variant")
    dense = res.get("dense")
    for name in names:
        r = res[name]
        r["prefill_tok_s"] = statistics.median(t[0] for t in timings[name])
        r["decode_tok_s"] = statistics.median(t[1] for t in timings[name])
        r["default"] = name == default
    for name in names:  # relative to dense, once every variant has its timings
        if dense:
            res[name]["ppl_ratio"] = res[name]["ppl"] / dense["ppl"]
            res[name]["decode_speedup"] = res[name]["decode_tok_s"] / dense["decode_tok_s"]
    return {
        "fingerprint": bb.fingerprint,
        "default_variant": default,
        "threads": torch.get_num_threads(),
        "runs": runs,
        "heldout_tokens": len(ids),
        "qa_items": len(items),
        "prompt_tokens": len(prompt),
        "decode_tokens": new_tokens,
        "variants": res,
    }


def format_table(report: dict[str, Any]) -> str:
    """Readable table of an :func:`evaluate` report, sorted by FFN fraction read."""
    rows = sorted(report["variants"].items(), key=lambda kv: -kv[1]["ffn_active_frac"])
    head = (
        f"{'variant':<18}{'ppl':>8}{'x dense':>9}{'ffn read':>10}{'load cv':>9}"
        f"{'prefill/s':>11}{'decode/s':>10}{'speedup':>9}{'qa':>7}"
    )
    lines = [head, "-" * len(head)]
    for name, r in rows:
        qa = "-" if r.get("qa_acc") is None else f"{r['qa_acc']:.2f}"
        mark = " *" if r.get("default") else ""
        lines.append(
            f"{name:<18}{r['ppl']:>8.2f}{r.get('ppl_ratio', float('nan')):>9.3f}"
            f"{r['ffn_active_frac']:>10.3f}{r['load_cv']:>9.2f}{r['prefill_tok_s']:>11.1f}"
            f"{r['decode_tok_s']:>10.2f}{r.get('decode_speedup', float('nan')):>9.3f}{qa:>7}{mark}"
        )
    lines.append(
        f"(* default; {report['threads']} thread(s), median of {report['runs']} runs, "
        f"{report['heldout_tokens']} held-out tokens, {report['qa_items']} QA items)"
    )
    return "\n".join(lines)
