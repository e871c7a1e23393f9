"""API keys: ``MEMOS_API_KEYS`` (static) and keys created with ``memos keys create``.

Keys are stored as sha256 digests only; the plain key is shown once, at creation. When no
key was ever created, the server runs open (tenant ``default``) and answers only clients on
its own machine. Admin keys (``MEMOS_ADMIN_KEYS``) belong to the operator, not a tenant:
they open the server-wide routes (``/metrics``) and no cube.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid

from sqlalchemy import func, select

from memos.errors import Forbidden, NotFound, Unauthorized
from memos.store.models import ApiKeyRow, utcnow
from memos.store.sql import Store
from memos.types import KeyPublic

DEFAULT_TENANT = "default"


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    """Resolves a bearer key to its tenant."""

    def __init__(self, store: Store, static_keys: dict[str, str] | None = None, *,
                 admin_keys: list[str] | None = None) -> None:
        self.store = store
        self.static = {_digest(k): t for k, t in (static_keys or {}).items()}
        self.admin = [_digest(k) for k in admin_keys or ()]
        self._enabled = False

    def auth_enabled(self) -> bool:
        """True once any key (tenant or admin) exists or ever existed: revoking the last key
        locks the API rather than opening it. Monotonic, so it is cached once true."""
        if self.static or self.admin or self._enabled:
            return True
        with self.store.transaction() as session:
            self._enabled = bool(session.scalar(select(func.count()).select_from(ApiKeyRow)))
        return self._enabled

    def tenant_for(self, authorization: str | None) -> str:
        """Tenant of an ``Authorization: Bearer <key>`` header (open mode: ``default``)."""
        if not self.auth_enabled():
            return DEFAULT_TENANT
        if not authorization or not authorization.lower().startswith("bearer "):
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        digest = _digest(authorization[7:].strip())
        tenant = self._tenant_of(digest)
        if tenant is None:
            if self._is_admin(digest):
                raise Forbidden("an admin key opens only the server-wide routes (/metrics); "
                                "use a tenant's key for cubes")
            raise Unauthorized("unknown or revoked API key")
        return tenant

    def require_admin(self, authorization: str | None) -> None:
        """Allow a server-wide route: an admin key, or any caller while no key exists (the
        app then answers only clients on its own machine). A tenant key is :class:`Forbidden`:
        server-wide figures would tell one tenant about the others."""
        if not self.auth_enabled():
            return
        if not authorization or not authorization.lower().startswith("bearer "):
            raise Unauthorized("missing API key: this route needs an admin key "
                               "(MEMOS_ADMIN_KEYS) in 'Authorization: Bearer <key>'")
        digest = _digest(authorization[7:].strip())
        if self._is_admin(digest):
            return
        if self._tenant_of(digest) is not None:
            raise Forbidden("this route shows server-wide figures and needs an admin key "
                            "(MEMOS_ADMIN_KEYS); a tenant's key cannot open it")
        raise Unauthorized("unknown or revoked API key")

    def _is_admin(self, digest: str) -> bool:
        return any(hmac.compare_digest(known, digest) for known in self.admin)

    def _tenant_of(self, digest: str) -> str | None:
        for known, tenant in self.static.items():
            if hmac.compare_digest(known, digest):
                return tenant
        with self.store.transaction() as session:
            row = session.scalar(select(ApiKeyRow).where(ApiKeyRow.key_sha256 == digest,
                                                         ApiKeyRow.revoked_at.is_(None)))
        return None if row is None else row.tenant

    def create(self, *, tenant: str, name: str | None = None) -> KeyPublic:
        key = "mk_" + secrets.token_urlsafe(32)
        row = ApiKeyRow(id=uuid.uuid4().hex[:16], tenant=tenant, name=name,
                        key_sha256=_digest(key), created_at=utcnow())
        with self.store.transaction() as session:
            session.add(row)
        return KeyPublic(id=row.id, tenant=tenant, name=name, created_at=row.created_at, key=key)

    def list(self) -> list[KeyPublic]:
        with self.store.transaction() as session:
            rows = session.scalars(select(ApiKeyRow).where(ApiKeyRow.revoked_at.is_(None))
                                   .order_by(ApiKeyRow.created_at)).all()
            return [KeyPublic(id=r.id, tenant=r.tenant, name=r.name, created_at=r.created_at)
                    for r in rows]

    def revoke(self, key_id: str) -> None:
        with self.store.transaction() as session:
            row = session.get(ApiKeyRow, key_id)
            if row is None or row.revoked_at is not None:
                raise NotFound(f"API key {key_id!r} not found")
            row.revoked_at = utcnow()
