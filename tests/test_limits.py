"""Limits that hold on every path, and errors that are never 500s (issue 15, failures 3-4).

The app is built from settings alone (SQLite in ``tmp_path``, the hashing embedder: these
tests are about sizes and statuses, not retrieval), so each test sets the limits it needs
through the same ``MEMOS_MAX_*`` settings a deployment uses.
"""

from __future__ import annotations

import copy
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.main import create_app
from memos.config import Settings
from memos.types import MAX_INT

MESSAGES = [
    {"id": "m1", "speaker": "Ana", "content": "I moved to Reykjavik in March 2021."},
    {"id": "m2", "role": "assistant", "content": "How do you like Reykjavik?"},
]


@contextmanager
def app_client(tmp_path: Path, **limits: Any) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path, embedder="hashing", run_worker=False,
                        retrieval_flush_seconds=0, **limits)
    with TestClient(create_app(settings)) as client:
        yield client


def refused(r: Any, status: int, *words: str) -> str:
    assert r.status_code == status, r.text
    message = r.json()["error"]["message"]
    for word in words:
        assert word in message, message
    return str(message)


def exported(client: TestClient) -> dict[str, Any]:
    assert client.post("/v1/cubes", json={"id": "src"}).status_code == 201
    r = client.post("/v1/cubes/src/messages", json={"session_id": "s1", "messages": MESSAGES})
    assert r.status_code == 201, r.text
    data = client.get("/v1/cubes/src/export").json()
    assert len(data["messages"]) == 2 and any(u["spans"] for u in data["units"])
    return data


def test_body_size_is_enforced_while_reading_before_parsing(tmp_path: Path) -> None:
    with app_client(tmp_path, max_body_bytes=1_000) as client:
        client.post("/v1/cubes", json={"id": "c"})
        # Not JSON at all: a 413, not a 422, shows the body was refused before parsing.
        junk = b"x" * 5_000
        r = client.post("/v1/cubes/c/search", content=junk,
                        headers={"content-type": "application/json"})
        refused(r, 413, "5,000 bytes", "1,000", "MEMOS_MAX_BODY_BYTES")

        # Chunked, without Content-Length: counted as the chunks arrive.
        def chunks() -> Iterator[bytes]:
            for _ in range(50):
                yield b"y" * 100

        r = client.post("/v1/cubes/c/search", content=chunks(),
                        headers={"content-type": "application/json"})
        assert "content-length" not in r.request.headers
        refused(r, 413, "more than 1,000 bytes", "MEMOS_MAX_BODY_BYTES")
        # Under the limit the same route works, chunked or not.
        r = client.post("/v1/cubes/c/search", content=iter([b'{"query": ', b'"Reykjavik"}']),
                        headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text


def test_metadata_is_bounded_in_bytes(tmp_path: Path) -> None:
    with app_client(tmp_path, max_metadata_bytes=1_000) as client:
        big = {"blob": "x" * 2_000}
        refused(client.post("/v1/cubes", json={"id": "c", "metadata": big}), 413,
                "cube metadata", "MEMOS_MAX_METADATA_BYTES")
        client.post("/v1/cubes", json={"id": "c"})
        refused(client.post("/v1/cubes/c/memories", json={"text": "fact", "metadata": big}),
                413, "memory metadata is 2,", "the limit is 1,000 (MEMOS_MAX_METADATA_BYTES)")
        assert client.get("/v1/cubes/c/memories").json()["total"] == 0


def test_text_tags_and_query_limits_name_their_setting(tmp_path: Path) -> None:
    with app_client(tmp_path, max_text_chars=100, max_query_chars=50) as client:
        client.post("/v1/cubes", json={"id": "c"})
        refused(client.post("/v1/cubes/c/messages", json={
            "session_id": "s", "messages": [{"content": "x" * 101}]}), 413,
            "message content is 101 characters; the limit is 100 (MEMOS_MAX_TEXT_CHARS)")
        refused(client.post("/v1/cubes/c/memories", json={"text": "x" * 101}), 413,
                "MEMOS_MAX_TEXT_CHARS")
        # The setting raises the limit too: nothing in the schema caps it at the default.
        assert client.post("/v1/cubes/c/memories", json={"text": "x" * 100}).status_code == 201
        tags = [f"t{i}" for i in range(65)]
        refused(client.post("/v1/cubes/c/memories", json={"text": "x", "tags": tags}), 413,
                "65 tags", "(MEMOS_MAX_TAGS)")
        refused(client.post("/v1/cubes/c/search", json={"query": "q" * 51}), 413,
                "query is 51 characters", "MEMOS_MAX_QUERY_CHARS")
        refused(client.post("/v1/cubes/c/context", json={"query": "q" * 51}), 413,
                "MEMOS_MAX_QUERY_CHARS")
        refused(client.post("/v1/cubes/c/chat", json={"messages": [
            {"role": "user", "content": "x" * 101}]}), 413, "chat message content",
            "MEMOS_MAX_TEXT_CHARS")


def test_a_large_ingest_is_refused_up_front_naming_the_limit(tmp_path: Path) -> None:
    with app_client(tmp_path, max_request_chars=1_000, max_messages_per_request=3) as client:
        client.post("/v1/cubes", json={"id": "c"})
        r = client.post("/v1/cubes/c/messages", json={"session_id": "s", "messages": [
            {"content": "x" * 600}, {"content": "y" * 600}]})
        refused(r, 413, "1,200 characters; the limit is 1,000 (MEMOS_MAX_REQUEST_CHARS)")
        r = client.post("/v1/cubes/c/messages", json={"session_id": "s", "messages": [
            {"content": f"message {i}"} for i in range(4)]})
        refused(r, 413, "4 messages", "MEMOS_MAX_MESSAGES_PER_REQUEST")
        assert client.get("/v1/cubes/c").json()["units"] == 0  # nothing of either stored


def test_import_applies_the_ingest_limits(tmp_path: Path) -> None:
    """The issue's import: a 5 MB message, 20,000 tags and a span (10000, -5) were stored."""
    with app_client(tmp_path, max_import_bytes=64 * 1024 * 1024) as client:
        data = exported(client)

        def attempt(change: Any) -> Any:
            doc = copy.deepcopy(data)
            change(doc)
            return client.post("/v1/cubes/import", json={"id": "dst", "data": doc,
                                                        "new_ids": True})

        def huge_message(doc: dict[str, Any]) -> None:
            doc["messages"][0]["content"] = "x" * 5_000_000

        refused(attempt(huge_message), 413, "message m1 content is 5,000,000 characters",
                "MEMOS_MAX_TEXT_CHARS")

        def many_tags(doc: dict[str, Any]) -> None:
            doc["units"][0]["tags"] = [f"t{i}" for i in range(20_000)]

        refused(attempt(many_tags), 413, "20,000 tags", "MEMOS_MAX_TAGS")

        def negative_span(doc: dict[str, Any]) -> None:
            next(u for u in doc["units"] if u["spans"])["spans"][0].update(start=10_000, end=-5)

        assert attempt(negative_span).status_code == 422

        def span_past_the_end(doc: dict[str, Any]) -> None:
            unit = next(u for u in doc["units"] if u["spans"] and u["granularity"] == "turn")
            unit["spans"][0].update(start=10_000, end=10_001)

        refused(attempt(span_past_the_end), 422, "span [10000, 10001) is outside message")
        assert client.get("/v1/cubes/dst").status_code == 404  # none of them was imported
        r = client.post("/v1/cubes/import", json={"id": "dst", "data": data, "new_ids": True})
        assert r.status_code == 201, r.text


@pytest.mark.parametrize("what", ["message id", "unit id"])
def test_import_with_a_duplicated_id_is_422_naming_it(tmp_path: Path, what: str) -> None:
    with app_client(tmp_path) as client:
        data = exported(client)
        key = "messages" if what == "message id" else "units"
        twin = copy.deepcopy(data[key][0])
        if key == "messages":
            twin.update(content="Another text under the same id.", seq=99)
        else:
            twin.update(lineage_id="another-lineage")
        data[key].append(twin)
        r = client.post("/v1/cubes/import", json={"id": "dst", "data": data})
        refused(r, 422, f"{what} {twin['id']!r} twice")
        assert r.json()["error"]["details"]["duplicate"] == twin["id"]
        assert client.get("/v1/cubes/dst").status_code == 404


def test_integers_past_the_range_are_422_and_the_schema_states_it(tmp_path: Path) -> None:
    """2^63 was an OverflowError (500) in offset and job ids; the range is 0..2^53 - 1."""
    with app_client(tmp_path) as client:
        client.post("/v1/cubes", json={"id": "c"})
        for big in (2**63, MAX_INT + 1):
            r = client.get("/v1/cubes/c/memories", params={"offset": big})
            assert r.status_code == 422, r.text
            assert client.get(f"/v1/cubes/c/adapters/jobs/{big}").status_code == 422
        assert client.get("/v1/cubes/c/memories", params={"offset": MAX_INT}).status_code == 200
        assert client.get(f"/v1/cubes/c/adapters/jobs/{MAX_INT}").status_code == 404
        big = 2**63
        r = client.post("/v1/cubes/c/messages", json={"session_id": "s", "messages": MESSAGES})
        r = client.post("/v1/cubes/c/memories", json={"text": "x", "sources": [
            {"message_id": "m1", "start": 0, "end": big}]})
        assert r.status_code == 422, r.text
        schema = client.get("/openapi.json").json()
        params = schema["paths"]["/v1/cubes/{cube_id}/memories"]["get"]["parameters"]
        offset = next(p for p in params if p["name"] == "offset")["schema"]
        assert offset["maximum"] == MAX_INT == 2**53 - 1 and offset["minimum"] == 0
        job = schema["paths"]["/v1/cubes/{cube_id}/adapters/jobs/{job_id}"]["get"]
        assert job["parameters"][1]["schema"]["maximum"] == MAX_INT


def test_every_route_documents_its_errors_and_405_carries_allow(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        schema = client.get("/openapi.json").json()
        for path, ops in schema["paths"].items():
            for method, op in ops.items():
                documented = set(op["responses"])
                assert "413" in documented, (method, path, documented)  # any body
                if path != "/healthz":  # no key, no parameters
                    assert {"401", "404", "409", "422", "503"} <= documented, (method, path)
        # The schema says what the validators say: blank text is refused by both.
        text = schema["components"]["schemas"]["MemoryCreate"]["properties"]["text"]
        assert text["pattern"] == r"\S"
        client.post("/v1/cubes", json={"id": "c"})
        assert client.post("/v1/cubes/c/memories", json={"text": ""}).status_code == 422
        r = client.put("/v1/cubes/c")
        assert r.status_code == 405 and set(r.headers["allow"].split(", ")) == {"GET",
                                                                               "DELETE"}


def test_what_the_fuzzer_found_is_no_longer_a_500(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        client.post("/v1/cubes", json={"id": "c"})
        # A blank speaker took the router's speaker index down (IndexError).
        r = client.post("/v1/cubes/c/messages", json={"session_id": "s", "messages": [
            {"speaker": " ", "content": "hello"}]})
        assert r.status_code == 201, r.text
        assert client.post("/v1/cubes/c/search", json={"query": "hello"}).status_code == 200
        # A time with no UTC year overflowed while being stored (OverflowError).
        r = client.post("/v1/cubes/c/messages", json={"session_id": "s", "messages": [
            {"content": "early", "timestamp": "0001-01-01T00:00:00+01:01"}]})
        refused(r, 422, "outside years 1-9999 in UTC")
        # The last day's UTC year depends on its offset: refused whole, as the schema says.
        r = client.post("/v1/cubes/c/messages", json={"session_id": "s", "messages": [
            {"content": "late", "timestamp": "9999-12-31T10:00:00Z"}]})
        refused(r, 422, "9999-12-30")
        # A blank activation query failed inside, building its search (ValidationError).
        r = client.post("/v1/cubes/c/activations", json={"query": " "})
        refused(r, 422, "query must not be empty")


@contextmanager
def serving(app: FastAPI) -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="critical",
                                           http="h11"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield int(sock.getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _read_response(conn: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    while len(body) < int(headers["content-length"]):
        body += conn.recv(65536)
    return int(lines[0].split()[1]), headers, body


def test_a_500_is_json_and_keeps_the_connection(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, embedder="hashing", run_worker=False,
                        retrieval_flush_seconds=0)
    app = create_app(settings)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    with TestClient(app), serving(app) as port:  # the TestClient runs the lifespan
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, body = _read_response(conn)
            assert status == 500 and headers.get("connection") != "close"
            assert b'"internal_error"' in body and b"a bug" not in body
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # the same connection
            status, _, body = _read_response(conn)
            assert status == 200 and b'"ok"' in body

