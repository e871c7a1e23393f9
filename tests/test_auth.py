"""API keys and tenancy: a key sees only its tenant's cubes; /healthz stays open."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from api.main import create_app
from memos.config import Settings
from memos.cube import MemCube
from memos.keys import KeyRing


def test_keys_isolate_tenants(service: MemCube, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, api_keys="alpha:key-a,beta:key-b")
    with TestClient(create_app(settings, service=service)) as client:
        a = {"Authorization": "Bearer key-a"}
        b = {"Authorization": "Bearer key-b"}
        assert client.get("/healthz").status_code == 200
        r = client.get("/v1/cubes")
        assert r.status_code == 401 and r.json()["error"]["type"] == "unauthorized"
        assert client.get("/v1/cubes", headers={"Authorization": "Bearer wrong"}).status_code \
            == 401
        assert client.post("/v1/cubes", json={"id": "secret"}, headers=a).status_code == 201
        assert client.get("/v1/cubes/secret", headers=a).status_code == 200
        # Tenant B cannot see, search, write or delete tenant A's cube: plain 404.
        assert client.get("/v1/cubes/secret", headers=b).status_code == 404
        assert client.post("/v1/cubes/secret/search", json={"query": "x"},
                           headers=b).status_code == 404
        assert client.post("/v1/cubes/secret/messages", headers=b, json={
            "session_id": "s", "messages": [{"content": "hi"}]}).status_code == 404
        assert client.delete("/v1/cubes/secret", headers=b).status_code == 404
        assert client.get("/v1/cubes", headers=b).json() == []
        # Same id in another tenant is a different cube namespace? No: ids are global.
        assert client.post("/v1/cubes", json={"id": "secret"}, headers=b).status_code == 409
        assert client.get("/metrics").status_code == 401


def test_created_keys_work_and_can_be_revoked(service: MemCube, tmp_path: Path) -> None:
    ring = KeyRing(service.store)
    assert not ring.auth_enabled()
    key = ring.create(tenant="gamma", name="ci")
    assert key.key and key.key.startswith("mk_")
    assert ring.auth_enabled()
    with TestClient(create_app(Settings(data_dir=tmp_path), service=service)) as client:
        h = {"Authorization": f"Bearer {key.key}"}
        assert client.post("/v1/cubes", json={"id": "g"}, headers=h).json()["tenant"] == "gamma"
        ring.revoke(key.id)
        assert client.get("/v1/cubes", headers=h).status_code == 401
    assert [k.id for k in ring.list()] == []
