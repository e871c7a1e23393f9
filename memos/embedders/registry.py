"""Which embedder embeds which cube: :class:`Embedders`.

    embedders = Embedders(default=OnnxMiniLM(), default_spec={"kind": "bundled", …})
    embedders.for_cube(cube_row)        # the cube's own embedder (Conflict if it changed)
    embedders.for_request(spec)         # a spec a request asked for: allowed? built

An :class:`Embedders` is itself an :class:`memos.embed.Embedder` — the default — so code
that embeds outside any cube keeps working. Specs are plain JSON
(:data:`memos.types.EmbedderSpec` dumped), built once each and kept for the process.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import TypeAdapter, ValidationError

from memos.embed import Embedder, HashingEmbedder, OnnxEmbedder, OnnxMiniLM
from memos.errors import Conflict, Forbidden, InvalidInput
from memos.store.models import CubeRow
from memos.types import EmbedderSpec

__all__ = ["Embedders", "build_embedder", "parse_embedder_setting", "canonical_spec"]

_SPEC = TypeAdapter(EmbedderSpec)

#: ``MEMOS_EMBEDDER`` shorthands; anything else is a JSON spec.
SHORTHANDS: dict[str, dict[str, Any]] = {
    "minilm": {"kind": "bundled", "variant": "default"},
    "bundled": {"kind": "bundled", "variant": "default"},
    "minilm-int8-per-channel": {"kind": "bundled", "variant": "int8-per-channel"},
    "hashing": {"kind": "hashing", "dim": 64},
}


def canonical_spec(spec: Mapping[str, Any] | Any) -> dict[str, Any]:
    """The spec validated and with every default filled in: what a cube records.
    :class:`InvalidInput` names what is wrong."""
    raw = spec.model_dump(mode="json") if hasattr(spec, "model_dump") else dict(spec)
    try:
        return _SPEC.validate_python(raw).model_dump(mode="json")
    except ValidationError as exc:
        raise InvalidInput(f"invalid embedder spec: {exc.errors(include_url=False)}",
                           details={"spec": raw}) from exc


def parse_embedder_setting(value: str) -> dict[str, Any]:
    """The spec ``MEMOS_EMBEDDER`` names: a shorthand (``minilm``, ``minilm-int8-per-channel``,
    ``hashing``) or a JSON spec such as ``{"kind": "litellm", "model": "…", "dim": 1536}``.

    >>> parse_embedder_setting("minilm")
    {'kind': 'bundled', 'variant': 'default'}
    """
    text = value.strip()
    if text in SHORTHANDS:
        return dict(SHORTHANDS[text])
    if not text.startswith("{"):
        raise InvalidInput(f"unknown embedder {value!r}: use one of {sorted(SHORTHANDS)} or a "
                           'JSON spec, e.g. {"kind": "onnx", "path": …, "tokenizer": …, "dim": …}')
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"MEMOS_EMBEDDER is not valid JSON: {exc}") from exc
    return canonical_spec(raw)


def build_embedder(spec: Mapping[str, Any], *, models_dir: Path | None = None,
                   batch_size: int = 64,
                   litellm_options: Mapping[str, Any] | None = None) -> Embedder:
    """A new embedder for a canonical spec (loads the model; no network call).

    ``models_dir`` holds models built on this machine (the quantized bundled variant,
    built there on first use; default ``~/.cache/memos/models``);
    ``litellm_options`` pass through to every litellm call.
    """
    kind = spec["kind"]
    if kind == "bundled":
        if spec.get("variant", "default") == "default":
            return OnnxMiniLM(batch_size=batch_size)
        from memos.embedders.quantize import load_quantized

        return load_quantized(models_dir or Path.home() / ".cache" / "memos" / "models",
                              batch_size=batch_size)
    if kind == "onnx":
        embedder = OnnxEmbedder(model_path=Path(spec["path"]),
                                tokenizer_path=Path(spec["tokenizer"]), dim=spec["dim"],
                                pooling=spec["pooling"], normalize=spec["normalize"],
                                max_tokens=spec["max_length"], batch_size=batch_size,
                                model_sha256=spec.get("sha256"))
        embedder.check_dim()
        return embedder
    if kind == "litellm":
        from memos.embedders.remote import LiteLLMEmbedder

        return LiteLLMEmbedder(model=spec["model"], dim=spec["dim"], api_base=spec.get("api_base"),
                               dimensions=spec["dim"] if spec.get("shorten") else None,
                               batch_size=spec.get("batch_size", 128), options=litellm_options)
    if kind == "hashing":
        return HashingEmbedder(spec["dim"])
    raise InvalidInput(f"unknown embedder kind {kind!r}")


class Embedders:
    """The server's default embedder and every cube's own, each built once.

    ``onnx_dirs`` and ``litellm_models`` say what a *request* may ask for (the default is
    the operator's choice and always allowed): ONNX files under those directories only, and
    litellm models of that list only (``*``: any), since a cube's embedder runs with the
    server's files and credentials. ``build(spec)`` makes an embedder
    (default: :func:`build_embedder`).
    """

    def __init__(self, *, default: Embedder, default_spec: Mapping[str, Any] | None = None,
                 onnx_dirs: Sequence[Path] = (), litellm_models: Sequence[str] = (),
                 build: Callable[[Mapping[str, Any]], Embedder] | None = None) -> None:
        self.default = default
        #: the default's, so that this is an Embedder too: code that embeds outside any
        #: cube embeds with the default
        self.name, self.dim = default.name, default.dim
        self.default_spec = canonical_spec(default_spec) if default_spec is not None else None
        self.onnx_dirs = [Path(d).resolve() for d in onnx_dirs]
        self.litellm_models = list(litellm_models)
        self._build = build or build_embedder
        self._built: dict[str, Embedder] = {}
        if self.default_spec is not None:
            self._built[_key(self.default_spec)] = default
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.default.embed(texts)

    def resolve(self, spec: Mapping[str, Any] | None) -> Embedder:
        """The embedder of a canonical spec (``None``: the default), built on first use."""
        if spec is None:
            return self.default
        key = _key(spec)
        with self._lock:
            embedder = self._built.get(key)
            if embedder is None:
                embedder = self._built[key] = self._build(spec)
            return embedder

    def for_request(self, spec: Any | None) -> tuple[dict[str, Any] | None, Embedder]:
        """The canonical spec and embedder for a spec a request named (``None``: the
        default's). :class:`Forbidden` (403) when the server does not allow it (an operator
        choice, not a bad request), :class:`InvalidInput` when it does not load (bad file,
        wrong ``dim``)."""
        if spec is None:
            return self.default_spec, self.default
        canonical = canonical_spec(spec)
        self.check_allowed(canonical)
        return canonical, self.resolve(canonical)

    def check_allowed(self, spec: Mapping[str, Any]) -> None:
        """:class:`Forbidden` unless a request may ask for ``spec`` on this server."""
        if self.default_spec is not None and _key(spec) == _key(self.default_spec):
            return
        if spec["kind"] == "hashing":
            raise Forbidden("the hashing embedder is for tests only: a cube may use it "
                               "only where it is the server's default (MEMOS_EMBEDDER)")
        if spec["kind"] == "onnx":
            for field in ("path", "tokenizer"):
                path = Path(spec[field]).resolve()
                if not any(path.is_relative_to(d) for d in self.onnx_dirs):
                    raise Forbidden(
                        f"ONNX {field} {spec[field]!r} is outside the directories this server "
                        "allows; an operator lists them in MEMOS_ONNX_MODEL_DIRS",
                        details={"field": field, "allowed": [str(d) for d in self.onnx_dirs]})
        elif spec["kind"] == "litellm":
            if "*" not in self.litellm_models and spec["model"] not in self.litellm_models:
                raise Forbidden(
                    f"litellm embedding model {spec['model']!r} is not allowed on this server; "
                    "an operator lists allowed models in MEMOS_LITELLM_EMBEDDING_MODELS",
                    details={"allowed": self.litellm_models})

    def for_cube(self, cube: CubeRow) -> Embedder:
        """The embedder of the cube's vectors. :class:`Conflict` when what its spec builds
        now is another model than the one that made them (a replaced model file, or a
        changed server default for a cube that records none): never mix two models."""
        embedder = self.resolve(cube.embedder)
        if cube.embedding_model != embedder.name or cube.embedding_dim != embedder.dim:
            raise Conflict(
                f"cube {cube.id!r} holds vectors of {cube.embedding_model!r} "
                f"({cube.embedding_dim}-d); its embedder now is {embedder.name!r} "
                f"({embedder.dim}-d). Re-embed it (POST /v1/cubes/{cube.id}/embedder) or "
                "restore the model it was built with",
                details={"cube_model": cube.embedding_model, "server_model": embedder.name})
        return embedder


def _key(spec: Mapping[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True)
