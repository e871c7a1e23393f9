"""Llama-architecture decoder (SmolLM2-135M) in plain PyTorch, nanoGPT style.

RMSNorm -> grouped-query attention with rotate-half RoPE -> RMSNorm -> SwiGLU FFN, tied
embeddings when the checkpoint has no separate output matrix.

KV cache contract (used for activation memory): ``Llama.forward(idx, kv_cache, start_pos)``
returns ``(logits, new_cache)`` where ``new_cache`` is a plain ``list`` with one
``(k, v)`` tuple per layer, each a float32 tensor of shape ``(B, n_kv_head, S, head_dim)``
holding keys (already rotated by RoPE at absolute positions ``0..S-1``) and values for the
whole prefix. A cache can be saved with :func:`save_kv_cache` (safetensors), reloaded and fed
back as ``kv_cache=`` with ``start_pos=S`` to continue after that prefix without recomputing
it. Linear layers are ``nn.Linear`` named ``q_proj k_proj v_proj o_proj gate_proj up_proj
down_proj`` so LoRA adapters can wrap them by name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "LlamaConfig",
    "Llama",
    "KVCache",
    "decode_layout",
    "save_kv_cache",
    "load_kv_cache",
    "RMSNorm",
    "rope_tables",
    "apply_rope",
    "extend_kv",
    "Attention",
    "MLP",
    "Block",
]

KVCache = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class LlamaConfig:
    vocab_size: int = 49152
    n_layer: int = 30
    n_embd: int = 576
    n_hidden: int = 1536  # FFN neurons per layer
    n_head: int = 9
    n_kv_head: int = 3
    rope_theta: float = 100000.0
    norm_eps: float = 1e-5
    max_seq_len: int = 8192
    tied_embeddings: bool = True

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head or self.n_head % self.n_kv_head:
            raise ValueError("n_embd must divide by n_head and n_head by n_kv_head")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        return asdict(self)


def decode_layout(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` (out, in) in the memory layout a batch-1 ``F.linear`` reads fastest.

    A single-token decode is a matrix-vector product bound by memory reads. On the CPU
    BLAS, a (out, in) weight with out > in streams faster stored column-major, i.e. as the
    transposed view of a contiguous (in, out) tensor: 1.4x for the (1536, 576) FFN gate
    and up, 1.8x for the (49152, 576) output head; with out <= in the row-major layout is
    the fast one. Same values, same shape, so callers never see the difference.
    """
    out_f, in_f = weight.shape
    if out_f > in_f:
        return weight if weight.t().is_contiguous() else weight.t().contiguous().t()
    return weight.contiguous()


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(var + self.eps))


def rope_tables(cfg: LlamaConfig, n_pos: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (n_pos, head_dim) for rotate-half RoPE (HF Llama convention)."""
    hd = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    freqs = torch.outer(torch.arange(n_pos, dtype=torch.float32), inv_freq)  # (P, hd/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (P, hd)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: (B, H, T, hd); cos/sin: (T, hd)
    half = x.shape[-1] // 2
    rot = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rot * sin


def extend_kv(past: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """``cat((past, new), dim=2)`` without copying ``past`` at every decode step.

    The result is a view of the first positions of a buffer with spare room. When ``past``
    is such a view and still the buffer's end (nothing was written after it), ``new`` is
    written into the spare room in place: amortised O(1) per step instead of a copy of the
    whole cache per layer. A view that is no longer the end (a second continuation of the
    same prefix) is copied, so caches handed out earlier never change. Only under
    ``torch.inference_mode``; elsewhere (training) a plain ``cat``.
    """
    if not torch.is_inference_mode_enabled():
        return torch.cat((past, new), dim=2)
    B, H, S, hd = past.shape
    end = S + new.shape[2]
    # set below on the views this function returns (plain attributes: Any for the checker)
    buf: Any = getattr(past, "_kv_buffer", None)
    if buf is not None and buf._kv_len == S and buf.shape[2] >= end:
        buf[:, :, S:end] = new
    else:
        buf = past.new_empty(B, H, end + max(64, end // 2), hd)
        buf[:, :, :S] = past
        buf[:, :, S:end] = new
    buf._kv_len = end
    out: Any = buf[:, :, :end]
    out._kv_buffer = buf
    return out


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        self.q_proj = nn.Linear(cfg.n_embd, cfg.n_head * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.n_embd, cfg.n_kv_head * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.n_embd, cfg.n_kv_head * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_head * cfg.head_dim, cfg.n_embd, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        B, T, C = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = (
            self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        )  # (B, Hkv, T, hd)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if past is not None:
            k, v = extend_kv(past[0], k), extend_kv(past[1], v)  # (B, Hkv, S, hd)
        S = k.shape[2]
        # Grouped-query attention without materialising repeated keys and values: a copy of
        # the whole cache per layer per step was about a third of the decode time.
        gqa = self.n_head != self.n_kv_head
        if T == 1:
            y = F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
        elif S == T:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        else:  # prefill on top of a cache: query i sees keys 0..S-T+i
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.o_proj(y), (k, v)


class MLP(nn.Module):
    """Dense SwiGLU FFN: down(silu(gate(x)) * up(x)). :mod:`.moe` swaps in a routed version."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.n_embd, cfg.n_hidden, bias=False)
        self.up_proj = nn.Linear(cfg.n_embd, cfg.n_hidden, bias=False)
        self.down_proj = nn.Linear(cfg.n_hidden, cfg.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.mlp: nn.Module = MLP(cfg)

    def forward(self, x, cos, sin, past):
        a, kv = self.self_attn(self.input_layernorm(x), cos, sin, past)
        x = x + a
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x, kv


class Llama(nn.Module):
    """Decoder-only Llama; parameter names follow HF ``LlamaModel`` minus the ``model.`` prefix."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.config = cfg
        # _weight skips nn.Embedding's init: on the meta device (see from_tensors) its normal_
        # goes through slow Python decompositions; on a real device we init explicitly.
        self.embed_tokens = nn.Embedding(
            cfg.vocab_size, cfg.n_embd, _weight=torch.empty(cfg.vocab_size, cfg.n_embd)
        )
        if not self.embed_tokens.weight.is_meta:
            nn.init.normal_(self.embed_tokens.weight)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tied_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self._rope: tuple[torch.Tensor, torch.Tensor] | None = None

    def _rope_slice(self, start: int, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        end = start + T
        if end > self.config.max_seq_len:
            raise ValueError(f"sequence end {end} exceeds max_seq_len {self.config.max_seq_len}")
        if self._rope is None or self._rope[0].shape[0] < end:
            n = min(self.config.max_seq_len, max(end, 1024) * 2)
            self._rope = rope_tables(self.config, n)
        cos, sin = self._rope
        return cos[start:end], sin[start:end]

    def forward(
        self,
        idx: torch.Tensor,
        kv_cache: KVCache | None = None,
        start_pos: int = 0,
        *,
        last_only: bool = False,
    ) -> tuple[torch.Tensor, KVCache]:
        """Logits for token ids ``idx`` (B, T) placed at positions ``start_pos..start_pos+T-1``.

        ``kv_cache`` must cover exactly positions ``0..start_pos-1`` (or be ``None`` with
        ``start_pos == 0``). Returns logits (B, T, V) — or (B, 1, V) with ``last_only`` — and
        the updated cache covering ``0..start_pos+T-1``.
        """
        if idx.dim() != 2:
            raise ValueError(f"idx must be (B, T), got shape {tuple(idx.shape)}")
        B, T = idx.shape
        if kv_cache is not None:
            if len(kv_cache) != self.config.n_layer:
                raise ValueError(
                    f"kv_cache has {len(kv_cache)} layers, expected {self.config.n_layer}"
                )
            if kv_cache[0][0].shape[2] != start_pos:
                raise ValueError(
                    f"kv_cache holds {kv_cache[0][0].shape[2]} positions but start_pos={start_pos}"
                )
        elif start_pos != 0:
            raise ValueError("start_pos > 0 requires a kv_cache")
        cos, sin = self._rope_slice(start_pos, T)
        x = self.embed_tokens(idx)  # (B, T, C)
        new_cache: KVCache = []
        for i, block in enumerate(self.layers):
            x, kv = block(x, cos, sin, None if kv_cache is None else kv_cache[i])
            new_cache.append(kv)
        if last_only:
            x = x[:, -1:, :]
        logits = self.lm_head(self.norm(x))  # (B, T, V)
        return logits, new_cache

    @classmethod
    def from_tensors(cls, cfg: LlamaConfig, tensors: dict[str, torch.Tensor]) -> Llama:
        """Build from HF-named float32 tensors (see :func:`memos.backbone.gguf.read_gguf`)."""
        with torch.device("meta"):  # no random init: every weight is assigned below
            model = cls(cfg)
        sd = {
            k: v for k, v in tensors.items() if not (cfg.tied_embeddings and k == "lm_head.weight")
        }
        expected = {
            k for k in model.state_dict() if not (cfg.tied_embeddings and k == "lm_head.weight")
        }
        if set(sd) != expected:
            bad = sorted(set(sd) ^ expected)
            raise ValueError(f"checkpoint does not match the model: {bad[:8]}")
        model.load_state_dict(sd, strict=False, assign=True)
        for mod in model.modules():
            if isinstance(mod, nn.Linear) and not mod.weight.is_meta:
                mod.weight = nn.Parameter(decode_layout(mod.weight.detach()))
        if cfg.tied_embeddings:
            # The head reads the shared matrix column-major (fast decode); a prompt's
            # embedding lookup then gathers strided rows, under 1 ms per 128 tokens.
            emb = model.embed_tokens
            emb.weight = nn.Parameter(decode_layout(emb.weight.detach()))
            model.lm_head.weight = emb.weight
        return model.eval()


def save_kv_cache(path: str | Path, cache: KVCache, metadata: dict[str, str] | None = None) -> None:
    """Write a KV cache as safetensors: ``k.{i}`` / ``v.{i}`` for layer ``i``."""
    from safetensors.torch import save_file

    tensors = {}
    for i, (k, v) in enumerate(cache):
        tensors[f"k.{i}"] = k.contiguous()
        tensors[f"v.{i}"] = v.contiguous()
    save_file(tensors, str(path), metadata=metadata)


def load_kv_cache(path: str | Path) -> KVCache:
    """Inverse of :func:`save_kv_cache`."""
    from safetensors.torch import load_file

    t = load_file(str(path))
    n = len(t) // 2
    if set(t) != {f"{p}.{i}" for p in "kv" for i in range(n)}:
        raise ValueError(f"{path} is not a KV cache written by save_kv_cache")
    return [(t[f"k.{i}"], t[f"v.{i}"]) for i in range(n)]
