"""Text generation for the backbone: greedy / temperature / top-p, stop sequences, streaming.

:func:`generate` yields text pieces as they become final: a piece is withheld while it could
still be the start of a stop sequence or an incomplete UTF-8 character, so the concatenated
pieces are always exactly the completion (without the stop sequence).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch

from .model import KVCache

__all__ = ["DEFAULT_SYSTEM_PROMPT", "format_chat", "generate", "sample_next"]

DEFAULT_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def format_chat(messages: Sequence[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
    """Render SmolLM2's chat template (ChatML).

    >>> format_chat([{"role": "user", "content": "Hi"}])[-33:]
    '<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n'
    """
    out = []
    for i, m in enumerate(messages):
        if not {"role", "content"} <= set(m):
            raise ValueError("each message needs 'role' and 'content'")
        if i == 0 and m["role"] != "system":
            out.append(f"<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n")
        out.append(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n")
    if add_generation_prompt:
        out.append("<|im_start|>assistant\n")
    return "".join(out)


def sample_next(
    logits: torch.Tensor,
    *,
    temperature: float = 0.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> int:
    """Next token id from logits (V,): argmax when ``temperature == 0``, else nucleus sampling."""
    if temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p  # always keeps the top token
        sorted_p = sorted_p * keep
        return int(order[torch.multinomial(sorted_p / sorted_p.sum(), 1, generator=generator)])
    return int(torch.multinomial(probs, 1, generator=generator))


def _holdback(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of text that is a proper prefix of some stop string."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best


@torch.inference_mode()
def generate(
    model: Any,
    tokenizer: Any,
    prompt: str | Sequence[int],
    *,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stop: Iterable[str] = (),
    stop_token_ids: Iterable[int] = (),
    seed: int | None = None,
    prefix_cache: KVCache | None = None,
    on_token: Callable[[int], None] | None = None,
) -> Iterator[str]:
    """Stream the completion of ``prompt`` as text pieces.

    ``prompt`` is text (special tokens recognised) or token ids. ``prefix_cache`` is a KV
    cache (see :mod:`memos.backbone.model`) of tokens that precede ``prompt`` — e.g. a
    memory prefix prefilled once and saved — so ``prompt`` holds only the new tokens.
    Generation ends after ``max_new_tokens``, at a token in ``stop_token_ids`` (not
    emitted), or at the first occurrence of a ``stop`` string (not emitted). ``on_token`` is
    called with each generated token id (stop tokens excluded), e.g. to count usage exactly.
    """
    if max_new_tokens < 0:
        raise ValueError("max_new_tokens must be >= 0")
    if not 0.0 < top_p <= 1.0:
        raise ValueError("top_p must be in (0, 1]")
    ids = tokenizer.encode(prompt).ids if isinstance(prompt, str) else list(prompt)
    if not ids:
        raise ValueError("prompt is empty")
    stops = [s for s in stop if s]
    stop_ids = set(stop_token_ids)
    start = 0 if prefix_cache is None else int(prefix_cache[0][0].shape[2])
    max_len = model.config.max_seq_len
    if start + len(ids) + max_new_tokens > max_len:
        raise ValueError(f"prompt plus max_new_tokens exceeds the context of {max_len} tokens")
    gen = torch.Generator().manual_seed(seed) if seed is not None else None

    out_ids: list[int] = []
    emitted = 0  # characters of the decoded completion already yielded
    if max_new_tokens == 0:
        return
    logits, cache = model(torch.tensor([ids]), prefix_cache, start, last_only=True)
    pos = start + len(ids)
    for _ in range(max_new_tokens):
        tok = sample_next(logits[0, -1], temperature=temperature, top_p=top_p, generator=gen)
        if tok in stop_ids:
            break
        out_ids.append(tok)
        if on_token is not None:
            on_token(tok)
        text = tokenizer.decode(out_ids, skip_special_tokens=False)
        cut = min(
            (i for i in (text.find(s, max(0, emitted - len(s))) for s in stops) if i >= 0),
            default=-1,
        )
        if cut >= 0:
            if cut > emitted:
                yield text[emitted:cut]
            return
        if text.endswith("\ufffd"):  # incomplete UTF-8 sequence: wait for more bytes
            safe = len(text) - 1
        else:
            safe = len(text) - _holdback(text, stops)
        if safe > emitted:
            yield text[emitted:safe]
            emitted = safe
        logits, cache = model(torch.tensor([[tok]]), cache, pos)
        pos += 1
    text = tokenizer.decode(out_ids, skip_special_tokens=False)
    if len(text) > emitted:
        yield text[emitted:]
