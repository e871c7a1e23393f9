"""Run the API under uvicorn: announce it only once it answers, fail in one line if it cannot.

``memos serve`` calls :func:`serve`. The app is started by import string
(``api.main:create_app``, a factory), so the library never imports the API package. The
``on_ready`` callback (the start banner) runs only after ``/healthz`` has answered 200; a
start that fails — a missing module, a database that cannot open, a port in use — returns
exit status 1 after printing the cause on one line (``--log-level debug`` keeps the
traceback).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable

__all__ = ["serve", "report_start_failure"]

APP = "api.main:create_app"


class _StartupFailure(logging.Handler):
    """Remembers the last error uvicorn logs while starting (the cause, in one line)."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.cause: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            self.cause = f"{type(exc).__name__}: {exc}"
        elif _is_traceback(message):  # Starlette hands uvicorn a lifespan failure as text
            self.cause = _last_line(message)
        elif self.cause is None or not message.startswith("Application startup"):
            self.cause = message


def _is_traceback(message: str) -> bool:
    return message.lstrip().startswith("Traceback (most recent call last)")


def _last_line(text: str) -> str:
    """``memos.errors.InvalidInput: …`` → ``InvalidInput: …``: the exception, in one line."""
    line = next((x for x in reversed(text.strip().splitlines()) if x.strip()), text).strip()
    name, sep, rest = line.partition(": ")
    return f"{name.rsplit('.', 1)[-1]}{sep}{rest}"


class _QuietTracebacks(logging.Filter):
    """Drops tracebacks while the server starts (the one-line cause is printed instead);
    once it has started, errors are logged whole."""

    def __init__(self, server: object) -> None:
        super().__init__()
        self.server = server

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(self.server, "started", False):
            return True
        record.exc_info = None
        record.exc_text = None
        return not _is_traceback(record.getMessage())


def serve(*, host: str, port: int, log_level: str = "info",
          on_ready: Callable[[], None] | None = None, ready_timeout: float = 120.0) -> int:
    """Serve until interrupted; return the process exit status (0, or 1 if start failed)."""
    import httpx
    import uvicorn

    config = uvicorn.Config(APP, factory=True, host=host, port=port, log_level=log_level)
    server = uvicorn.Server(config)
    failure = _StartupFailure()
    quiet = _QuietTracebacks(server)
    error_log = logging.getLogger("uvicorn.error")
    if log_level not in ("debug", "trace"):
        for handler in logging.getLogger("uvicorn").handlers + error_log.handlers:
            handler.addFilter(quiet)
    error_log.addHandler(failure)

    def announce() -> None:
        deadline = time.monotonic() + ready_timeout
        while not server.started:
            if server.should_exit or time.monotonic() > deadline:
                return
            time.sleep(0.05)
        url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/healthz"
        try:
            answered = httpx.get(url, timeout=10).status_code == 200
        except httpx.HTTPError:
            answered = False
        if answered and on_ready is not None:
            on_ready()

    watcher = threading.Thread(target=announce, name="memos-banner", daemon=True)
    watcher.start()
    try:
        server.run()  # uvicorn's own config.load() runs here: import errors surface too
    except SystemExit as exc:  # uvicorn exits on a bad app import or a port in use
        if exc.code not in (0, None):
            return report_start_failure(failure.cause)
    except ImportError as exc:
        return report_start_failure(f"{type(exc).__name__}: {exc}")
    finally:
        error_log.removeHandler(failure)
    if not server.started:
        return report_start_failure(failure.cause)
    return 0


def report_start_failure(cause: str | None) -> int:
    """Print why the server did not start, in one line; returns the exit status (1)."""
    print(f"memos: the server did not start: {cause or 'unknown error (see the log above)'}",
          file=sys.stderr)
    return 1
