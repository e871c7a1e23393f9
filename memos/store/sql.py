"""The SQL store: engine set-up, schema upgrades and transactions.

SQLite (the embedded default) runs in WAL mode with a busy timeout and foreign keys on;
PostgreSQL needs the pgvector extension (migration 0001 enables it). The schema is created
and changed only by Alembic; :meth:`Store.upgrade` runs it programmatically.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from memos.errors import BackendUnavailable

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode: a committed transaction survives a process crash (kill -9); only an
    # OS crash or power loss can drop the last commits.
    cursor.execute("PRAGMA synchronous=NORMAL")
    # Deleted and overwritten content is zeroed on disk, so a purge leaves no copy of the
    # text in freed pages (memos.derive.sources; Store.reclaim empties the WAL after it).
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def include_object(obj: Any, name: str | None, type_: str, reflected: bool,
                   compare_to: Any) -> bool:
    """Alembic autogenerate filter (``alembic check``, ``revision --autogenerate``).

    The pgvector HNSW indexes are expression indexes created by raw SQL in the migrations;
    the models cannot describe them, so comparisons skip them instead of proposing to drop
    them.
    """
    return not (type_ == "index" and reflected and compare_to is None
                and str(name).startswith("ix_units_embedding_hnsw"))


class Store:
    """Owns the engine and hands out transactions.

    >>> store = Store("sqlite:///:memory:")  # doctest: +SKIP
    >>> with store.transaction() as session: ...
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.dialect = url.split(":", 1)[0].split("+", 1)[0]
        kwargs: dict[str, Any] = {"future": True}
        if self.dialect == "sqlite":
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 10}
        else:
            kwargs.update(pool_pre_ping=True, pool_size=10, max_overflow=10)
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url[len("postgresql://"):]
        self.engine: Engine = create_engine(url, **kwargs)
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def session_factory(self) -> Session:
        """A plain session (caller closes it); prefer :meth:`transaction`."""
        return self._sessions()

    @property
    def is_postgres(self) -> bool:
        return self.dialect.startswith("postgres")

    def upgrade(self, revision: str = "head") -> None:
        """Bring the schema to ``revision`` with Alembic (idempotent)."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        try:
            with self.engine.begin() as connection:
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
        except OperationalError as exc:
            raise BackendUnavailable(f"cannot reach the database: {exc.orig}") from exc

    def current_revision(self) -> str | None:
        with self.engine.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return None
            row = connection.exec_driver_sql("SELECT version_num FROM alembic_version").first()
            return row[0] if row else None

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on any exception."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except OperationalError as exc:
            session.rollback()
            raise BackendUnavailable(f"database error: {exc.orig}") from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def reclaim(self) -> None:
        """Leave no copy of erased rows on disk, after a purge committed.

        SQLite (``secure_delete`` already zeroed the freed space): a ``TRUNCATE`` checkpoint
        moves the WAL into the database file and empties it, since the WAL still holds the
        pages as they were before the purge. PostgreSQL: ``VACUUM`` of the tables a purge
        rewrites, so the old row versions are no longer readable (the freed space on disk is
        PostgreSQL's to reuse).
        """
        if self.is_postgres:
            with self.engine.connect() as connection:
                connection = connection.execution_options(isolation_level="AUTOCOMMIT")
                for table in ("messages", "memory_units", "provenance_spans", "unit_tags",
                              "unit_links"):
                    connection.exec_driver_sql(f"VACUUM {table}")
            return
        with self.engine.connect() as connection:
            busy, _, _ = connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
            if busy:  # a reader holds an old snapshot: its next checkpoint finishes the job
                log.warning("purge: the WAL could not be emptied now (a reader is active)")

    def dispose(self) -> None:
        self.engine.dispose()
