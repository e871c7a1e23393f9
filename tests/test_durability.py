"""MEMOS_DURABILITY: what SQLite promises for an acknowledged write."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from memos.config import Settings
from memos.service import open_cube
from memos.store.sql import Store

_SYNCHRONOUS = {1: "normal", 2: "full"}  # PRAGMA synchronous answers a number


def _synchronous(store: Store) -> str:
    with store.engine.connect() as conn:
        return _SYNCHRONOUS[conn.exec_driver_sql("PRAGMA synchronous").scalar_one()]


def test_the_default_fsyncs_every_commit(tmp_path: Path) -> None:
    cube = open_cube(Settings(data_dir=tmp_path, embedder="hashing", extractor="none"))
    try:
        assert _synchronous(cube.store) == "full"
        with cube.store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
    finally:
        cube.store.dispose()


def test_normal_is_chosen_by_the_environment_and_applies_to_every_connection(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMOS_DURABILITY", "normal")
    settings = Settings(data_dir=tmp_path, embedder="hashing", extractor="none")
    assert settings.durability == "normal"
    cube = open_cube(settings)
    try:
        connections = [cube.store.engine.connect() for _ in range(3)]  # pooled and new
        assert [_SYNCHRONOUS[c.exec_driver_sql("PRAGMA synchronous").scalar_one()]
                for c in connections] == ["normal"] * 3
        for c in connections:
            c.close()
    finally:
        cube.store.dispose()


def test_an_unknown_durability_is_refused_naming_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="'full' or 'normal'"):
        Settings(data_dir=tmp_path, durability="fast")
    with pytest.raises(ValueError, match="'full' or 'normal'"):
        Store(f"sqlite:///{tmp_path}/x.db", durability="fast")  # type: ignore[arg-type]


def test_a_blob_and_its_name_are_fsynced_before_put_returns(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from memos.store.blobs import BlobStore

    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    store = BlobStore(tmp_path / "blobs")
    payload = b"\x02\x00\x00\x00\x00\x00\x00\x00{}"  # the smallest safetensors file
    sha = store.put_bytes(payload)
    final = store.path(sha)
    assert final.read_bytes() == payload
    assert str(final.parent) == synced[-1]  # the directory entry, after the rename
    assert synced[0].endswith(".tmp")  # the bytes, before the rename
