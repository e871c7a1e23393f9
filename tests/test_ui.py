"""The web inspector's server side: page shells hold no memory data, every asset is local,
and the pages read the same key-guarded API as any client (the browser run is in
tests/test_ui_browser.py)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from memos.config import Settings
from memos.cube import MemCube

STATIC = Path(__file__).resolve().parents[1] / "api" / "ui" / "static"
PAGES = ["/ui", "/ui/cubes/a", "/ui/cubes/a/sessions/s1", "/ui/cubes/a/memories/m1",
         "/ui/cubes/a/search", "/ui/cubes/a/model"]


@pytest.fixture
def backend() -> str:
    return "sqlite"


def test_every_page_renders_and_names_only_local_assets(client: TestClient) -> None:
    for path in PAGES:
        r = client.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), path
        assets = re.findall(r'(?:src|href)="([^"]+)"', r.text)
        assert assets and all(a.startswith("/") or a.startswith("#") for a in assets), assets
        for asset in (a for a in assets if a.startswith("/ui/static/")):
            got = client.get(asset)
            assert got.status_code == 200 and got.content, asset
    # the bundled scripts and styles fetch nothing from elsewhere either
    for f in STATIC.rglob("*"):
        if f.suffix in (".js", ".css", ".html") and "vendor" not in f.parts:
            assert not re.search(r"https?://", f.read_text()), f


@pytest.mark.parametrize("folder, build, licence", [
    ("chartjs", "chart.umd.min.js", "LICENSE.md"), ("cytoscape", "cytoscape.min.js", "LICENSE")])
def test_vendored_libraries_are_the_noted_releases_with_their_licences(
        folder: str, build: str, licence: str) -> None:
    vendor = STATIC / "vendor" / folder
    notes = (vendor / "README.md").read_text()
    digest = hashlib.sha256((vendor / build).read_bytes()).hexdigest()
    assert digest in notes, f"{build} changed: refresh it as vendor/{folder}/README.md says"
    assert "MIT" in (vendor / licence).read_text()


def test_a_page_shell_holds_no_memory_data(client: TestClient) -> None:
    client.post("/v1/cubes", json={"id": "a"})
    r = client.post("/v1/cubes/a/messages", json={"session_id": "s1", "sync": True, "messages": [
        {"id": "m1", "speaker": "Ana", "content": "The vault code is 4471."}]})
    assert r.status_code == 201
    for path in PAGES:
        assert "4471" not in client.get(path).text, path


def test_pages_say_when_the_server_needs_a_key(service: MemCube, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, run_worker=False, retrieval_flush_seconds=0,
                        api_keys="alice:k1")
    with TestClient(create_app(settings, service=service)) as client:
        page = client.get("/ui")
        assert page.status_code == 200
        assert 'data-auth="on"' in page.text and 'id="key-form"' in page.text
        # the data behind the page is the API's, which wants the key
        assert client.get("/v1/cubes").status_code == 401
        assert client.get("/v1/cubes", headers={"Authorization": "Bearer k1"}).status_code == 200


def test_open_server_pages_say_so(client: TestClient) -> None:
    page = client.get("/ui/cubes/a")
    assert 'data-auth="off"' in page.text and "no API keys" in page.text
    assert 'data-cube="a"' in page.text


def test_ui_is_not_in_the_api_schema_and_ui_slash_redirects(client: TestClient) -> None:
    assert not [p for p in client.get("/openapi.json").json()["paths"] if p.startswith("/ui")]
    r = client.get("/ui/", follow_redirects=False)
    assert r.status_code in (302, 307) and r.headers["location"] == "/ui"


def test_a_cube_id_in_the_url_is_escaped_in_the_page(client: TestClient) -> None:
    page = client.get("/ui/cubes/%22%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E").text
    assert "<script>alert(1)</script>" not in page
