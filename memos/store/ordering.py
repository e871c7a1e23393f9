"""A message's place in its session: ``seq``, allocated safely across processes.

``(cube_key, session_id, seq)`` is unique (migration 0004). :func:`next_seq` must be called
in the transaction that inserts the messages; it returns the first free number, and no
other transaction can take the same numbers before this one ends:

- PostgreSQL: a transaction-scoped advisory lock keyed on (cube, session) is taken before
  ``max(seq)`` is read, so concurrent ingests into one session — from any number of
  processes — queue for the few milliseconds of their insert, then read the committed
  maximum. It is released at commit or rollback (a killed client's connection ends its
  transaction, so a crash never leaves it held). Ingests into other sessions do not wait.
  A lock rather than retrying on the unique violation: under contention a retry loop
  redoes whole transactions, can starve, and surfaces as errors; the lock never fails.
- SQLite: a write takes the database-wide write lock, and one process writes a data
  directory (:mod:`memos.store.lock`), whose writes the unit repository serialises.

The unique index is the backstop either way: whatever writes, a duplicate cannot commit.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from memos.store.models import MessageRow

__all__ = ["next_seq", "session_lock_key"]


def session_lock_key(cube_key: str, session_id: str) -> int:
    """The advisory-lock key of a session: a signed 64-bit hash of (cube, session).

    Two sessions sharing a key (about 1 in 2^64) only wait for each other; nothing breaks.
    """
    digest = hashlib.blake2b(f"memos.messages.seq\0{cube_key}\0{session_id}".encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def next_seq(session: Session, *, cube_key: str, session_id: str) -> int:
    """The first unused ``seq`` of the session (0 for a new one), held until commit."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                        {"key": session_lock_key(cube_key, session_id)})
    last = session.scalar(select(func.max(MessageRow.seq)).where(
        MessageRow.cube_key == cube_key, MessageRow.session_id == session_id))
    return 0 if last is None else last + 1
