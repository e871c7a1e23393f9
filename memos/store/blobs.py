"""The blob store: content-addressed safetensors payloads of activation and parametric units.

    <data_dir>/blobs/<sha256[:2]>/<sha256>.safetensors

Writes are atomic and durable (a temporary file, fsynced, renamed into place, the directory
fsynced) before the SQL row citing them commits; payloads are safetensors, never pickle.
Reading bytes and a file's metadata needs no torch; tensors are read with safetensors'
torch loader.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from memos.errors import Conflict, InvalidInput

if TYPE_CHECKING:
    import torch

__all__ = ["BlobStore", "blob_root", "read_safetensors_metadata"]


def blob_root(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """``<data_dir>/blobs``, with the same default data directory as the backbone."""
    root = data_dir or os.environ.get("MEMOS_DATA_DIR") or "./memos-data"
    return Path(root).expanduser() / "blobs"


class BlobStore:
    """Content-addressed safetensors payloads: ``<root>/<sha[:2]>/<sha>.safetensors``.

    ``sha`` is the sha256 of the file's bytes. Writes go to a temporary file in the same
    directory and are renamed into place, so a reader never sees half a blob and two
    writers of the same content agree. Never pickle.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise InvalidInput(f"not a sha256: {sha256!r}")
        return self.root / sha256[:2] / f"{sha256}.safetensors"

    def put(self, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
        """Store tensors (+ string metadata); returns the blob's sha256."""
        from safetensors.torch import save_file

        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
        os.close(fd)
        try:
            save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
            h = hashlib.sha256()
            with open(tmp, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            sha = h.hexdigest()
            final = self.path(sha)
            final.parent.mkdir(parents=True, exist_ok=True)
            _install(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return sha

    def put_bytes(self, data: bytes) -> str:
        """Store an already serialised safetensors file (an import); returns its sha256.
        Needs no torch."""
        sha = hashlib.sha256(data).hexdigest()
        final = self.path(sha)
        if final.is_file():
            return sha
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=final.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            _install(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return sha

    def read_bytes(self, sha256: str) -> bytes:
        """The payload file's bytes (an export); ``Conflict`` if it is missing."""
        path = self.path(sha256)
        if not path.is_file():
            raise Conflict(f"payload {sha256} is missing from the blob store {self.root}",
                           details={"payload_sha256": sha256})
        return path.read_bytes()

    def delete(self, sha256: str) -> None:
        """Erase a payload (a purge): zeroed in place, then unlinked. Missing is fine.

        Zeroing first is best effort below the file system (a copy-on-write file system or an
        SSD may keep the old blocks); no file under the data directory holds it afterwards.
        """
        path = self.path(sha256)
        if not path.is_file():
            return
        size = path.stat().st_size
        with open(path, "r+b") as f:
            for start in range(0, size, 1 << 20):
                f.write(bytes(min(1 << 20, size - start)))
            f.flush()
            os.fsync(f.fileno())
        path.unlink()

    def get(self, sha256: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """Tensors and metadata of a blob; ``NotFound``-like ``Conflict`` if it is missing."""
        from safetensors import safe_open

        path = self.path(sha256)
        if not path.is_file():
            raise Conflict(f"payload {sha256} is missing from the blob store {self.root}",
                           details={"payload_sha256": sha256})
        tensors = {}
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            for key in f.keys():
                tensors[key] = f.get_tensor(key)
        return tensors, metadata


def _install(tmp: str, final: Path) -> None:
    """Rename a written temporary file into place, durably: its bytes are on disk before
    its name is, and its name before the caller commits the SQL row that cites it, so an
    acknowledged unit's payload survives a power loss as its row does."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_safetensors_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's header, read without torch.

    A safetensors file starts with an 8-byte little-endian header length and a JSON header;
    ``InvalidInput`` when ``data`` is not one.
    """
    if len(data) < 8:
        raise InvalidInput("payload is not a safetensors file (too short)")
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8 or size > 100_000_000:
        raise InvalidInput("payload is not a safetensors file (bad header length)")
    try:
        header = json.loads(data[8:8 + size])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput("payload is not a safetensors file (bad header)") from exc
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return {str(k): str(v) for k, v in (meta or {}).items()}
