"""One process per embedded data directory: a second opener is refused, naming the holder."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from memos.config import Settings
from memos.errors import Conflict
from memos.service import open_cube
from memos.store.lock import LOCK_FILE, DataDirLock


def test_a_second_lock_on_a_directory_is_refused_with_the_directory_and_the_pid(
        tmp_path: Path) -> None:
    lock = DataDirLock.acquire(tmp_path / "data")
    with pytest.raises(Conflict) as refused:
        DataDirLock.acquire(tmp_path / "data")
    message = refused.value.message
    assert str((tmp_path / "data").resolve()) in message
    assert f"pid {os.getpid()})" in message
    assert refused.value.details == {"data_dir": str((tmp_path / "data").resolve()),
                                     "pid": str(os.getpid())}
    assert (tmp_path / "data" / LOCK_FILE).read_text() == f"{os.getpid()}\n"  # not erased
    DataDirLock.acquire(tmp_path / "other").release()  # other directories are free
    lock.release()
    lock.release()
    DataDirLock.acquire(tmp_path / "data").release()


def test_a_stale_lock_file_from_a_dead_process_does_not_block(tmp_path: Path) -> None:
    (tmp_path / LOCK_FILE).write_text("999999999\n")  # what a kill -9 leaves behind
    lock = DataDirLock.acquire(tmp_path)
    assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    lock.release()


def test_open_cube_holds_the_embedded_directory_until_the_store_is_disposed(
        tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, embedder="hashing", extractor="none")
    cube = open_cube(settings)
    with pytest.raises(Conflict, match=re.escape(str(tmp_path.resolve()))):
        open_cube(settings)
    cube.store.dispose()
    open_cube(settings).store.dispose()


def test_a_failed_open_releases_the_lock(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="unknown embedder"):
        open_cube(Settings(data_dir=tmp_path, embedder="no-such-model"))
    DataDirLock.acquire(tmp_path).release()


def test_an_app_releases_its_directory_at_shutdown(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, embedder="hashing", extractor="none",
                        run_worker=False, retrieval_flush_seconds=0)
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
        with pytest.raises(Conflict):
            DataDirLock.acquire(tmp_path)
    with TestClient(create_app(settings)) as client:  # a restart in the same process
        assert client.get("/healthz").status_code == 200


def test_postgresql_takes_no_lock(tmp_path: Path, pg_server: object) -> None:
    if pg_server is None:
        pytest.skip("PostgreSQL (pgserver) could not start")
    from conftest import pg_database

    settings = Settings(data_dir=tmp_path, embedder="hashing", extractor="none",
                        MEMOS_DATABASE_URL=pg_database(pg_server))
    first, second = open_cube(settings), open_cube(settings)  # stateless workers
    assert not (tmp_path / LOCK_FILE).exists()
    first.store.dispose()
    second.store.dispose()
