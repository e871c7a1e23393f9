"""``create_app(settings) -> FastAPI``: nothing is built at import time.

The one error mapping lives here: :class:`memos.errors.MemosError` and request validation
errors become ``{"error": {"type", "message", "details"}}`` with the matching status code.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.local_only import LocalOnlyGuard
from api.routes import chat, cubes, memories, model_memory, search, system
from memos import __version__
from memos.config import Settings, get_settings
from memos.cube import MemCube
from memos.errors import InvalidInput, MemosError, PayloadTooLarge
from memos.jobs import Worker
from memos.service import build_services

log = logging.getLogger("memos.api")


class _RequestCounter:
    """Counts requests by (method, route template, status) for ``/metrics``.

    Plain ASGI rather than ``@app.middleware("http")``: Starlette's ``BaseHTTPMiddleware``
    streams every response through an extra task and queue, a measurable share of a search.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            scope["app"].state.requests[(scope["method"], path, status)] += 1


def _validation_error(exc: RequestValidationError, content_type: str | None) -> MemosError:
    """One status for every bad body: 422 (413 for over-long text), with a message that
    names the field, or says what is wrong with the body as a whole."""
    errors = exc.errors()
    details = {"errors": _plain(errors)}
    too_long = [e for e in errors if e.get("type") == "string_too_long"]
    if too_long:
        limit = (too_long[0].get("ctx") or {}).get("max_length")
        where = ".".join(str(p) for p in too_long[0].get("loc", ()))
        return PayloadTooLarge(f"{where} is longer than the limit of {limit} characters",
                               details={"max_chars": limit, "field": where})
    if any(e.get("type") == "json_invalid" for e in errors):
        first = next(e for e in errors if e.get("type") == "json_invalid")
        where = (first.get("ctx") or {}).get("error", "")
        return InvalidInput(f"request body is not valid JSON{': ' + where if where else ''}",
                            details=details)
    first = errors[0] if errors else {}
    if tuple(first.get("loc", ())) == ("body",):  # the body as a whole, not one field
        media = (content_type or "").split(";")[0].strip().lower()
        if first.get("type") == "missing":
            return InvalidInput("this route needs a JSON body (send it with "
                                "Content-Type: application/json)", details=details)
        if media != "application/json" and not media.endswith("+json"):
            got = f"Content-Type {media!r}" if media else "no Content-Type"
            return InvalidInput(f"the request body must be JSON sent with Content-Type: "
                                f"application/json, but the request has {got} (curl -d "
                                "needs -H 'content-type: application/json')",
                                details={**details, "content_type": content_type})
    where = ".".join(str(p) for p in first.get("loc", ()))
    return InvalidInput(f"{where}: {first.get('msg', 'invalid request')}", details=details)


def _plain(errors: Any) -> list[dict[str, Any]]:
    return [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg")), "type": e.get("type")}
            for e in errors]


def create_app(settings: Settings | None = None, *, service: MemCube | None = None) -> FastAPI:
    """Build the app for ``settings`` (default: from the environment).

    The service (store, index, embedder) is opened in the lifespan unless one is given.
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(settings, cube=service)
        memos, scheduler = services.cube, services.scheduler
        app.state.memos = memos
        app.state.keys = services.keys
        app.state.model_memory = services.model_memory
        app.state.chat = services.chat
        app.state.scheduler = scheduler
        app.state.requests = Counter()
        app.state.started = time.time()
        handlers = services.handlers
        # With run_worker off the thread only keeps house: retrieval counts still reach SQL.
        flush_every = settings.retrieval_flush_seconds
        worker = Worker(memos.jobs, handlers if settings.run_worker else {},
                        housekeeping=scheduler.housekeeping if flush_every > 0 else None,
                        housekeeping_seconds=flush_every)
        memos.jobs.on_enqueue = worker.wake
        if settings.run_worker or flush_every > 0:
            worker.start()
        try:
            yield
        finally:
            worker.stop()
            try:
                scheduler.flush()
            except MemosError as exc:  # a dying database must not block shutdown
                log.warning("retrieval counts not flushed: %s", exc.message)
            memos.index.flush()
            if service is None:
                memos.store.dispose()

    # FastAPIOffline serves /docs and /redoc with Swagger UI and ReDoc from the installed
    # fastapi-offline package instead of a CDN, so the docs work with no network.
    app = FastAPIOffline(title="memos", version=__version__, lifespan=lifespan,
                         static_url="/docs-assets",
                         description="Memory service for LLM agents: MemCube store, "
                                     "multi-granularity retrieval, provenance and versions.")

    @app.exception_handler(MemosError)
    async def _memos_error(_: Request, exc: MemosError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = _validation_error(exc, request.headers.get("content-type"))
        return JSONResponse(err.to_dict(), status_code=err.status_code)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        body = {"error": {"type": kind, "message": str(exc.detail), "details": {}}}
        return JSONResponse(body, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        body = {"error": {"type": "internal_error", "message": "internal server error",
                          "details": {"exception": type(exc).__name__}}}
        return JSONResponse(body, status_code=500)

    app.add_middleware(_RequestCounter)
    # Outermost, so a refused remote client reaches nothing, not even the request counts.
    app.add_middleware(LocalOnlyGuard)

    app.include_router(system.router)
    app.include_router(cubes.router)
    app.include_router(memories.router)
    app.include_router(search.router)
    app.include_router(chat.router)
    app.include_router(model_memory.router)
    return app
