"""The bundled MoE backbone: SmolLM2-135M-Instruct as a neuron-level Mixture-of-Experts.

Importing this package is cheap (no torch); the heavy modules load on first use::

    from memos.backbone import load_backbone
    bb = load_backbone()            # after `memos backbone prepare`
    print(bb.generate(bb.chat_prompt([{"role": "user", "content": "Hello"}])))

Modules: :mod:`.gguf` (weights + tokenizer from the GGUF), :mod:`.model` (Llama decoder,
KV cache), :mod:`.moe` (experts, routing, pruning, skipping), :mod:`.generate`,
:mod:`.checkpoint` (prepared files, :class:`Backbone`), :mod:`.prepare`, :mod:`.evaluate`,
:mod:`.cli`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Backbone", "BackboneNotPrepared", "load_backbone", "resolve_data_dir"]

if TYPE_CHECKING:
    from .checkpoint import Backbone, BackboneNotPrepared, load_backbone, resolve_data_dir


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
