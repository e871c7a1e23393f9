"""The error responses routes declare in the OpenAPI schema, with the one error body.

Every status a route can answer is in the schema (the fuzz run in ``.ci/fuzz.py`` checks
it): ``ERRORS`` lists the statuses any ``/v1`` route can give, with the body
:func:`api.main.create_app`'s handlers write (``{"error": {"type", "message", "details"}}``,
as :meth:`memos.errors.MemosError.to_dict`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    type: str = Field(description="The error class: invalid_input, unauthorized, forbidden, "
                      "not_found, conflict, payload_too_large, backend_unavailable, "
                      "method_not_allowed, internal_error.")
    message: str = Field(description="What is wrong, naming the field, limit or id.")
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorResponse(BaseModel):
    error: ErrorDetail


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


#: What any authenticated ``/v1`` route may answer besides its success.
ERRORS: dict[int | str, dict[str, Any]] = {
    401: _error("No API key, or an unknown one (only when the server has keys)."),
    403: _error("Refused whatever the key: a server with no API keys answers only clients "
                "on its own machine; /metrics needs an admin key (MEMOS_ADMIN_KEYS), and an "
                "admin key opens no cube."),
    404: _error("Unknown cube (another tenant's cube is unknown too), memory or job."),
    409: _error("A conflict with what is stored: the id exists, a version was superseded, "
                "the cube's vectors come from another embedding model, a model-memory "
                "payload is stale or built for another model."),
    413: _error("Over a limit: the body's bytes (MEMOS_MAX_BODY_BYTES), a text's length, a "
                "count; the message names the limit and its setting."),
    422: _error("The request does not match the schema, or a value is invalid (the "
                "message names the field)."),
    503: _error("The database, index or model cannot be reached or loaded."),
}

#: ``/healthz``: no authentication; unhealthy is 503.
HEALTH_ERRORS: dict[int | str, dict[str, Any]] = {
    403: ERRORS[403], 413: ERRORS[413],
    503: _error("The database does not answer or the index is not loaded."),
}
