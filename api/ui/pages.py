"""The inspector's pages: server-rendered shells, data from the public API.

Each page is a Jinja2 template rendered with what the URL names (cube, session, memory id)
and the enums the filters offer; it holds no memory data. Its script
(``static/inspector.js``) reads and edits through the public ``/v1`` routes only, sending
the key the person typed as ``Authorization: Bearer <key>`` like any client, so the page
can see and do exactly what that key can: a tenant's key sees its own cubes, nothing else.
Every asset is served from this package (Chart.js is vendored under ``static/vendor``), so
the inspector works with no network.

    app.include_router(api.ui.pages.router)
    api.ui.pages.mount_static(app)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from memos import __version__
from memos.keys import KeyRing
from memos.types import Granularity, JobStatus, Kind, ListedStatus, SearchMode

__all__ = ["router", "mount_static"]

_HERE = Path(__file__).resolve().parent
_templates: Jinja2Templates | None = None

router = APIRouter(prefix="/ui", include_in_schema=False)


def _render(request: Request, template: str, page: str, **context: Any) -> HTMLResponse:
    global _templates
    if _templates is None:  # built on first use, not at import
        _templates = Jinja2Templates(directory=str(_HERE / "templates"))
    keys: KeyRing = request.app.state.keys
    return _templates.TemplateResponse(request, template, {
        "page": page, "version": __version__, "auth": keys.auth_enabled(),
        "granularities": [g.value for g in Granularity], "kinds": [k.value for k in Kind],
        "statuses": [s.value for s in ListedStatus], "modes": [m.value for m in SearchMode],
        "job_statuses": [s.value for s in JobStatus],
        **context}, headers={"Cache-Control": "no-store"})


@router.get("", response_class=HTMLResponse)
def cubes_page(request: Request) -> HTMLResponse:
    """The cubes this key's tenant owns."""
    return _render(request, "cubes.html", "cubes")


@router.get("/", response_class=RedirectResponse)
def slash() -> RedirectResponse:
    return RedirectResponse("/ui")


@router.get("/cubes/{cube_id}", response_class=HTMLResponse)
def cube_page(request: Request, cube_id: str) -> HTMLResponse:
    """Counts per kind, granularity and status; the sessions timeline; a filtered, paged
    list of the cube's memories."""
    return _render(request, "cube.html", "cube", cube_id=cube_id)


@router.get("/cubes/{cube_id}/sessions/{session_id}", response_class=HTMLResponse)
def session_page(request: Request, cube_id: str, session_id: str) -> HTMLResponse:
    """A session's messages (speaker, time) and the memories derived from it."""
    return _render(request, "session.html", "session", cube_id=cube_id,
                   session_id=session_id)


@router.get("/cubes/{cube_id}/memories/{memory_id}", response_class=HTMLResponse)
def memory_page(request: Request, cube_id: str, memory_id: str) -> HTMLResponse:
    """One memory whole: fields, version history with diffs, provenance, links, edits."""
    return _render(request, "memory.html", "memory", cube_id=cube_id, memory_id=memory_id)


@router.get("/cubes/{cube_id}/search", response_class=HTMLResponse)
def search_page(request: Request, cube_id: str) -> HTMLResponse:
    """The search playground: any mode with ``explain``, beside flat dense results."""
    return _render(request, "search.html", "search", cube_id=cube_id)


@router.get("/cubes/{cube_id}/structure", response_class=HTMLResponse)
def structure_page(request: Request, cube_id: str) -> HTMLResponse:
    """The GMM clusters of a granularity as a 2-D map (each memory's page shows the
    similarity mixture that chose its links)."""
    return _render(request, "structure.html", "structure", cube_id=cube_id)


@router.get("/cubes/{cube_id}/model", response_class=HTMLResponse)
def model_page(request: Request, cube_id: str) -> HTMLResponse:
    """Jobs (queue, errors, retry) and model memory: activation units, adapters, the
    scheduler's state and decisions."""
    return _render(request, "model.html", "model", cube_id=cube_id)


def mount_static(app: FastAPI) -> None:
    """Serve the inspector's script, style sheet and vendored Chart.js at ``/ui/static``."""
    app.mount("/ui/static", StaticFiles(directory=str(_HERE / "static")), name="ui-static")
