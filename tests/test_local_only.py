"""The no-keys guard lives in the app: with no API key, only this machine is answered,
however the app is started (issue 15, failure 6: `uvicorn api.main:create_app --factory
--host 0.0.0.0` served every cube to the network)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from api.local_only import is_remote
from api.main import create_app
from memos.config import Settings
from memos.cube import MemCube
from memos.keys import KeyRing


@pytest.mark.parametrize("host, remote", [
    ("127.0.0.1", False), ("127.8.9.10", False), ("::1", False), ("::ffff:127.0.0.1", False),
    ("10.1.2.3", True), ("192.0.2.7", True), ("::ffff:10.0.0.1", True), ("fd00::2", True),
    ("2001:db8::1", True), (None, False), ("testclient", False), ("", False),
])
def test_loopback_is_127_0_0_0_8_and_1(host: str | None, remote: bool) -> None:
    assert is_remote(host) is remote


def test_remote_client_is_refused_with_the_way_to_add_a_key(service: MemCube,
                                                            settings: Settings) -> None:
    app = create_app(settings, service=service)
    with TestClient(app, client=("192.0.2.7", 40000)) as remote:
        for method, path in [("GET", "/v1/cubes"), ("POST", "/v1/cubes"), ("GET", "/healthz"),
                             ("GET", "/metrics"), ("GET", "/docs"), ("GET", "/nowhere")]:
            r = remote.request(method, path, json={"id": "x"})
            assert r.status_code == 403, (method, path)
            error = r.json()["error"]
            assert error["type"] == "forbidden"
            assert "no API keys" in error["message"]
            assert "memos keys create" in error["message"]
            assert "MEMOS_API_KEYS" in error["message"]
    with TestClient(app, client=("127.0.0.1", 40000)) as local:
        assert local.post("/v1/cubes", json={"id": "here"}).status_code == 201
    with TestClient(app) as in_process:  # "testclient": no network peer
        assert in_process.get("/v1/cubes/here").status_code == 200
    assert service.list_cubes(tenant="default")[0].id == "here"  # the refused POST wrote nothing


def test_an_asgi_caller_with_an_ipv6_peer(service: MemCube, settings: Settings) -> None:
    app = create_app(settings, service=service)

    async def call(client: tuple[str, int]) -> int:
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://memos") as http:
            return (await http.get("/v1/cubes")).status_code

    with TestClient(app):  # runs the lifespan the ASGI transport does not
        assert asyncio.run(call(("2001:db8::1", 5000))) == 403
        assert asyncio.run(call(("::1", 5000))) == 200


def test_with_a_key_remote_clients_authenticate(service: MemCube, settings: Settings) -> None:
    key = KeyRing(service.store).create(tenant="t")
    with TestClient(create_app(settings, service=service), client=("192.0.2.7", 1)) as remote:
        assert remote.get("/v1/cubes").status_code == 401
        assert remote.get("/v1/cubes", headers={"Authorization": f"Bearer {key.key}"}) \
            .status_code == 200


def _address_outside_loopback() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
        except OSError:
            return None
        address = str(s.getsockname()[0])
    return None if address.startswith("127.") else address


def test_uvicorn_on_all_interfaces_serves_only_this_machine(tmp_path: Path) -> None:
    address = _address_outside_loopback()
    if address is None:
        pytest.skip("this machine has no IPv4 address outside loopback")
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        port = int(s.getsockname()[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMOS_")}
    env.update(MEMOS_DATA_DIR=str(tmp_path), MEMOS_EMBEDDER="hashing", MEMOS_RUN_WORKER="false")
    log = (tmp_path / "uvicorn.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.main:create_app", "--factory", "--host",
         "0.0.0.0", "--port", str(port), "--log-level", "warning"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        local = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            try:
                httpx.get(f"{local}/healthz", timeout=2)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail((tmp_path / "uvicorn.log").read_text())
                time.sleep(0.2)
        assert httpx.post(f"{local}/v1/cubes", json={"id": "mine"}).status_code == 201
        r = httpx.get(f"http://{address}:{port}/v1/cubes/mine", timeout=5)
        assert r.status_code == 403
        assert "memos keys create" in r.json()["error"]["message"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
