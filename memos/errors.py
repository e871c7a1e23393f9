"""One error tree for the library, the API and the SDK.

    MemosError
    ├── InvalidInput        (400/422: bad request body, empty query, top_k out of range, …)
    ├── Unauthorized        (401: missing or unknown API key)
    ├── Forbidden           (403: a tenant key on an admin route; a remote client of a
    │                        server that has no API keys)
    ├── NotFound            (404: unknown cube, unit, job; also another tenant's cube)
    ├── Conflict            (409: cube already exists, version race, fingerprint mismatch)
    ├── PayloadTooLarge     (413: text over the configured limit)
    └── BackendUnavailable  (503: database, index or model cannot be reached)

Foreign exceptions are translated once, at the boundary (``raise NotFound(...) from exc``).
The API maps this tree to HTTP in one handler; :mod:`memos.client` maps HTTP back to the
same classes, so ``except NotFound`` works identically in-process and over the wire.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "MemosError",
    "InvalidInput",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "PayloadTooLarge",
    "BackendUnavailable",
    "ERROR_TYPES",
]


class MemosError(Exception):
    """Base of every error memos raises on purpose."""

    status_code: int = 500
    error_type: str = "internal_error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        """The wire form: ``{"error": {"type", "message", "details"}}``."""
        return {"error": {"type": self.error_type, "message": self.message,
                          "details": self.details}}


class InvalidInput(MemosError):
    status_code = 422
    error_type = "invalid_input"


class Unauthorized(MemosError):
    status_code = 401
    error_type = "unauthorized"


class Forbidden(MemosError):
    status_code = 403
    error_type = "forbidden"


class NotFound(MemosError):
    status_code = 404
    error_type = "not_found"


class Conflict(MemosError):
    status_code = 409
    error_type = "conflict"


class PayloadTooLarge(MemosError):
    status_code = 413
    error_type = "payload_too_large"


class BackendUnavailable(MemosError):
    status_code = 503
    error_type = "backend_unavailable"


#: wire ``type`` → class, used by the client to raise the same classes as the library.
ERROR_TYPES: dict[str, type[MemosError]] = {
    cls.error_type: cls
    for cls in (MemosError, InvalidInput, Unauthorized, Forbidden, NotFound, Conflict,
                PayloadTooLarge, BackendUnavailable)
}
