"""Pluggable embedders: the server's default and each cube's own.

A cube records the embedder spec its vectors come from (:data:`memos.types.EmbedderSpec`:
the bundled MiniLM, any ONNX model by path, any litellm model) with the model's fingerprint
and dimension; :class:`Embedders` builds each spec's embedder once and hands every cube its
own, refusing a cube whose recorded fingerprint no longer matches (never mix models).

- :mod:`memos.embedders.registry` — :class:`Embedders`, :func:`build_embedder`,
  :func:`parse_embedder_setting` (``MEMOS_EMBEDDER``)
- :mod:`memos.embedders.remote` — :class:`LiteLLMEmbedder`
- :mod:`memos.embedders.quantize` — the bundled model's per-channel dynamic int8 build,
  made on this machine from the shipped model

Switching a cube's embedder is the ``reembed_cube`` job (:mod:`memos.reembed`).
"""

from memos.embedders.registry import Embedders, build_embedder, parse_embedder_setting

__all__ = ["Embedders", "build_embedder", "parse_embedder_setting"]
