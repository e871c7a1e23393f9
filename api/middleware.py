"""Plain ASGI middleware around the app (plain ASGI rather than ``BaseHTTPMiddleware``,
which streams every response through an extra task and queue).

- :class:`BodyLimit`: a request body over its limit is refused with 413 while it is read,
  before anything parses it — by ``Content-Length`` up front, and by counting the bytes of
  a chunked body as they arrive.
- :class:`InternalErrorAsJson`: an unexpected exception becomes a JSON 500 that ends the
  response normally, so the keep-alive connection stays usable. (Starlette's own handler
  for ``Exception`` re-raises after responding, and the server then drops the connection.)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from memos.errors import PayloadTooLarge
from memos.limits import Limits

log = logging.getLogger("memos.api")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The one route whose body may be as large as ``max_import_bytes``.
IMPORT_PATH = "/v1/cubes/import"


async def send_json(send: Send, status: int, body: dict[str, Any],
                    headers: list[tuple[bytes, bytes]] | None = None) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
        *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


class BodyLimit:
    """Reads the whole body (it is parsed whole anyway), refusing it as soon as it passes
    the limit, then hands it to the app."""

    def __init__(self, app: ASGIApp, *, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        name = "max_import_bytes" if scope["path"] == IMPORT_PATH else "max_body_bytes"
        limit = getattr(self.limits, name)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(send, int(declared), name)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._refuse(send, size, name, at_least=True)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()  # http.disconnect, when it comes
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, size: int, name: str, *, at_least: bool = False) -> None:
        limit = getattr(self.limits, name)
        measured = f"more than {limit:,}" if at_least else f"{size:,}"
        err = PayloadTooLarge(
            f"the request body is {measured} bytes; the limit is {limit:,} "
            f"({Limits.setting(name)})",
            details={"field": "body", "limit": limit, "setting": Limits.setting(name)})
        # The unread rest of the body makes the connection unusable: say it will close.
        await send_json(send, err.status_code, err.to_dict(), [(b"connection", b"close")])


class InternalErrorAsJson:
    """The last resort: an exception no handler took becomes ``{"error": {"type":
    "internal_error", ...}}`` with status 500, logged with its traceback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:  # a streamed response already under way cannot change its status
                raise
            log.exception("unhandled error", exc_info=exc)
            await send_json(send, 500, {"error": {
                "type": "internal_error", "message": "internal server error",
                "details": {"exception": type(exc).__name__}}})
