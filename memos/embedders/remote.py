"""Remote embedding models through litellm (OpenAI, Voyage, Cohere, Ollama, …).

:class:`LiteLLMEmbedder` calls ``litellm.embedding`` in batches, retried with exponential
back-off on transient failures (rate limits, timeouts, lost connections, 5xx), and checks
every response: one vector per text, each ``dim`` wide and finite. Vectors are
L2-normalised, so inner product = cosine like every memos embedder. Credentials come from
the server's environment (``OPENAI_API_KEY``, ``VOYAGE_API_KEY``, …) as litellm reads them.

    LiteLLMEmbedder(model="openai/text-embedding-3-small", dim=1536).embed(["hi"])

On top of :data:`EMBED_RETRY`, litellm's OpenAI-compatible path retries each call
itself (two more tries; it reads ``max_retries=0`` as its default, so it cannot be turned
off from here).

``options`` pass through to every call (``api_base``, ``timeout``, or — in tests — an
OpenAI ``client`` whose HTTP transport is a fake: only the remote service is faked).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from memos.embed import normalise
from memos.errors import BackendUnavailable
from memos.llm import Retry, is_transient, load_litellm

__all__ = ["LiteLLMEmbedder", "EMBED_RETRY"]

#: How embedding calls are retried: four attempts, after 1, 2 and 4 s.
EMBED_RETRY = Retry(attempts=4)


def _litellm_embedding(**kwargs: Any) -> Any:
    return load_litellm().embedding(**kwargs)


class LiteLLMEmbedder:
    """A litellm embedding model; ``name`` is ``litellm:<model>@<dim>`` (its fingerprint)."""

    def __init__(self, *, model: str, dim: int, api_base: str | None = None,
                 dimensions: int | None = None, batch_size: int = 128,
                 options: Mapping[str, Any] | None = None, retry: Retry = EMBED_RETRY,
                 embedding: Callable[..., Any] | None = None) -> None:
        """``embedding`` is the ``litellm.embedding``-compatible call (default: litellm's)."""
        self.model = model
        self.dim = dim
        self.name = f"litellm:{model}@{dim}"
        self.batch_size = batch_size
        self.retry = retry
        self._call = embedding or _litellm_embedding
        self._options: dict[str, Any] = dict(options or {})
        if api_base:
            self._options["api_base"] = api_base
        if dimensions:
            self._options["dimensions"] = dimensions

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = [self._embed_batch(list(texts[i:i + self.batch_size]))
               for i in range(0, len(texts), self.batch_size)]
        return np.vstack(out)

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        # An empty string is refused by several providers; one space embeds as "nothing".
        inputs = [t if t.strip() else " " for t in texts]
        try:
            response = self.retry.call(
                lambda: self._call(model=self.model, input=inputs, **self._options),
                transient=is_transient)
        except Exception as exc:
            raise BackendUnavailable(
                f"embedding model {self.model!r} failed: {type(exc).__name__}: {exc}",
                details={"model": self.model}) from exc
        vectors = _vectors_of(response)
        if len(vectors) != len(texts):
            raise BackendUnavailable(f"embedding model {self.model!r} returned {len(vectors)} "
                                     f"vectors for {len(texts)} texts")
        array = np.asarray(vectors, dtype=np.float32)
        if array.ndim != 2 or array.shape[1] != self.dim:
            raise BackendUnavailable(
                f"embedding model {self.model!r} returned vectors of shape {array.shape}; "
                f"the embedder is declared {self.dim}-d",
                details={"model": self.model, "declared_dim": self.dim})
        if not np.isfinite(array).all() or not np.abs(array).sum(axis=1).all():
            raise BackendUnavailable(f"embedding model {self.model!r} returned a zero or "
                                     "non-finite vector")
        return normalise(array)


def _vectors_of(response: Any) -> list[list[float]]:
    """The vectors of an OpenAI-style embedding response, in input order."""
    data = response["data"] if isinstance(response, dict) else response.data
    items = []
    for position, item in enumerate(data):
        if isinstance(item, dict):
            items.append((item.get("index", position), item["embedding"]))
        else:
            items.append((getattr(item, "index", position), item.embedding))
    return [vector for _, vector in sorted(items, key=lambda pair: pair[0])]
