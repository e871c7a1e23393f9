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
        # Cube ids are each tenant's own namespace: B gets its own "secret", learning nothing.
        assert client.post("/v1/cubes", json={"id": "secret"}, headers=b).status_code == 201
        assert client.get("/v1/cubes/secret", headers=b).json()["units"] == 0
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


def test_metrics_needs_an_admin_key(service: MemCube, tmp_path: Path) -> None:
    """Server-wide counts told every tenant about the others (issue 15, failure 5)."""
    settings = Settings(data_dir=tmp_path, api_keys="alpha:key-a", admin_keys="ops-key")
    with TestClient(create_app(settings, service=service)) as client:
        tenant = {"Authorization": "Bearer key-a"}
        r = client.get("/metrics", headers=tenant)
        assert r.status_code == 403
        assert r.json()["error"]["type"] == "forbidden"
        assert "MEMOS_ADMIN_KEYS" in r.json()["error"]["message"]
        assert "memos_cubes" not in r.text
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code \
            == 401
        admin = {"Authorization": "Bearer ops-key"}
        r = client.get("/metrics", headers=admin)
        assert r.status_code == 200 and "memos_cubes" in r.text
        # An admin key is the operator's, not a tenant's: it opens no cube.
        r = client.get("/v1/cubes", headers=admin)
        assert r.status_code == 403 and "tenant" in r.json()["error"]["message"]


def test_created_keys_cannot_read_metrics(service: MemCube, tmp_path: Path) -> None:
    key = KeyRing(service.store).create(tenant="gamma")
    with TestClient(create_app(Settings(data_dir=tmp_path), service=service)) as client:
        assert client.get("/metrics", headers={"Authorization": f"Bearer {key.key}"}) \
            .status_code == 403


def test_metrics_are_open_on_a_server_without_keys(client: TestClient) -> None:
    assert client.get("/metrics").status_code == 200
