"""Start a throw-away memos server on a free loopback port (for bench and eval commands).

The server runs in its own process, exactly as ``memos serve`` would, so whatever drives it
goes through HTTP and the SDK; the library never imports the API package.

    with local_server() as url:
        MemosClient(url).create_cube("x")
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from memos.errors import BackendUnavailable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def local_server(data_dir: Path | None = None, *, env: dict[str, str] | None = None,
                 startup_timeout: float = 120) -> Iterator[str]:
    """Yield the base URL of a fresh server; stop it gracefully (index snapshot) on exit."""
    from memos.client import MemosClient

    tmp = tempfile.TemporaryDirectory(prefix="memos-local-") if data_dir is None else None
    directory = Path(tmp.name) if tmp is not None else Path(data_dir)  # type: ignore[arg-type]
    port = free_port()
    child_env = {k: v for k, v in os.environ.items()
                 if k not in ("MEMOS_DATABASE_URL", "MEMOS_API_KEYS", "MEMOS_DATA_DIR")}
    child_env.update(env or {})
    log_path = directory / "server.log"
    directory.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "memos.cli", "--data-dir", str(directory), "serve",
             "--port", str(port), "--log-level", "warning"],
            env=child_env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + startup_timeout
        with MemosClient(url, timeout=2) as client:
            while True:
                try:
                    client.health()
                    break
                except BackendUnavailable:
                    if proc.poll() is not None or time.time() > deadline:
                        raise BackendUnavailable(
                            f"the local memos server did not start; its log:\n"
                            f"{log_path.read_text()[-2000:]}") from None
                    time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if tmp is not None:
            tmp.cleanup()
