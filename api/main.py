"""``create_app(settings) -> FastAPI``: nothing is built at import time.

The one error mapping lives here: :class:`memos.errors.MemosError` and request validation
errors become ``{"error": {"type", "message", "details"}}`` with the matching status code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount, compile_path

from api.local_only import LocalOnlyGuard
from api.middleware import BodyLimit, InternalErrorAsJson
from api.routes import (
    chat,
    cubes,
    jobs,
    memories,
    model_memory,
    search,
    stats,
    structure,
    system,
)
from api.ui import mount_static
from api.ui import router as ui_router
from memos import __version__
from memos.config import Settings, get_settings
from memos.cube import MemCube
from memos.errors import InvalidInput, MemosError
from memos.jobs import Worker
from memos.limits import Limits
from memos.llm import preload_litellm
from memos.metrics import Metrics
from memos.service import build_services

log = logging.getLogger("memos.api")


class _RequestMetrics:
    """Counts and times requests by (method, route template, status) for ``/metrics``, and
    records a search's stages from its ``Server-Timing`` header.

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
        stages: dict[str, float] = {}
        started = time.perf_counter()
        # a mount rewrites these in the scope; matching again needs the request's own
        where = {"path": scope["path"], "root_path": scope.get("root_path", "")}

        async def send_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name.lower() == b"server-timing":
                        stages.update(_server_timing(value.decode("latin-1")))
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            app = scope["app"]
            path = route_template(app, {**scope, **where})
            metrics: Metrics = app.state.metrics
            metrics.observe_request(method=scope["method"], path=path, status=status,
                                    seconds=time.perf_counter() - started)
            if stages and path == SEARCH_ROUTE:
                metrics.observe_stages(stages)


#: the route whose ``Server-Timing`` stages become ``memos_search_stage_seconds``
SEARCH_ROUTE = "/v1/cubes/{cube_id}/search"


def _server_timing(header: str) -> dict[str, float]:
    """``"db;dur=1.20, embed;dur=3.4"`` -> ``{"db": 1.2, "embed": 3.4}`` (milliseconds)."""
    out: dict[str, float] = {}
    for metric in header.split(","):
        name, _, params = metric.strip().partition(";")
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "dur" and name:
                try:
                    out[name] = float(value)
                except ValueError:
                    pass
    return out


def route_template(app: Any, scope: Any) -> str:
    """The template of the route that served ``scope`` (``/v1/cubes/{cube_id}/search``), so
    metrics have one series per route, not per id. FastAPI's own routes put themselves in the
    scope; the docs pages, the schema and mounted static files are plain Starlette routes,
    found here by matching again (``/ui/static/{path}`` for a mount). A path no route
    matches is ``unmatched``."""
    route = scope.get("route")
    if route is not None:
        return str(route.path)
    for candidate in app.routes:
        match, _ = candidate.matches(scope)
        if match is Match.FULL:
            path = str(getattr(candidate, "path", "unmatched"))
            return path + "/{path}" if isinstance(candidate, Mount) else path
    return "unmatched"


def _validation_error(exc: RequestValidationError, content_type: str | None) -> MemosError:
    """One status for every request the schema refuses: 422, with a message that names the
    field, or says what is wrong with the body as a whole. (413 is for the deployment's
    limits, :mod:`memos.limits`, which the schema does not fix.)"""
    errors = exc.errors()
    details = {"errors": _plain(errors)}
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


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods ``path`` answers, for a 405's ``Allow``: those the OpenAPI schema gives
    the most specific path template that matches (literal segments win, so
    ``/activations/refresh`` is POST although ``/activations/{unit_id}`` matches it too).
    Starlette's own ``Allow`` names only the first route that matched."""
    templates = getattr(app.state, "path_templates", None)
    if templates is None:
        templates = [(compile_path(template)[0], len(compile_path(template)[2]),
                      sorted(m.upper() for m in ops))
                     for template, ops in app.openapi()["paths"].items()]
        app.state.path_templates = templates
    matching = [(params, methods) for regex, params, methods in templates
                if regex.match(path)]
    fewest = min((params for params, _ in matching), default=0)
    return sorted({m for params, methods in matching if params == fewest for m in methods})


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
        # litellm (the `llm` extra) imports in seconds: off the first request's path
        preload_litellm()
        memos, scheduler = services.cube, services.scheduler
        app.state.memos = memos
        app.state.keys = services.keys
        app.state.model_memory = services.model_memory
        app.state.chat = services.chat
        app.state.scheduler = scheduler
        app.state.metrics.watch(memos.embedder)
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

    # Built with the app, not in the lifespan, so requests refused before startup count too.
    app.state.metrics = Metrics()

    @app.exception_handler(MemosError)
    async def _memos_error(_: Request, exc: MemosError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = _validation_error(exc, request.headers.get("content-type"))
        return JSONResponse(err.to_dict(), status_code=err.status_code)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI could not read the body (e.g. not UTF-8)
            err = InvalidInput(f"the request body could not be read as JSON: {exc.detail}")
            return JSONResponse(err.to_dict(), status_code=err.status_code)
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        body = {"error": {"type": kind, "message": str(exc.detail), "details": {}}}
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request.app, request.url.path))
        return JSONResponse(body, status_code=exc.status_code, headers=headers)

    # Innermost first: the JSON 500, then the body limit, then the counter, which so sees
    # every status the client gets.
    app.add_middleware(InternalErrorAsJson)
    app.add_middleware(BodyLimit, limits=Limits.from_settings(settings))
    app.add_middleware(_RequestMetrics)
    # Outermost, so a refused remote client reaches nothing, not even the request counts.
    app.add_middleware(LocalOnlyGuard)

    openapi = app.openapi

    def openapi_with_dimensions() -> dict[str, Any]:
        """The schema, stating the embedding length this server's model takes (known once
        the lifespan has opened the service)."""
        schema = openapi()
        memos = getattr(app.state, "memos", None)
        if memos is not None:
            vector = schema["components"]["schemas"]["MemoryCreate"]["properties"]["embedding"]
            vector["anyOf"][0].update(minItems=memos.embedder.dim, maxItems=memos.embedder.dim)
        return schema

    app.openapi = openapi_with_dimensions  # type: ignore[method-assign]

    app.include_router(system.router)
    app.include_router(cubes.router)
    app.include_router(memories.router)
    app.include_router(search.router)
    app.include_router(chat.router)
    app.include_router(model_memory.router)
    app.include_router(jobs.router)
    app.include_router(stats.router)
    app.include_router(structure.router)
    app.include_router(ui_router)
    mount_static(app)
    return app
