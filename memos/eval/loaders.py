"""Readers for conversation files (LoCoMo) into memos messages.

LoCoMo's annotator-written fields (``observation``, ``session_summary``,
``event_summary``) are never read: only ``conversation`` is.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

_SESSION_KEY = re.compile(r"^session_(\d+)$")


def parse_locomo_time(value: str | None) -> datetime | None:
    """``"1:56 pm on 8 May, 2023"`` → an aware UTC datetime (None when unparseable)."""
    if not value:
        return None
    for fmt in ("%I:%M %p on %d %B, %Y", "%I:%M %p on %d %b, %Y"):
        try:
            return datetime.strptime(value.strip(), fmt).replace(tzinfo=timezone.utc)
        except ValueError:
            continue
    return None


def locomo_turn_text(turn: dict[str, Any]) -> str:
    """The turn's text; a shared photo's caption is appended, as the speaker meant it."""
    text = str(turn.get("text") or "").strip()
    caption = turn.get("blip_caption")
    if caption:
        text = f"{text} [shares a photo: {caption}]".strip()
    return text


def locomo_sessions(sample: dict[str, Any]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """``(session_id, messages)`` for each session of one LoCoMo conversation, in order.

    Message ids are ``<sample_id>:<dia_id>`` so evidence labels map back to messages.
    """
    conversation = sample["conversation"]
    sample_id = str(sample.get("sample_id", "conv"))
    numbers = sorted(int(m.group(1)) for key in conversation
                     if (m := _SESSION_KEY.match(key)))
    for n in numbers:
        when = parse_locomo_time(conversation.get(f"session_{n}_date_time"))
        messages = []
        for turn in conversation[f"session_{n}"]:
            text = locomo_turn_text(turn)
            if not text:
                continue
            messages.append({"id": f"{sample_id}:{turn['dia_id']}", "role": "user",
                             "speaker": turn.get("speaker"), "content": text,
                             "timestamp": when.isoformat() if when else None})
        if messages:
            yield f"{sample_id}:session_{n}", messages
