"""What a new user meets in the first hour: offline docs, clear errors, documented scores."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

CONVERSATION = [
    {"id": "m1", "role": "user", "speaker": "Ana", "content": "I moved to Berlin last spring.",
     "timestamp": "2023-05-08T10:00:00Z"},
    {"id": "m2", "role": "user", "speaker": "Ana", "content": "My dog Pixel loves the canal."},
]


class _Assets(HTMLParser):
    """Every URL a page loads: script src, link href, img src, and url(...) in inline JS."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value and ((tag in ("script", "img") and name == "src")
                          or (tag == "link" and name == "href")):
                self.urls.append(value)

    def handle_data(self, data: str) -> None:
        self.urls += re.findall(r"""url:\s*['"]([^'"]+)['"]""", data)
        self.urls += re.findall(r"""spec-url=['"]([^'"]+)['"]""", data)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_api_docs_load_every_asset_from_the_app(client: TestClient, page: str) -> None:
    r = client.get(page)
    assert r.status_code == 200
    parser = _Assets()
    parser.feed(r.text)
    for tag in re.findall(r"<redoc[^>]*>", r.text):  # ReDoc names its spec as an attribute
        parser.urls += re.findall(r'spec-url="([^"]+)"', tag)
    assert len(parser.urls) >= 2, parser.urls
    for url in parser.urls:
        assert url.startswith("/"), f"{page} loads {url} from outside the app"
        assert client.get(url).status_code == 200, url
    assert "cdn" not in r.text.lower() and "googleapis" not in r.text


def test_score_kind_says_what_scores_mean(client: TestClient) -> None:
    client.post("/v1/cubes", json={"id": "ana"})
    client.post("/v1/cubes/ana/messages", json={"session_id": "s1", "messages": CONVERSATION})
    query = {"query": "What is the name of Ana's dog?", "top_k": 2}
    router = client.post("/v1/cubes/ana/search", json=query).json()
    assert (router["mode"], router["score_kind"]) == ("router", "router")
    assert "Pixel" in router["hits"][0]["unit"]["text"]
    dense = client.post("/v1/cubes/ana/search", json={**query, "mode": "dense"}).json()
    assert (dense["mode"], dense["score_kind"]) == ("dense", "cosine")
    assert all(-1.0 <= h["score"] <= 1.0 for h in dense["hits"])


def test_a_string_where_an_integer_belongs_is_refused(client: TestClient) -> None:
    client.post("/v1/cubes", json={"id": "ana"})
    r = client.post("/v1/cubes/ana/search", json={"query": "dog", "top_k": "3"})
    assert r.status_code == 422
    assert r.json()["error"]["message"] == "body.top_k: Input should be a valid integer"
    r = client.post("/v1/cubes/ana/messages", json={
        "session_id": "s1", "sync": "yes", "messages": CONVERSATION})
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("body.sync:")
    # floats still take integers, datetimes and enums still take their JSON strings
    r = client.post("/v1/cubes/ana/memories", json={
        "text": "Ana likes tea", "confidence": 1, "valid_from": "2023-05-08T10:00:00Z",
        "granularity": "fact"})
    assert r.status_code == 201, r.text


def test_bad_bodies_are_all_422_with_a_message_that_says_why(client: TestClient) -> None:
    client.post("/v1/cubes", json={"id": "ana"})
    r = client.post("/v1/cubes/ana/search", content=b'{"query": "dog",',
                    headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["message"].startswith(
        "request body is not valid JSON")
    # curl -d without -H sends a form content type
    r = client.post("/v1/cubes/ana/search", content=b'{"query": "dog"}',
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 422
    message = r.json()["error"]["message"]
    assert "application/json" in message and "application/x-www-form-urlencoded" in message
    r = client.post("/v1/cubes/ana/search", content=b"")
    assert r.status_code == 422 and "JSON body" in r.json()["error"]["message"]


def test_context_counts_with_the_named_models_tokenizer(client: TestClient) -> None:
    import litellm

    client.post("/v1/cubes", json={"id": "ana"})
    client.post("/v1/cubes/ana/messages", json={"session_id": "s1", "messages": CONVERSATION})
    body = {"query": "Where does Ana live?", "max_tokens": 200}
    estimated = client.post("/v1/cubes/ana/context", json=body).json()
    counted = client.post("/v1/cubes/ana/context", json={**body, "model": "gpt-4o-mini"})
    assert counted.status_code == 200, counted.text
    lines = counted.json()["text"].splitlines()
    assert counted.json()["tokens"] == sum(
        litellm.token_counter(model="gpt-4o-mini", text=line) for line in lines)
    assert counted.json()["unit_ids"] == estimated["unit_ids"]
    r = client.post("/v1/cubes/nope/context", json={**body, "model": "gpt-4o-mini"})
    assert r.status_code == 404
