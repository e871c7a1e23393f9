"""The bundled backbone as model memory sees it: a lazy, shared provider and the fingerprint.

Every KV cache and adapter carries the *fingerprint* of what produced it
(:func:`model_fingerprint`): backbone checkpoint, tokenizer, RoPE configuration, dtype and
MoE routing variant. Loading compares it with the running backbone
(:func:`check_fingerprint`) and raises :class:`~memos.errors.Conflict` on any difference.
Importing this module never imports torch.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import threading
from typing import Any, Protocol

from memos.errors import BackendUnavailable, Conflict
from memos.lazy import IMPORT_LOCK

__all__ = ["LanguageModel", "BackboneProvider", "model_fingerprint", "check_fingerprint",
           "BACKBONE_HINT"]

BACKBONE_HINT = ("the bundled model needs the `backbone` extra "
                 "(pip install 'memos-memory[backbone]') and a prepared checkpoint "
                 "(`memos backbone prepare`)")


class LanguageModel(Protocol):
    """What model memory needs from a backbone (:class:`memos.backbone.Backbone` fits).

    ``model`` is a :class:`memos.backbone.model.Llama`; ``tokenizer`` a ``tokenizers``
    tokenizer; ``config`` the checkpoint config (``llama``, ``variants``, …).
    """

    model: Any
    tokenizer: Any
    config: dict[str, Any]
    variant: str

    @property
    def fingerprint(self) -> str: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int], *, skip_special_tokens: bool = False) -> str: ...


class BackboneProvider:
    """The backbone, loaded once on first use, plus the lock every user of it holds.

    ``lock`` serialises everything that runs or modifies the shared model (generation,
    prefix compilation, adapter attach/train): routing state and LoRA wrappers are global
    to the module tree. Pass ``backbone=`` to use an already built model (tests, benches).
    """

    def __init__(self, data_dir: str | os.PathLike[str] | None = None, *,
                 backbone: LanguageModel | None = None) -> None:
        self.data_dir = data_dir
        self._backbone = backbone
        self._load_lock = threading.Lock()
        self.lock = threading.RLock()

    def __call__(self) -> LanguageModel:
        with self._load_lock:
            if self._backbone is None:
                self._backbone = self._load()
            return self._backbone

    def available(self) -> bool:
        """Whether the backbone is loaded or could be (torch installed, checkpoint prepared),
        without loading it: cheap enough to ask before queueing work that needs the model."""
        if self._backbone is not None:
            return True
        if importlib.util.find_spec("torch") is None:
            return False
        from memos.backbone.checkpoint import CONFIG_FILE, WEIGHTS_FILE, resolve_data_dir

        d = resolve_data_dir(self.data_dir)
        return (d / CONFIG_FILE).is_file() and (d / WEIGHTS_FILE).is_file()

    def _load(self) -> LanguageModel:
        try:
            with IMPORT_LOCK:  # torch's first import, never beside sklearn's (memos.lazy)
                import torch  # noqa: F401

                from memos.backbone.checkpoint import load_backbone
        except ImportError as exc:
            raise BackendUnavailable(f"{BACKBONE_HINT}: {exc}",
                                     details={"model": "bundled"}) from exc
        try:
            return load_backbone(self.data_dir)  # type: ignore[return-value]
        except (FileNotFoundError, ValueError) as exc:
            raise BackendUnavailable(f"{BACKBONE_HINT}: {exc}",
                                     details={"model": "bundled"}) from exc


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def model_fingerprint(lm: LanguageModel) -> dict[str, str]:
    """What a KV cache or adapter depends on, as strings (safetensors metadata is str→str).

    ``backbone``: checkpoint fingerprint; ``tokenizer``: sha256 of the tokenizer JSON;
    ``rope``: theta / head_dim / layers / kv heads; ``dtype``; ``variant``: the routing
    variant's name and spec (a cache computed under other routing gives other keys).
    """
    cfg = lm.model.config
    rope = {"rope_theta": cfg.rope_theta, "head_dim": cfg.head_dim, "n_layer": cfg.n_layer,
            "n_kv_head": cfg.n_kv_head, "n_embd": cfg.n_embd}
    variants = (lm.config or {}).get("variants", {})
    variant = {"name": lm.variant, "spec": variants.get(lm.variant)}
    dtype = str(next(lm.model.parameters()).dtype).removeprefix("torch.")
    return {
        "backbone": str(lm.fingerprint),
        "tokenizer": _sha(lm.tokenizer.to_str()),
        "rope": json.dumps(rope, sort_keys=True),
        "dtype": dtype,
        "variant": json.dumps(variant, sort_keys=True),
    }


def check_fingerprint(stored: dict[str, Any], current: dict[str, str], *, what: str) -> None:
    """Raise :class:`Conflict` naming every field where ``stored`` differs from ``current``."""
    diff = {k: {"stored": stored.get(k), "current": v} for k, v in current.items()
            if stored.get(k) != v}
    if diff:
        raise Conflict(f"{what} was built for another model ({', '.join(sorted(diff))} "
                       "differ); rebuild it for the running backbone",
                       details={"mismatch": diff})
