"""Rows: vectors and scalar columns keyed by id, gathered in one step."""

from __future__ import annotations

import numpy as np
import pytest

from memos.retrieval.rows import Rows


def test_put_replace_drop_and_gather_in_the_order_asked() -> None:
    rows = Rows(columns={"s": np.int64})
    v = np.eye(3, dtype=np.float32)
    rows.put([10, 20, 30], v, s=[1, 2, 3])
    held = rows[20]
    rows.put([20], [v[0] * 2], s=[9])  # a replace: the old row dies, its view keeps values
    assert held.tolist() == [0.0, 1.0, 0.0] and not held.flags.writeable
    assert rows.gather(np.array([30, 20])).tolist() == [[0, 0, 1], [2, 0, 0]]
    assert rows.column("s", [20, 10]).tolist() == [9, 1]
    rows.drop([10, 99])  # an unknown id is ignored
    assert 10 not in rows and 20 in rows and len(rows) == 2 and sorted(rows) == [20, 30]
    with pytest.raises(KeyError):
        rows.gather([10])


def test_compaction_keeps_every_live_vector() -> None:
    rng = np.random.default_rng(0)
    rows = Rows(columns={"t": np.float64})
    vecs = rng.normal(size=(5000, 8)).astype(np.float32)
    rows.put(list(range(5000)), vecs, t=np.arange(5000) / 2)
    rows.drop(range(0, 5000, 2))
    rows.drop(range(1, 4000, 2))  # dead rows now outnumber live ones: compacted
    live = np.arange(4001, 5000, 2)
    assert len(rows) == len(live) and rows._n == len(live)
    assert np.array_equal(rows.gather(live), vecs[live])
    assert np.array_equal(rows.column("t", live), live / 2)


def test_bad_puts_are_refused() -> None:
    rows = Rows(columns={"s": np.int64})
    with pytest.raises(ValueError, match="columns"):
        rows.put([1], np.ones((1, 4)))
    rows.put([1], np.ones((1, 4)), s=[0])
    with pytest.raises(ValueError, match="dimension"):
        rows.put([2], np.ones((1, 5)), s=[0])


def test_ascending_is_a_view_while_ids_arrive_in_order_and_none_after_a_replace() -> None:
    rows = Rows()
    v = np.arange(12, dtype=np.float32).reshape(6, 2)
    rows.put([1, 2], v[:2])
    rows.put([5, 9], v[2:4])
    view = rows.ascending()
    assert view is not None
    ids, vecs = view
    assert ids.tolist() == [1, 2, 5, 9] and vecs.tolist() == v[:4].tolist()
    assert not ids.flags.writeable and not vecs.flags.writeable
    assert np.shares_memory(vecs, rows._vecs)  # no copy
    rows.put([12], v[4:5])
    assert ids.tolist() == [1, 2, 5, 9]  # a view handed out earlier keeps its rows
    rows.put([2], v[5:6])  # a replace leaves a dead row: no view
    assert rows.ascending() is None
    out_of_order = Rows()
    out_of_order.put([3, 1], v[:2])
    assert out_of_order.ascending() is None


def test_ascending_again_after_a_compaction_restores_id_order() -> None:
    rows = Rows()
    n = 3000
    rows.put(list(range(n)), np.ones((n, 2), dtype=np.float32))
    rows.drop(range(0, n, 2))
    assert rows.ascending() is None  # dead rows held
    rows.drop(range(1, n // 2, 2))  # dead rows now outnumber live ones: compacted
    view = rows.ascending()
    assert view is not None and view[0].tolist() == list(range(n // 2 + 1, n, 2))
