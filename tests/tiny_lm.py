"""A 2-layer random Llama with a character tokenizer, for model-memory tests that need a
language model but not its quality (exactness, storage, lineage, erasure)."""

from __future__ import annotations

from typing import Any

import torch

from memos.backbone.generate import format_chat
from memos.backbone.model import Llama, LlamaConfig


class CharTokenizer:
    def to_str(self) -> str:
        return "char-tokenizer-v1"


class TinyLM:
    """A 2-layer random Llama with a character tokenizer: enough for exactness and storage."""

    def __init__(self, seed: int = 0, fingerprint: str = "tiny-0") -> None:
        torch.manual_seed(seed)
        cfg = LlamaConfig(vocab_size=128, n_layer=2, n_embd=32, n_hidden=64, n_head=4,
                          n_kv_head=2, max_seq_len=4096)
        self.model = Llama(cfg).eval()
        self.tokenizer = CharTokenizer()
        self.config: dict[str, Any] = {"variants": {"dense": {}}}
        self.variant = "dense"
        self.fingerprint = fingerprint
        self.eos_token_id, self.im_end_id = 0, None

    def encode(self, text: str) -> list[int]:
        return [ord(c) % 128 for c in text]

    def decode(self, ids: list[int], *, skip_special_tokens: bool = False) -> str:
        return "".join(chr(i) for i in ids)

    def chat_prompt(self, messages: list[dict[str, str]], *,
                    add_generation_prompt: bool = True) -> str:
        return format_chat(messages, add_generation_prompt=add_generation_prompt)
