"""``memos eval …`` subcommands: LoCoMo retrieval (and QA with ``--qa``), HaluMem (and its
judge check).

The evaluation modules below hold the work; this module only parses arguments, so
:mod:`memos.eval.locomo` and :mod:`memos.eval.locomo_qa` never import each other's way up.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from memos.eval.locomo import Retriever, run_locomo, server_retriever_factory
from memos.eval.locomo_qa import run_locomo_qa

__all__ = ["add_eval_group", "add_eval_commands", "add_eval_locomo_command"]


def add_eval_group(sub: Any) -> None:
    """Add ``eval`` with its subcommands to the top-level ``sub``."""
    eval_parser = sub.add_parser("eval", help="evaluations (LoCoMo retrieval, HaluMem)")
    add_eval_commands(eval_parser.add_subparsers(dest="eval_cmd", required=True,
                                                 metavar="COMMAND"))


def add_eval_commands(sub: Any) -> None:
    add_eval_locomo_command(sub)
    try:
        from memos.eval.halumem import add_halumem_commands
        from memos.eval.halumem_calibrate import add_calibrate_command
        from memos.eval.halumem_judge_check import add_judge_check_command
    except ImportError:
        return
    add_halumem_commands(sub)
    add_judge_check_command(sub)
    add_calibrate_command(sub)


def add_eval_locomo_command(subparsers: Any, *,
                            remote_factory: Callable[[str], Callable[[], Retriever]] | None = None
                            ) -> argparse.ArgumentParser:
    """Add ``locomo`` to an ``eval`` subparsers group; ``args.func(args)`` runs it.

    ``remote_factory(base_url)`` must return a retriever factory for ``--base-url`` (the
    SDK-backed retriever); without it ``--base-url`` is refused with a clear error.
    """
    p = subparsers.add_parser("locomo", help="LoCoMo evidence-retrieval evaluation")
    p.add_argument("--data", required=True, help="path to a LoCoMo JSON file")
    p.add_argument("--json", dest="json_path", default=None, help="write the report here")
    p.add_argument("--conversations", default=None,
                   help="comma-separated sample_ids (default: all)")
    p.add_argument("--base-url", default=None,
                   help="evaluate a running memos server instead of the in-library router")
    p.add_argument("--max-questions", type=int, default=None,
                   help="score at most this many questions per conversation")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--qa", action="store_true",
                   help="answer the questions from retrieved memory and score them (F1)")
    p.add_argument("--answerer", default="offline",
                   help="with --qa: 'offline' (extractive), 'bundled' or a litellm model")
    p.add_argument("--top-k", type=int, default=10, help="with --qa: memories per question")
    p.add_argument("--embedder", default=None, help="retrieval only: the embedder, as "
                   "MEMOS_EMBEDDER names it (default: the bundled model), e.g. "
                   "minilm-int8-per-channel (built by `memos embedders quantize`)")
    p.add_argument("--methods", default=None, help="retrieval only: comma-separated "
                   "methods (default: all), e.g. router,flat")

    def _run(args: argparse.Namespace) -> int:
        factory = None
        if args.base_url:
            factory = (remote_factory or server_retriever_factory)(args.base_url)
        convs = args.conversations.split(",") if args.conversations else None
        if args.qa:
            run_locomo_qa(args.data, answerer=args.answerer, retriever_factory=factory,
                          top_k=args.top_k, conversations=convs,
                          max_questions=args.max_questions, json_path=args.json_path,
                          progress=not args.no_progress)
            return 0
        extra: dict[str, Any] = {}
        if args.embedder:
            from memos.config import Settings
            from memos.embedders import build_embedder, parse_embedder_setting

            extra["embedder"] = build_embedder(parse_embedder_setting(args.embedder),
                                               models_dir=Settings().models_path)
        if args.methods:
            extra["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
        run_locomo(args.data, conversations=convs, json_path=args.json_path,
                   retriever_factory=factory, progress=not args.no_progress,
                   max_questions=args.max_questions, **extra)
        return 0

    p.set_defaults(func=_run)
    return p
