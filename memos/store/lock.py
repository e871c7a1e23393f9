"""One process per embedded data directory: an OS lock on ``<data_dir>/memos.lock``.

The embedded store is SQLite plus state SQL does not share between processes: each
process keeps its FAISS indexes in memory and snapshots them under ``<data_dir>/index``,
so a second process on the same directory would search a stale index and overwrite the
other's snapshots. The process that opens the directory therefore takes an exclusive,
non-blocking ``flock`` on ``memos.lock`` and writes its pid there; a second process (or a
second open in the same process) is refused with :class:`~memos.errors.Conflict` naming
the directory and the holder's pid.

The kernel drops the lock when its file descriptor closes — on :meth:`DataDirLock.release`
or however the process ends, ``kill -9`` and a power loss included — so the file a dead
process leaves behind never blocks the next start; only a live holder does. PostgreSQL
deployments take no lock: their index is in the database (pgvector) and their blobs are
content-addressed with atomic writes, so stateless workers may share a directory.

>>> lock = DataDirLock.acquire(Path("/tmp/memos-data"))  # doctest: +SKIP
>>> lock.release()  # doctest: +SKIP
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from memos.errors import Conflict

__all__ = ["DataDirLock", "LOCK_FILE"]

LOCK_FILE = "memos.lock"


class DataDirLock:
    """An exclusive lock on one data directory, held until :meth:`release`."""

    def __init__(self, data_dir: Path, fd: int) -> None:
        self.data_dir = data_dir
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, data_dir: Path) -> DataDirLock:
        """Lock ``data_dir`` (created if missing) or raise :class:`Conflict` at once."""
        data_dir = data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        # No O_TRUNC: a refused opener must not erase the holder's pid.
        fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise Conflict(
                f"data directory {data_dir} is in use by another memos process (pid "
                f"{holder}); stop it, or give this one another --data-dir (MEMOS_DATA_DIR)",
                details={"data_dir": str(data_dir), "pid": holder}) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(data_dir, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Unlock (idempotent). The pid stays in the file; an unheld lock blocks no one."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
