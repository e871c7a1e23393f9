"""The prepared backbone on disk, and the in-memory :class:`Backbone` built from it.

Layout of ``<data_dir>/backbone/`` (written by :func:`memos.backbone.prepare.prepare`):

* ``model.safetensors`` — float32 weights under HF Llama names (``lm_head`` omitted when
  tied) plus ``moe.usage.{i}``: per-layer expert usage counts on the calibration corpus
  and ``moe.mass.{i}``: summed routing weight of each expert when selected, both under
  the default routing (mass drives pruning, counts choose shared experts);
* ``config.json`` — ``llama`` hyper-parameters, ``variants`` (routing specs by name),
  ``default_variant``, chat template, special token ids, and ``fingerprint``: sha256 over the
  source GGUF's sha256 and this config (minus the fingerprint itself);
* ``tokenizer.json`` — the ``tokenizers`` byte-level BPE.

The safetensors metadata carries the same fingerprint; :func:`load_backbone` refuses a pair
that does not match. No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "FORMAT_VERSION",
    "BackboneNotPrepared",
    "VariantSpec",
    "Backbone",
    "resolve_data_dir",
    "config_fingerprint",
    "load_backbone",
]

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"


class BackboneNotPrepared(FileNotFoundError):
    """The prepared checkpoint is missing or stale; run ``memos backbone prepare``."""


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Backbone directory: ``data_dir`` (CLI ``--data-dir``), else ``$MEMOS_DATA_DIR``, else
    ``./memos-data``; with ``/backbone`` appended."""
    root = data_dir or os.environ.get("MEMOS_DATA_DIR") or "./memos-data"
    return Path(root).expanduser() / "backbone"


def config_fingerprint(config: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of ``config`` without its ``fingerprint`` key."""
    body = {k: v for k, v in config.items() if k != "fingerprint"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


@dataclass
class VariantSpec:
    """A named routing setup: a :class:`~memos.backbone.moe.MoEConfig` plus expert pruning."""

    moe: dict[str, Any] = field(default_factory=dict)  # MoEConfig fields
    prune_frac: float = 0.0  # fraction of experts removed per layer (least used)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VariantSpec:
        return cls(moe=dict(d.get("moe", {})), prune_frac=float(d.get("prune_frac", 0.0)))

    def to_dict(self) -> dict[str, Any]:
        return {"moe": dict(self.moe), "prune_frac": self.prune_frac}


class Backbone:
    """The bundled SmolLM2-135M-Instruct MoE: model, tokenizer, chat template, variants.

    Example::

        bb = load_backbone()
        text = bb.generate(bb.chat_prompt([{"role": "user", "content": "Hi!"}]),
                           max_new_tokens=32)

    ``bb.model`` is a :class:`~memos.backbone.model.Llama` whose FFNs are
    :class:`~memos.backbone.moe.MoEMLP`; ``bb.use(name)`` switches routing variant
    (``"dense"`` is exactly the dense model).
    """

    def __init__(
        self,
        *,
        model: Any,
        tokenizer: Any,
        config: dict[str, Any],
        usage: list[Any],
        mass: list[Any],
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.usage = usage  # per-layer calibration selection counts (float64 tensors)
        self.mass = mass  # per-layer calibration routing mass (float64 tensors)
        self.eos_token_id: int = int(config["eos_token_id"])
        self.im_end_id: int | None = tokenizer.token_to_id("<|im_end|>")
        self._base_mlps = [blk.mlp for blk in model.layers]
        self.variant = "dense"
        self.use(config.get("default_variant", "dense"))

    @property
    def fingerprint(self) -> str:
        return str(self.config["fingerprint"])

    @property
    def variants(self) -> dict[str, VariantSpec]:
        return {k: VariantSpec.from_dict(v) for k, v in self.config["variants"].items()}

    def use(self, name: str | VariantSpec) -> None:
        """Switch routing variant in place: a name from ``config["variants"]`` or a spec."""
        from .moe import MoEConfig, prune_experts, set_routing

        if isinstance(name, VariantSpec):
            spec, label = name, "custom"
        else:
            if name not in self.config["variants"]:
                raise ValueError(
                    f"unknown variant {name!r}; known: {sorted(self.config['variants'])}"
                )
            spec, label = VariantSpec.from_dict(self.config["variants"][name]), name
        for blk, base in zip(self.model.layers, self._base_mlps, strict=True):
            blk.mlp = base
        # Prompts are prefilled with the dense FFN unless a spec says otherwise: routing pays
        # only in the memory-bound batch-1 decode (docs/backbone.md).
        cfg = MoEConfig(**{"dense_prefill": True, **spec.moe})
        ranking = [u.argsort(descending=True) for u in self.usage]
        set_routing(self.model, cfg, shared=ranking)
        if spec.prune_frac > 0:
            prune_experts(self.model, self.mass, spec.prune_frac)
        self.variant = label

    # -- text --------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; special tokens like ``<|im_start|>`` are recognised."""
        return self.tokenizer.encode(text).ids

    def decode(self, ids: list[int], *, skip_special_tokens: bool = False) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def chat_prompt(
        self, messages: list[dict[str, str]], *, add_generation_prompt: bool = True
    ) -> str:
        """SmolLM2's ChatML template (as in the GGUF): ``<|im_start|>role\\ncontent<|im_end|>\\n``
        per message, the default system prompt when the first message is not ``system``,
        and ``<|im_start|>assistant\\n`` when ``add_generation_prompt``."""
        from .generate import format_chat

        return format_chat(messages, add_generation_prompt=add_generation_prompt)

    def generate(self, prompt: str | list[int], **kwargs: Any) -> str:
        """Completion of ``prompt`` as one string; see :func:`memos.backbone.generate.generate`."""
        return "".join(self.stream(prompt, **kwargs))

    def stream(self, prompt: str | list[int], **kwargs: Any) -> Iterator[str]:
        """Completion of ``prompt`` as an iterator of text pieces."""
        from .generate import generate

        kwargs.setdefault(
            "stop_token_ids", [i for i in (self.eos_token_id, self.im_end_id) if i is not None]
        )
        return generate(self.model, self.tokenizer, prompt, **kwargs)


def load_backbone(
    data_dir: str | os.PathLike | None = None,
    *,
    variant: str | None = None,
    threads: int | None = None,
) -> Backbone:
    """Load the prepared checkpoint from ``resolve_data_dir(data_dir)``.

    ``data_dir`` is the data *root* (``backbone/`` is appended). ``threads`` sets torch's
    CPU thread count (process-wide; batch-1 decode splits its weight-row sums across the
    threads, so one per core is fastest on an otherwise idle machine). Raises
    :class:`BackboneNotPrepared` (a ``FileNotFoundError``) with the command to run when the
    checkpoint is missing, and ``ValueError`` when its fingerprint does not match.
    """
    import torch
    from safetensors import safe_open

    if threads is not None:
        if threads < 1:
            raise ValueError("threads must be >= 1")
        torch.set_num_threads(threads)
    from tokenizers import Tokenizer

    from .model import Llama, LlamaConfig
    from .moe import to_moe

    d = resolve_data_dir(data_dir)
    paths = [d / CONFIG_FILE, d / WEIGHTS_FILE, d / TOKENIZER_FILE]
    if not all(p.is_file() for p in paths):
        raise BackboneNotPrepared(
            f"no prepared backbone in {d}; run `memos backbone prepare` (about 2 minutes)"
        )
    config = json.loads(paths[0].read_text())
    if config.get("format") != FORMAT_VERSION:
        raise BackboneNotPrepared(
            f"{d} holds format {config.get('format')}; re-run `memos backbone prepare`"
        )
    if config_fingerprint(config) != config.get("fingerprint"):
        raise ValueError(f"{paths[0]} fingerprint does not match its contents")
    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(paths[1]), framework="pt") as f:
        if (f.metadata() or {}).get("fingerprint") != config["fingerprint"]:
            raise ValueError(f"{paths[1]} was not written with {paths[0]} (fingerprint mismatch)")
        for k in f.keys():
            tensors[k] = f.get_tensor(k)
    n_layer = config["llama"]["n_layer"]
    usage = [tensors.pop(f"moe.usage.{i}").to(torch.float64) for i in range(n_layer)]
    mass = [tensors.pop(f"moe.mass.{i}").to(torch.float64) for i in range(n_layer)]
    model = Llama.from_tensors(LlamaConfig(**config["llama"]), tensors)
    to_moe(model, group_size=int(config.get("group_size", 1)))
    tok = Tokenizer.from_file(str(paths[2]))
    bb = Backbone(model=model, tokenizer=tok, config=config, usage=usage, mass=mass)
    if variant is not None:
        bb.use(variant)
    return bb
