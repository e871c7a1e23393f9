"""Request limits, in one place: every path that takes user data (ingest, memories, import,
search, context, chat, cube metadata) checks it against one :class:`Limits`.

Each limit is a setting (``MEMOS_<NAME>``, described in :class:`memos.config.Settings`),
and a request over one is refused before any work with an error that names the size, the
limit and the setting::

    >>> try:
    ...     Limits(max_text_chars=10).check_text("message content", "x" * 12)
    ... except PayloadTooLarge as err:
    ...     print(err.message)
    message content is 12 characters; the limit is 10 (MEMOS_MAX_TEXT_CHARS)

Sizes and counts over a limit are ``PayloadTooLarge`` (413); values that can never be valid
(a span outside its message) are ``InvalidInput`` (422). The request body's size in bytes is
enforced while it is read, before parsing, by the API (:mod:`api.middleware`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from memos.config import Settings
from memos.errors import InvalidInput, PayloadTooLarge
from memos.types import (
    ChatRequest,
    CubeCreate,
    CubeExport,
    Granularity,
    MemoryCreate,
    MemoryUpdate,
    MessagesIngest,
)

__all__ = ["Limits", "check_span"]


def _default(name: str) -> Any:
    return Settings.model_fields[name].default


@dataclass(frozen=True)
class Limits:
    """The limits one deployment applies; the defaults are the settings' defaults, where
    each field is described."""

    max_body_bytes: int = _default("max_body_bytes")
    max_import_bytes: int = _default("max_import_bytes")
    max_text_chars: int = _default("max_text_chars")
    max_query_chars: int = _default("max_query_chars")
    max_messages_per_request: int = _default("max_messages_per_request")
    max_request_chars: int = _default("max_request_chars")
    max_tags: int = _default("max_tags")
    max_tag_chars: int = _default("max_tag_chars")
    max_metadata_bytes: int = _default("max_metadata_bytes")

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})

    @staticmethod
    def setting(name: str) -> str:
        """The environment variable of limit ``name``: ``MEMOS_MAX_TEXT_CHARS``."""
        return f"MEMOS_{name.upper()}"

    def _refuse(self, what: str, size: int, unit: str, name: str) -> PayloadTooLarge:
        limit = getattr(self, name)
        return PayloadTooLarge(
            f"{what} is {size:,} {unit}; the limit is {limit:,} ({self.setting(name)})",
            details={"field": what, "size": size, "limit": limit,
                     "setting": self.setting(name)})

    def _at_most(self, what: str, size: int, unit: str, name: str) -> None:
        if size > getattr(self, name):
            raise self._refuse(what, size, unit, name)

    # ----------------------------------------------------------------- single fields
    def check_text(self, what: str, text: str | None) -> None:
        if text is not None:
            self._at_most(what, len(text), "characters", "max_text_chars")

    def check_query(self, query: str | None) -> None:
        if query is not None:
            self._at_most("query", len(query), "characters", "max_query_chars")

    def check_tags(self, what: str, tags: Iterable[str] | None) -> None:
        if tags is None:
            return
        tags = list(tags)
        self._at_most(f"{what} tags", len(tags), "tags", "max_tags")
        for tag in tags:
            self._at_most(f"{what} tag", len(tag), "characters", "max_tag_chars")

    def check_metadata(self, what: str, metadata: Mapping[str, Any] | None) -> None:
        if metadata:
            size = len(json.dumps(metadata, separators=(",", ":"),
                                  ensure_ascii=False).encode())
            self._at_most(f"{what} metadata", size, "bytes as JSON", "max_metadata_bytes")

    # ----------------------------------------------------------------- whole requests
    def check_cube(self, body: CubeCreate) -> None:
        self.check_metadata("cube", body.metadata)

    def check_ingest(self, body: MessagesIngest) -> None:
        """Counts first, so a request far over a limit is refused without a full scan."""
        self._at_most("the request", len(body.messages), "messages",
                      "max_messages_per_request")
        for message in body.messages:
            self.check_text("message content", message.content)
        total = sum(len(m.content) for m in body.messages)
        self._at_most("the request's message content", total, "characters",
                      "max_request_chars")

    def check_memory(self, body: MemoryCreate | MemoryUpdate) -> None:
        self.check_text("memory text", body.text)
        self.check_tags("memory", body.tags)
        self.check_metadata("memory", body.metadata)

    def check_chat(self, body: ChatRequest) -> None:
        for message in body.messages:
            self.check_text("chat message content", message.content)

    def check_import(self, data: CubeExport) -> None:
        """The ingest and memory limits, per message and per unit (an import is bounded as
        a whole by ``max_import_bytes``); spans must lie inside what they cite."""
        self.check_metadata("cube", data.cube.metadata)
        lengths = {}
        for message in data.messages:
            self.check_text(f"message {message.id} content", message.content)
            lengths[message.id] = len(message.content)
        for unit in data.units:
            self.check_text(f"unit {unit.id} text", unit.text)
            self.check_tags(f"unit {unit.id}", unit.tags)
            self.check_metadata(f"unit {unit.id}", unit.metadata)
            for span in unit.spans:
                # Spans index into the cited message; a session unit exported before
                # migration 0007 gave offsets into its transcript (import rewrites them).
                length = (len(unit.text or "") if unit.granularity is Granularity.session
                          else lengths.get(span.message_id))
                if length is not None:
                    check_span(span.message_id, span.start, span.end, length=length)


def check_span(message_id: str, start: int, end: int, *, length: int) -> None:
    """``0 <= start <= end <= length`` or ``InvalidInput`` naming the message."""
    if not 0 <= start <= end <= length:
        raise InvalidInput(f"span [{start}, {end}) is outside message {message_id!r} "
                           f"({length:,} characters)",
                           details={"message_id": message_id, "start": start, "end": end,
                                    "length": length})
