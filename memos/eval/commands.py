"""``memos eval …`` subcommands, gathered from the evaluation modules."""

from __future__ import annotations

from typing import Any


def add_eval_group(sub: Any) -> None:
    """Add ``eval`` with its subcommands to the top-level ``sub``."""
    eval_parser = sub.add_parser("eval", help="evaluations (LoCoMo retrieval, HaluMem)")
    add_eval_commands(eval_parser.add_subparsers(dest="eval_cmd", required=True,
                                                 metavar="COMMAND"))


def add_eval_commands(sub: Any) -> None:
    try:
        from memos.eval.locomo import add_eval_locomo_command
    except ImportError:
        pass
    else:
        add_eval_locomo_command(sub)
    try:
        from memos.eval.halumem import add_halumem_commands
    except ImportError:
        return
    add_halumem_commands(sub)
