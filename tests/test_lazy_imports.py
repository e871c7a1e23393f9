"""First imports of torch and sklearn share one lock (memos.lazy): a cluster map fitted while
another request loads the bundled model must not see a half-imported torch."""

from __future__ import annotations

import threading
import time

import pytest

from memos.granularity import gmm
from memos.lazy import IMPORT_LOCK
from memos.memory.backbone import BackboneProvider


def _call(fn) -> None:
    try:
        fn()
    except Exception:  # noqa: BLE001 - only the waiting is under test
        pass


def _waits_for_the_lock(fn) -> None:
    _call(fn)  # the slow first import, so that below only the lock can hold it up
    done = threading.Event()

    def run() -> None:
        _call(fn)
        done.set()

    with IMPORT_LOCK:
        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        time.sleep(0.3)
        assert not done.is_set(), "ran its imports without taking memos.lazy.IMPORT_LOCK"
    worker.join(timeout=60)
    assert done.is_set()


def test_sklearn_is_imported_under_the_shared_lock() -> None:
    _waits_for_the_lock(gmm._sklearn_mixture)


def test_the_bundled_model_imports_torch_under_the_shared_lock(tmp_path) -> None:
    pytest.importorskip("torch")
    _waits_for_the_lock(BackboneProvider(tmp_path / "no-checkpoint"))
