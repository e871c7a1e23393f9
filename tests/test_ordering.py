"""A message's place in its session is unique, also on a database that held duplicates."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from memos.store.models import utcnow
from memos.store.ordering import session_lock_key
from memos.store.sql import MIGRATIONS_DIR, Store


def _fresh_url(backend: str, tmp_path: Path, pg_server: Any) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path}/fresh.db"
    if pg_server is None:
        pytest.skip("PostgreSQL (pgserver) could not start")
    name = "o_" + uuid.uuid4().hex[:12]
    pg_server.psql(f"CREATE DATABASE {name};")
    return str(pg_server.get_uri()).replace("/postgres?", f"/{name}?")


def _insert(conn: Any, message_id: str, session_id: str, seq: int) -> None:
    conn.execute(text(
        "INSERT INTO messages (id, cube_id, session_id, seq, role, content, content_sha, "
        "created_at) VALUES (:id, 'c', :session, :seq, 'user', :content, :sha, :now)"),
        {"id": message_id, "session": session_id, "seq": seq, "content": message_id,
         "sha": message_id, "now": utcnow().replace(tzinfo=None).isoformat(" ")})


def _order(conn: Any, session_id: str) -> list[tuple[int, str]]:
    return [tuple(r) for r in conn.execute(text(
        "SELECT seq, id FROM messages WHERE session_id = :s ORDER BY seq"), {"s": session_id})]


def test_migration_0004_renumbers_duplicates_by_seq_then_insertion_and_forbids_new_ones(
        backend: str, tmp_path: Path, pg_server: Any) -> None:
    store = Store(_fresh_url(backend, tmp_path, pg_server))
    try:
        store.upgrade("0003")
        with store.engine.begin() as conn:
            conn.execute(text("INSERT INTO cubes (id, tenant, metadata, embedding_model, "
                              "embedding_dim, index_version, created_at) VALUES "
                              "('c', 't', '{}', 'm', 3, 0, :now)"),
                         {"now": utcnow().replace(tzinfo=None).isoformat(" ")})
            # what two racing writers left behind: ties at seq 1 and 3, inserted out of order
            for message_id, seq in [("b", 1), ("a", 1), ("d", 3), ("e", 3), ("c", 2),
                                    ("z", 0)]:
                _insert(conn, message_id, "tied", seq)
            for message_id, seq in [("p", 0), ("q", 7)]:  # no tie: numbers are kept
                _insert(conn, message_id, "clean", seq)
        store.upgrade("0004")
        assert store.current_revision() == "0004"
        with store.engine.connect() as conn:
            assert _order(conn, "tied") == [(0, "z"), (1, "b"), (2, "a"), (3, "c"), (4, "d"),
                                            (5, "e")]
            assert _order(conn, "clean") == [(0, "p"), (7, "q")]
        with pytest.raises(IntegrityError), store.engine.begin() as conn:
            _insert(conn, "late", "tied", 5)
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        with store.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0003")  # drops only the constraint
        with store.engine.begin() as conn:
            _insert(conn, "late", "tied", 5)
    finally:
        store.dispose()


def test_the_session_lock_key_is_a_stable_signed_64_bit_number_per_session() -> None:
    key = session_lock_key("cube", "s1")
    assert key == session_lock_key("cube", "s1") and -2**63 <= key < 2**63
    assert len({key, session_lock_key("cube", "s2"), session_lock_key("cube2", "s1"),
                session_lock_key("cub", "es1")}) == 4
