"""MEMOS_SQLITE_CACHE_MB and the WAL checkpoint interval every embedded SQLite connection
keeps."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from memos.config import Settings
from memos.service import open_cube
from memos.store.sql import SQLITE_CACHE_MB, WAL_AUTOCHECKPOINT_PAGES, Store


def _cache_kib(conn) -> int:
    return -int(conn.exec_driver_sql("PRAGMA cache_size").scalar_one())  # negative: KiB


def test_every_connection_keeps_the_configured_cache_and_the_hot_one_is_reused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMOS_SQLITE_CACHE_MB", "32")
    cube = open_cube(Settings(data_dir=tmp_path, embedder="hashing", extractor="none"))
    try:
        connections = [cube.store.engine.connect() for _ in range(3)]  # pooled and new
        assert [_cache_kib(c) for c in connections] == [32 * 1024] * 3
        assert [c.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one()
                for c in connections] == [WAL_AUTOCHECKPOINT_PAGES] * 3 == [10_000] * 3
        raw = [c.connection.dbapi_connection for c in connections]
        for c in connections:
            c.close()
        with cube.store.engine.connect() as again:  # the last one returned: its cache is hot
            assert again.connection.dbapi_connection is raw[-1]
    finally:
        cube.store.dispose()


def test_the_default_is_128_mib_and_a_cache_below_1_mib_is_refused(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/x.db")
    with store.engine.connect() as conn:
        assert _cache_kib(conn) == SQLITE_CACHE_MB * 1024 == 128 * 1024
    store.dispose()
    with pytest.raises(ValueError, match="sqlite_cache_mb must be >= 1"):
        Store(f"sqlite:///{tmp_path}/y.db", sqlite_cache_mb=0)
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path, sqlite_cache_mb=0)
