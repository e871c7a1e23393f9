"""``memos backbone prepare``: GGUF -> routed MoE checkpoint in the data directory.

Steps: read and dequantize the GGUF (~10 s), build the model, collect per-expert usage on
the shipped calibration corpus under the default routing (for pruning and shared experts),
and write ``model.safetensors`` + ``config.json`` + ``tokenizer.json`` atomically (see
:mod:`memos.backbone.checkpoint`). Takes under a minute on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from .checkpoint import (
    CONFIG_FILE,
    FORMAT_VERSION,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    VariantSpec,
    config_fingerprint,
    resolve_data_dir,
)

__all__ = ["DEFAULT_VARIANT", "default_variants", "read_data_text", "prepare"]

N_HIDDEN = 1536
N_EMBD = 576
DEFAULT_VARIANT = "moe_x403_d768"
CALIBRATION_FILE = "backbone_calibration.txt"
HELDOUT_FILE = "backbone_heldout.txt"
QA_FILE = "backbone_memory_qa.json"


def default_variants(
    n: int = N_HIDDEN, default: str = DEFAULT_VARIANT, d: int = N_EMBD
) -> dict[str, VariantSpec]:
    """Routing variants charted by ``memos backbone eval`` (n FFN neurons per layer, d
    input dims).

    ``moe_k<k>``: gate-routed, k of n single-neuron experts read up+down;
    ``moe_d<k>``: gate+up dense, k down rows by ``|h| * ||down||``;
    ``moe_k<k1>_d<k2>``: two-stage; ``moe_x<j>_d<k>``: gate and up read only the j largest
    of the d input dims (TEAL input sparsity), k down rows; ``proto_k<k>``: 8 prototype
    groups, k/8 each;
    ``pruned_<pct>``: default routing after pruning pct % least-used experts;
    ``skip_<beta>``: default routing with dynamic skipping.
    """
    v: dict[str, VariantSpec] = {"dense": VariantSpec()}
    for k in (n * 3 // 4, n * 5 // 8, n // 2, n * 3 // 8, n // 4):
        v[f"moe_k{k}"] = VariantSpec({"top_k": k})
    for k in (n // 2, n * 5 // 12):
        v[f"moe_d{k}"] = VariantSpec({"down_k": k})
    v[f"moe_k{n * 3 // 4}_d{n // 2}"] = VariantSpec({"top_k": n * 3 // 4, "down_k": n // 2})
    v[f"moe_k{n * 5 // 8}_d{n * 5 // 12}"] = VariantSpec(
        {"top_k": n * 5 // 8, "down_k": n * 5 // 12}
    )
    for share, k in ((0.8, n // 2), (0.7, n // 2), (0.6, n * 5 // 12)):
        j = round(share * d)
        v[f"moe_x{j}_d{k}"] = VariantSpec({"in_k": j, "down_k": k})
    for k in (n * 3 // 4, n // 2):
        v[f"proto_k{k}"] = VariantSpec({"top_k": k, "n_proto": 8})
    base = v[default].moe
    for pct in (10, 25):
        v[f"pruned_{pct}"] = VariantSpec(dict(base), prune_frac=pct / 100)
    for beta in (0.02, 0.05):
        v[f"skip_{beta}"] = VariantSpec({**base, "skip_beta": beta})
    return v


def read_data_text(name: str) -> str:
    """A text file shipped in ``memos/data/``."""
    return resources.files("memos").joinpath("data", name).read_text(encoding="utf-8")


def _chunks(ids: list[int], size: int) -> list[list[int]]:
    return [ids[i : i + size] for i in range(0, len(ids), size) if len(ids[i : i + size]) > 1]


def prepare(
    data_dir: str | os.PathLike | None = None,
    *,
    gguf_path: str | None = None,
    progress: bool = True,
    calib_tokens: int | None = None,
    contents: Any = None,
) -> Path:
    """Build the checkpoint into ``resolve_data_dir(data_dir)`` and return that directory.

    ``calib_tokens`` caps the calibration tokens and ``contents`` (a
    :class:`~memos.backbone.gguf.GGUFContents` already read from ``gguf_path``) skips the
    GGUF read; both exist for tests.
    """
    import torch
    from safetensors.torch import save_file
    from tokenizers import Tokenizer
    from tqdm import tqdm

    from .gguf import file_sha256, find_smollm2_gguf, read_gguf
    from .model import Llama, LlamaConfig
    from .moe import MoEConfig, expert_usage, load_cv, reset_stats, set_routing, to_moe

    src = Path(gguf_path) if gguf_path else find_smollm2_gguf()
    bar = tqdm(total=4, desc="backbone prepare", disable=not progress, unit="step")
    bar.set_postfix_str("reading GGUF")
    contents = contents if contents is not None else read_gguf(src)
    gguf_sha = file_sha256(src)
    bar.update()

    bar.set_postfix_str("calibrating routing")
    cfg = LlamaConfig(**contents.hparams)
    model = to_moe(Llama.from_tensors(cfg, contents.tensors))
    variants = default_variants(cfg.n_hidden, d=cfg.n_embd)
    tok = Tokenizer.from_str(contents.tokenizer_json)
    ids = tok.encode(read_data_text(CALIBRATION_FILE)).ids[:calib_tokens]
    set_routing(model, MoEConfig(**variants[DEFAULT_VARIANT].moe))
    reset_stats(model, track_usage=True)
    with torch.inference_mode():
        for chunk in tqdm(_chunks(ids, 512), desc="calibration", disable=not progress, leave=False):
            model(torch.tensor([chunk]), last_only=True)
    usage = expert_usage(model)
    mass = expert_usage(model, mass=True)
    bar.update()

    bar.set_postfix_str("writing")
    config: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "source": {"file": src.name, "sha256": gguf_sha},
        "llama": cfg.to_dict(),
        "group_size": 1,
        "variants": {k: s.to_dict() for k, s in variants.items()},
        "default_variant": DEFAULT_VARIANT,
        "calibration": {"file": CALIBRATION_FILE, "tokens": len(ids), "load_cv": load_cv(usage)},
        "bos_token_id": contents.bos_token_id,
        "eos_token_id": contents.eos_token_id,
        "special_tokens": contents.special_tokens,
        "chat_template": contents.chat_template,
    }
    config["fingerprint"] = config_fingerprint(config)
    tensors = {
        k: v.contiguous()
        for k, v in contents.tensors.items()
        if not (cfg.tied_embeddings and k == "lm_head.weight")
    }
    for i, u in enumerate(usage):
        tensors[f"moe.usage.{i}"] = u.float()
        tensors[f"moe.mass.{i}"] = mass[i].float()
    out = resolve_data_dir(data_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".backbone-", dir=out.parent))
    try:
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"fingerprint": config["fingerprint"]})
        (tmp / TOKENIZER_FILE).write_text(contents.tokenizer_json, encoding="utf-8")
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding="utf-8")
        bar.update()
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    bar.update()
    bar.close()
    return out
