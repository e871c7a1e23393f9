"""The web inspector end to end: headless Chromium (Debian's ``chromium``, driven by
Playwright) against a real uvicorn server with API keys, on real cubes.

One server for the module, with three cubes: ``small`` (tenant alice, built here: two
sessions, facts, a quarantined fact), ``locomo`` (alice: the first LoCoMo dev conversation,
skipped when ../shared is missing) and ``secret`` (tenant bob). Every page is opened,
checked and saved as a screenshot under ``$MEMOS_UI_ARTEFACTS`` (default: pytest's
temporary directory, ``.../ui-artefacts``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import SHARED_DATA, build_service, needs_shared

from api.main import create_app
from memos.config import Settings
from memos.derive.facts import FactDeriver
from memos.derive.granularity import GranularityDeriver
from memos.eval.loaders import locomo_sessions
from memos.store.units import new_unit

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("needs Debian's chromium (apt-get install -y chromium); .ci/run installs it",
                allow_module_level=True)
playwright_sync = pytest.importorskip(
    "playwright.sync_api", reason="needs playwright (pip install -e '.[test]')")
uvicorn = pytest.importorskip("uvicorn")

ALICE, BOB, ADMIN = "alice-key-1", "bob-key-1", "admin-key-1"
LOCOMO = SHARED_DATA / "locomo" / "locomo_dev.json"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


class Liar:
    """A fact extractor that invents a number its source does not say: the gate quarantines
    what it returns, which the inspector must show with its reason and can restore."""

    name, version = "liar", "1"

    def extract(self, messages: Any, *, session_time: Any = None) -> list[Any]:
        from memos.extract import PERSONA, ExtractedFact

        m = messages[0]
        return [ExtractedFact(text="Ana has 7 cats", subject="Ana", attribute="pets",
                              value="7 cats", memory_type=PERSONA, source_message_id=m.id,
                              span=(0, len(m.content)))]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """The app on a real uvicorn server in a thread, on 127.0.0.1."""

    def __init__(self, app: Any) -> None:
        self.url = f"http://127.0.0.1:{_port()}"
        config = uvicorn.Config(app, host="127.0.0.1", port=int(self.url.rsplit(":", 1)[1]),
                                log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.time() + 60
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def api(self, key: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120,
                            headers={"Authorization": f"Bearer {key}"})


def _ingest(client: httpx.Client, cube: str, session_id: str,
            messages: list[dict[str, Any]]) -> None:
    r = client.post(f"/v1/cubes/{cube}/messages",
                    json={"session_id": session_id, "messages": messages, "sync": True})
    assert r.status_code == 201, r.text


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = os.environ.get("MEMOS_UI_ARTEFACTS")
    path = Path(where) if where else tmp_path_factory.mktemp("ui-artefacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("ui-server")
    service = build_service("sqlite", data, embedder, None)
    rules = FactDeriver.from_setting("rules")
    service.derivers = [GranularityDeriver(), *([rules] if rules else [])]
    settings = Settings(data_dir=data, run_worker=False, retrieval_flush_seconds=0,
                        api_keys=f"alice:{ALICE},bob:{BOB}", admin_keys=ADMIN)
    with Server(create_app(settings, service=service)) as srv, srv.api(ALICE) as alice, \
            srv.api(BOB) as bob:
        alice.post("/v1/cubes", json={"id": "small", "name": "built in the test"})
        _ingest(alice, "small", "s1", [
            {"id": "m1", "speaker": "Ana", "content": "I moved to Lisbon in March.",
             "timestamp": "2024-03-02T10:00:00Z"},
            {"id": "m2", "speaker": "Ben", "content": "Lisbon! Do you still climb?",
             "timestamp": "2024-03-02T10:01:00Z"},
            {"id": "m3", "speaker": "Ana", "content": "Yes, I climb every Sunday with Rui.",
             "timestamp": "2024-03-02T10:02:00Z"}])
        _ingest(alice, "small", "s2", [
            {"id": "m4", "speaker": "Ana", "content": "My sister Eva plays the cello.",
             "timestamp": "2024-05-10T18:00:00Z"},
            {"id": "m5", "speaker": "Ben", "content": "Is she in an orchestra?",
             "timestamp": "2024-05-10T18:01:00Z"}])
        service.derivers = [GranularityDeriver(), FactDeriver(extractor=Liar())]
        _ingest(alice, "small", "s3", [
            {"id": "m6", "speaker": "Ana", "content": "I have two cats.",
             "timestamp": "2024-06-01T09:00:00Z"}])
        service.derivers = [GranularityDeriver(), *([rules] if rules else [])]
        with service.store.transaction() as session:  # a job that failed for good
            key = service.units.cube_row(session, cube_id="small", tenant="alice").key
            row = service.jobs.enqueue(session, kind="derive_session", cube_key=key,
                                       payload={"session_id": "gone", "tenant": "alice"})
            row.status, row.attempts, row.error = "failed", 5, "RuntimeError: disk on fire"
            # an adapter's unit as training records it (training itself needs the backbone)
            session.add(new_unit(cube=service.units.cube_row(session, cube_id="small",
                                                             tenant="alice"),
                                 granularity="cluster", kind="parametric", unit_id="lora-1",
                                 text="- Ana moved to Lisbon in March.", extractor="lora",
                                 payload_sha256="0" * 64, meta={"sources": []},
                                 payload_meta={"steps": 4, "nll_before": 2.5, "nll_after": 1.25,
                                               "loss_curve": [2.5, 1.9, 1.5, 1.3]}))
        bob.post("/v1/cubes", json={"id": "secret"})
        _ingest(bob, "secret", "b1", [{"id": "x1", "speaker": "Bob",
                                        "content": "My bank PIN is hidden in the blue book."}])
        if LOCOMO.exists():
            sample = json.loads(LOCOMO.read_text())[0]
            alice.post("/v1/cubes", json={"id": "locomo", "name": str(sample["sample_id"])})
            for session_id, messages in locomo_sessions(sample):
                _ingest(alice, "locomo", session_id, messages)
        yield srv


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    """A fresh tab holding alice's key, as if typed into the header form."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_init_script(f"sessionStorage.setItem('memos.apiKey', {json.dumps(ALICE)})")
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    assert not errors, f"script errors on the page: {errors}"


def _open(page: Any, server: Server, path: str) -> None:
    page.goto(server.url + path)
    page.wait_for_selector("body[data-ready]", timeout=30_000)
    assert page.get_attribute("body", "data-ready") == "yes", page.inner_text("#notice")


def _shot(page: Any, artefacts: Path, name: str) -> None:
    """The whole page, and its first screen (``<name>-top.png``, what the README shows)."""
    page.screenshot(path=str(artefacts / f"{name}.png"), full_page=True)
    page.screenshot(path=str(artefacts / f"{name}-top.png"))


def _facts(server: Server, cube: str, session: str) -> list[dict[str, Any]]:
    with server.api(ALICE) as api:
        return list(api.get(f"/v1/cubes/{cube}/sessions/{session}/memories").json())


# ------------------------------------------------------------------------- the small cube


def test_the_page_asks_for_a_key_and_a_typed_key_shows_only_its_tenants_cubes(
        browser: Any, server: Server, artefacts: Path) -> None:
    context = browser.new_context()
    tab = context.new_page()
    tab.goto(server.url + "/ui")
    tab.wait_for_selector("#notice:not([hidden])")
    assert "needs an API key" in tab.inner_text("#notice")
    assert tab.locator("#cubes tbody tr").count() == 0
    tab.fill("#key-input", ALICE)
    tab.click("#key-form button[type=submit]")
    tab.wait_for_selector("body[data-ready=yes]")
    cubes = tab.locator("#cubes .cube-link").all_inner_texts()
    assert "small" in cubes and "secret" not in cubes
    assert tab.inner_text("#key-state") == "key set"
    _shot(tab, artefacts, "cubes")
    context.close()


def test_cube_page_counts_sessions_and_pages_memories(page: Any, server: Server,
                                                      artefacts: Path) -> None:
    _open(page, server, "/ui/cubes/small")
    labels = page.evaluate("Chart.getChart(document.getElementById('chart-granularity'))"
                           ".data.labels")
    values = page.evaluate("Chart.getChart(document.getElementById('chart-granularity'))"
                           ".data.datasets[0].data")
    by_gran = dict(zip(labels, values))
    assert by_gran["turn"] == 6 and by_gran["session"] == 3
    assert page.inner_text("#counts-status [data-name=quarantined]") == "1"
    assert page.locator("#sessions .session-link").all_inner_texts() == ["s1", "s2", "s3"]
    page.select_option("#filters select[name=granularity]", "turn")
    page.click("#filters button[type=submit]")
    page.wait_for_function("document.querySelectorAll('#memories tbody tr').length === 6")
    assert "1–6 of 6" in page.inner_text("#memories-pager")
    _shot(page, artefacts, "cube")


def test_session_page_shows_messages_with_speakers_and_the_quarantined_fact(
        page: Any, server: Server, artefacts: Path) -> None:
    _open(page, server, "/ui/cubes/small/sessions/s1")
    messages = page.locator("#messages .message")
    assert messages.count() == 3
    assert "Ana" in messages.nth(0).inner_text() and "Lisbon" in messages.nth(0).inner_text()
    with server.api(ALICE) as api:
        turns = api.get("/v1/cubes/small/memories",
                        params={"granularity": "turn", "session_id": "s1"}).json()["items"]
        links = {(lk["source_id"], lk["target_id"], lk["type"]) for t in turns for lk in api.get(
            f"/v1/cubes/small/memories/{t['id']}/provenance").json()["links"]}
    drawn = page.evaluate("""() => ({
        inside: memosGraph.nodes("[inside = 'yes']").map(n => n.id()),
        edges: memosGraph.edges().map(e => [e.data('source'), e.data('target'), e.data('type')])
    })""")
    assert sorted(drawn["inside"]) == sorted(t["id"] for t in turns)
    assert {tuple(e) for e in drawn["edges"]} == links and links
    _shot(page, artefacts, "session")
    _open(page, server, "/ui/cubes/small/sessions/s3")
    row = page.locator("#derived tbody tr.status-quarantined")
    assert row.count() == 1 and "unsupported" in row.inner_text()


def test_search_explain_chart_has_the_routers_granularities_beside_dense(
        page: Any, server: Server, artefacts: Path) -> None:
    query = "Where did Ana move?"
    with server.api(ALICE) as api:
        expected = api.post("/v1/cubes/small/search", json={
            "query": query, "mode": "router", "explain": True}).json()
    _open(page, server, "/ui/cubes/small/search")
    page.fill("#search-form input[name=query]", query)
    page.select_option("#search-form select[name=mode]", "router")
    page.click("#search-form button[type=submit]")
    page.wait_for_selector("#hits .hit")
    page.wait_for_function("Chart.getChart(document.getElementById('chart-router'))")
    labels = page.evaluate("Chart.getChart(document.getElementById('chart-router')).data.labels")
    assert labels == list(expected["router"]["weights"])
    assert {"turn", "session"} <= set(labels)
    weights = page.evaluate("Chart.getChart(document.getElementById('chart-router'))"
                            ".data.datasets[0].data")
    assert weights == pytest.approx(list(expected["router"]["weights"].values()))
    first = page.locator("#hits .hit").first
    assert first.get_attribute("data-id") == expected["hits"][0]["unit"]["id"]
    assert "lexical" in first.inner_text() and "dense" in first.inner_text()
    assert page.locator("#dense-hits .hit").count() > 0
    assert "mode used: router" in page.inner_text("#mode-used")
    _shot(page, artefacts, "search")


def test_provenance_highlights_exactly_the_cited_span(page: Any, server: Server,
                                                      artefacts: Path) -> None:
    fact = next(f for f in _facts(server, "small", "s1") if f["status"] == "active")
    with server.api(ALICE) as api:
        spans = api.get(f"/v1/cubes/small/memories/{fact['id']}/provenance").json()["sources"]
    _open(page, server, f"/ui/cubes/small/memories/{fact['id']}")
    sources = page.locator("#sources .source")
    assert sources.count() == len(spans) >= 1
    for i, span in enumerate(spans):
        assert sources.nth(i).locator("mark").inner_text() == span["quote"]
        assert sources.nth(i).get_attribute("data-quote") == span["quote"]
    _shot(page, artefacts, "memory")


def test_editing_a_memory_writes_version_2_with_a_diff(page: Any, server: Server,
                                                       artefacts: Path) -> None:
    fact = next(f for f in _facts(server, "small", "s2") if f["status"] == "active")
    _open(page, server, f"/ui/cubes/small/memories/{fact['id']}")
    page.fill("#edit-form textarea[name=text]", "Ana's sister Eva plays the viola.")
    page.fill("#edit-form input[name=reason]", "she switched instruments")
    page.click("#save")
    page.wait_for_url(lambda url: fact["id"] not in url)
    page.wait_for_selector("body[data-ready=yes]")
    versions = page.locator("#history li")
    assert versions.count() == 2
    latest = page.locator("#history li[data-version='2']")
    assert "version 2" in latest.inner_text() and "this page" in latest.inner_text()
    inserted = latest.locator("ins").all_inner_texts()
    assert inserted and "viola" in inserted[-1]
    assert page.inner_text("[data-field=version]") == "2"
    _shot(page, artefacts, "memory-edited")


def test_deleting_a_memory_takes_it_out_of_search(page: Any, server: Server) -> None:
    query = "Is she in an orchestra?"
    with server.api(ALICE) as api:
        before = api.post("/v1/cubes/small/search", json={"query": query, "mode": "dense",
                                                          "top_k": 5}).json()["hits"]
        target = next(h["unit"] for h in before if h["unit"]["granularity"] == "turn")
    _open(page, server, f"/ui/cubes/small/memories/{target['id']}")
    page.click("#delete")
    assert page.inner_text("#delete") == "click again to delete"
    page.click("#delete")
    page.wait_for_selector("#notice.info")
    assert "deleted" in page.inner_text("#notice")
    _open(page, server, f"/ui/cubes/small/search?q={query}")
    page.wait_for_selector("#dense-hits .hit")
    shown = page.locator("#hits .hit, #dense-hits .hit").evaluate_all(
        "items => items.map(i => i.dataset.id)")
    assert target["id"] not in shown
    _open(page, server, f"/ui/cubes/small/memories/{target['id']}")
    assert "not found" in page.inner_text("#notice")


def test_restoring_a_quarantined_fact_shows_its_reason_then_makes_it_active(
        page: Any, server: Server) -> None:
    (fact,) = [f for f in _facts(server, "small", "s3") if f["status"] == "quarantined"]
    _open(page, server, f"/ui/cubes/small/memories/{fact['id']}")
    assert page.inner_text("[data-field=status]") == "quarantined"
    assert "unsupported" in page.inner_text("[data-field='status reason']")
    assert page.is_hidden("#archive") and page.is_visible("#restore")
    page.fill("#edit-form input[name=reason]", "checked with Ana: she has 7 cats now")
    page.click("#restore")
    page.wait_for_url(lambda url: "done=restored" in url)
    page.wait_for_selector("body[data-ready=yes]")
    assert page.inner_text("[data-field=status]") == "active"
    with server.api(ALICE) as api:
        current = api.get(f"/v1/cubes/small/memories/{page.get_attribute('body', 'data-memory')}")
        assert current.json()["status"] == "active"


def test_structure_page_maps_the_clusters_and_a_memory_shows_its_mixture(
        page: Any, server: Server, artefacts: Path) -> None:
    with server.api(ALICE) as api:
        expected = api.get("/v1/cubes/small/structure/clusters?granularity=turn").json()
        turns = api.get("/v1/cubes/small/memories?granularity=turn&limit=50").json()["items"]
        turn = next(u for u in turns if u["text"].startswith("Yes, I climb"))
        mix = api.get(f"/v1/cubes/small/structure/association/{turn['id']}").json()
    _open(page, server, "/ui/cubes/small/structure")
    page.wait_for_function("Chart.getChart(document.getElementById('chart-clusters'))")
    sizes = page.evaluate("Chart.getChart(document.getElementById('chart-clusters'))"
                          ".data.datasets.map(d => d.data.length)")
    assert len(sizes) == expected["clusters"] >= 2 and sum(sizes) == expected["units"]
    assert page.locator("#clusters tbody tr").count() == expected["clusters"]
    _shot(page, artefacts, "structure")
    _open(page, server, f"/ui/cubes/small/memories/{turn['id']}")
    page.wait_for_function("Chart.getChart(document.getElementById('chart-association'))")
    labels = page.evaluate("Chart.getChart(document.getElementById('chart-association'))"
                           ".data.datasets.map(d => d.label)")
    assert labels[0] == "scores (density)" and len(labels) == 1 + len(mix["components"]) + (
        mix["threshold"] is not None)
    assert page.locator("#association-scores tbody tr").count() == len(mix["scores"]) >= 2
    linked = page.locator("#association-scores tbody tr", has_text="linked").count()
    assert linked == sum(s["accepted"] for s in mix["scores"])
    _shot(page, artefacts, "association")


def test_jobs_show_their_error_and_a_failed_one_is_retried(page: Any, server: Server,
                                                            artefacts: Path) -> None:
    _open(page, server, "/ui/cubes/small/model")
    assert "last tick" in page.inner_text("#scheduler")
    failed = page.locator("#jobs tr.job-failed")
    assert failed.count() == 1 and "disk on fire" in failed.inner_text()
    job_id = failed.get_attribute("data-job")
    _shot(page, artefacts, "model")
    failed.locator("button.retry").click()
    page.wait_for_selector(f"#jobs tr[data-job='{job_id}']:not(.job-failed)")
    with server.api(ALICE) as api:
        (job,) = [j for j in api.get("/v1/cubes/small/jobs").json()["items"]
                  if str(j["id"]) == job_id]
    assert job["status"] == "queued" and job["attempts"] == 0  # no worker runs here


def test_adapters_show_their_nll_and_training_curve(page: Any, server: Server) -> None:
    _open(page, server, "/ui/cubes/small/model")
    row = page.locator("#adapters tr[data-id='lora-1']")
    assert row.locator("[data-field=nll]").inner_text() == "2.500 → 1.250"
    page.wait_for_function("Chart.getChart(document.getElementById('chart-adapter-loss'))")
    curve = page.evaluate("Chart.getChart(document.getElementById('chart-adapter-loss'))"
                          ".data.datasets[0].data.map(p => p.y)")
    assert curve == [2.5, 1.9, 1.5, 1.3]


def test_alices_key_cannot_see_or_touch_bobs_cube_in_the_ui(page: Any, server: Server) -> None:
    with server.api(BOB) as bob:
        (bobs,) = bob.get("/v1/cubes/secret/memories",
                          params={"granularity": "turn"}).json()["items"]
    _open(page, server, "/ui")
    assert "secret" not in page.locator("#cubes .cube-link").all_inner_texts()
    page.goto(server.url + "/ui/cubes/secret")
    page.wait_for_selector("body[data-ready]")
    assert page.get_attribute("body", "data-ready") == "error"
    assert "not found" in page.inner_text("#notice")
    assert "PIN" not in page.inner_text("main")
    _open(page, server, f"/ui/cubes/secret/memories/{bobs['id']}")
    assert "not found" in page.inner_text("#notice") and page.is_hidden("#edit")
    # the page's own edit path, aimed at bob's memory with alice's key, is refused
    status = page.evaluate("""async (id) => {
        try { await api('PATCH', `/v1/cubes/secret/memories/${id}`, {text: 'x'}); return 0; }
        catch (err) { return err.status; } }""", bobs["id"])
    assert status == 404
    with server.api(BOB) as bob:
        assert bob.get(f"/v1/cubes/secret/memories/{bobs['id']}").json()["version"] == 1


# ------------------------------------------------------------------ the LoCoMo conversation


@needs_shared("locomo", "locomo_dev.json")
def test_locomo_cube_pages_open_and_search_explains(page: Any, server: Server,
                                                   artefacts: Path) -> None:
    _open(page, server, "/ui")
    assert "locomo" in page.locator("#cubes .cube-link").all_inner_texts()
    _open(page, server, "/ui/cubes/locomo")
    assert page.locator("#sessions .session-link").count() > 10
    assert "1–25 of" in page.inner_text("#memories-pager")
    _shot(page, artefacts, "locomo-cube")
    first = page.locator("#sessions .session-link").first.inner_text()
    _open(page, server, f"/ui/cubes/locomo/sessions/{first}")
    assert page.locator("#messages .message").count() > 5
    _shot(page, artefacts, "locomo-session")
    _open(page, server, "/ui/cubes/locomo/search?q=What did Caroline research?")
    page.wait_for_selector("#hits .hit")
    page.wait_for_function("Chart.getChart(document.getElementById('chart-router'))")
    labels = page.evaluate("Chart.getChart(document.getElementById('chart-router')).data.labels")
    with server.api(ALICE) as api:
        expected = api.post("/v1/cubes/locomo/search", json={
            "query": "What did Caroline research?", "explain": True}).json()
    assert labels == list(expected["router"]["weights"])
    assert {"turn", "session", "summary", "keyword"} <= set(labels)
    _shot(page, artefacts, "locomo-search")


@needs_shared("locomo", "locomo_dev.json")
def test_locomo_fact_provenance_highlights_the_cited_span(page: Any, server: Server,
                                                         artefacts: Path) -> None:
    with server.api(ALICE) as api:
        facts = api.get("/v1/cubes/locomo/memories",
                        params={"granularity": "fact", "limit": 50}).json()["items"]
        assert facts, "the rules extractor found no fact in a whole LoCoMo conversation"
        fact = facts[len(facts) // 2]
        spans = api.get(f"/v1/cubes/locomo/memories/{fact['id']}/provenance").json()["sources"]
    _open(page, server, f"/ui/cubes/locomo/memories/{fact['id']}")
    marks = page.locator("#sources .source mark").all_inner_texts()
    assert marks == [s["quote"] for s in spans] and marks
    _shot(page, artefacts, "locomo-memory")
