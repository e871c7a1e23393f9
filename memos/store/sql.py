"""The SQL store: engine set-up, schema upgrades and transactions.

SQLite (the embedded default) runs in WAL mode with a busy timeout and foreign keys on, at
the configured durability (``MEMOS_DURABILITY``):

- ``full`` (default): ``synchronous=FULL`` — every commit is fsynced before it returns,
  so an acknowledged write survives a process crash, an OS crash and a power loss.
- ``normal``: ``synchronous=NORMAL`` — the WAL is fsynced only at checkpoints: a commit
  survives a process crash (kill -9), but an OS crash or power loss can drop the last
  commits (never corrupting the database).

Each SQLite connection keeps a page cache of ``MEMOS_SQLITE_CACHE_MB`` (default 128 MiB,
filled only as pages are read; the pool hands out the most recently used connection first,
so one stays hot). SQLite's own default, 2 MiB, holds a small cube's indexes but not a big
one's: their keys (ids, lineages, hashes) are random, so every insert touches a random leaf
page, and past the cache each becomes a read. Measured on a 40k-turn needle build: ingest
at 35–40k turns 342 turns/s with 2 MiB, 402 with 128 MiB; 512 MiB was no faster at 100k.
The write-ahead log is checkpointed every :data:`WAL_AUTOCHECKPOINT_PAGES` pages (about 40 MB,
not SQLite's 4 MB): a page written by many commits is copied back once per checkpoint, and
the needle builds ran 8–11% faster (10k 464.9 -> 502.2 turns/s, 100k 347.6 -> 384.8). Every
commit is still fsynced to the log at ``full`` durability; a purge still empties the log.

PostgreSQL needs the pgvector extension (migration 0001 enables it); its durability is the
server's (``fsync``, ``synchronous_commit``). The schema is created and changed only by
Alembic; :meth:`Store.upgrade` runs it programmatically.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from memos.errors import BackendUnavailable
from memos.store.lock import DataDirLock

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"

Durability = Literal["full", "normal"]
#: Page cache per SQLite connection, MiB (``MEMOS_SQLITE_CACHE_MB``; module docstring).
SQLITE_CACHE_MB = 128
#: WAL pages (4 KiB each) after which a commit copies the log back into the database:
#: SQLite's 1,000 rewrites a hot index page once per 4 MB of log, 10,000 once per 40 MB.
WAL_AUTOCHECKPOINT_PAGES = 10_000


def _sqlite_pragmas(dbapi_connection: Any, _record: Any, *, durability: Durability,
                    cache_mb: int) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
    # Deleted and overwritten content is zeroed on disk, so a purge leaves no copy of the
    # text in freed pages (memos.derive.sources; Store.reclaim empties the WAL after it).
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA cache_size={-1024 * cache_mb}")  # negative: KiB, not pages
    cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
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

    ``durability`` and ``sqlite_cache_mb`` apply to SQLite (see the module docstring).
    ``data_dir_lock``, when given, is the embedded data directory's lock; the store holds it
    until :meth:`dispose`.

    >>> store = Store("sqlite:///:memory:")  # doctest: +SKIP
    >>> with store.transaction() as session: ...
    """

    def __init__(self, url: str, *, durability: Durability = "full",
                 sqlite_cache_mb: int = SQLITE_CACHE_MB,
                 data_dir_lock: DataDirLock | None = None) -> None:
        if durability not in ("full", "normal"):
            raise ValueError(f"durability must be 'full' or 'normal', not {durability!r}")
        if sqlite_cache_mb < 1:
            raise ValueError(f"sqlite_cache_mb must be >= 1, not {sqlite_cache_mb!r}")
        self.url = url
        self.durability = durability
        self._data_dir_lock = data_dir_lock
        self.dialect = url.split(":", 1)[0].split("+", 1)[0]
        kwargs: dict[str, Any] = {"future": True}
        if self.dialect == "sqlite":
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 10}
            if ":memory:" not in url:  # (an in-memory database has one connection per thread)
                kwargs["pool_use_lifo"] = True  # the hot connection and its page cache first
        else:
            kwargs.update(pool_pre_ping=True, pool_size=10, max_overflow=10)
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url[len("postgresql://"):]
        self.engine: Engine = create_engine(url, **kwargs)
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", partial(
                _sqlite_pragmas, durability=durability, cache_mb=sqlite_cache_mb))
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
        """Close every connection and release the data directory's lock, if held."""
        self.engine.dispose()
        if self._data_dir_lock is not None:
            self._data_dir_lock.release()
