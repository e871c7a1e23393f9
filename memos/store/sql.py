"""The SQL store: engine set-up, schema upgrades and transactions.

SQLite (the embedded default) runs in WAL mode with a busy timeout and foreign keys on;
PostgreSQL needs the pgvector extension (migration 0001 enables it). The schema is created
and changed only by Alembic; :meth:`Store.upgrade` runs it programmatically.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from memos.errors import BackendUnavailable

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode: a committed transaction survives a process crash (kill -9); only an
    # OS crash or power loss can drop the last commits.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _migrate_sqlite(connection: Connection, migrate: Callable[[], None]) -> None:
    """Run ``migrate`` the way SQLite's manual says to change a table's schema.

    SQLite alters a constraint only by rebuilding the table, and dropping the old table
    with foreign keys on would cascade-delete its children's rows. So: foreign keys off
    (outside a transaction, or the pragma is ignored), one transaction from the first DDL
    on (Python's sqlite3 would start it only at the first DML), ``foreign_key_check``
    before the commit, keys on again.
    """
    connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
    connection.commit()
    try:
        with connection.begin():
            connection.exec_driver_sql("BEGIN")
            migrate()
            dangling = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
            if dangling:
                raise RuntimeError(f"the migration left dangling references: {dangling[:5]}")
    finally:
        connection.exec_driver_sql("PRAGMA foreign_keys=ON")
        connection.commit()


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

        self._migrate(lambda config: command.upgrade(config, revision))

    def downgrade(self, revision: str) -> None:
        """Take the schema back to ``revision`` (a migration refuses when data would not fit
        the older schema)."""
        from alembic import command

        self._migrate(lambda config: command.downgrade(config, revision))

    def _migrate(self, run: Callable[[Any], None]) -> None:
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        try:
            with self.engine.connect() as connection:
                config.attributes["connection"] = connection
                if self.dialect == "sqlite":
                    _migrate_sqlite(connection, lambda: run(config))
                else:
                    with connection.begin():
                        run(config)
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

    def dispose(self) -> None:
        self.engine.dispose()
