"""What extraction takes and gives: conversation turns in, atomic facts with provenance out.

An :class:`Extractor` turns :class:`ExtractInput` turns into :class:`ExtractedFact` facts.
Every fact names its source turn (``source_message_id``) and a character span into that
turn's content, ``(start, end)`` with ``end`` exclusive, so that the faithfulness gate
(:mod:`memos.extract.gate`) can check the fact against exactly the words it came from. A
fact is typed with one of HaluMem's three memory types (:data:`PERSONA`, :data:`EVENT`,
:data:`RELATIONSHIP`) and keyed by ``(subject, attribute)``, the key the updater
(:mod:`memos.extract.update`) uses to find "the same thing" among known facts.

>>> fact = ExtractedFact(text="Ana moved to Berlin.", subject="Ana", attribute="city",
...                      value="Berlin", memory_type=PERSONA, source_message_id="m1",
...                      span=(0, 18), extractor="rules", extractor_version="rules/1")
>>> fact.extractor_id, fact.metadata()["span"]
('rules@rules/1', [0, 18])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

__all__ = [
    "MemoryType",
    "PERSONA",
    "EVENT",
    "RELATIONSHIP",
    "ExtractInput",
    "ExtractedFact",
    "Extractor",
]

MemoryType = Literal["Persona Memory", "Event Memory", "Relationship Memory"]
PERSONA: MemoryType = "Persona Memory"
EVENT: MemoryType = "Event Memory"
RELATIONSHIP: MemoryType = "Relationship Memory"


@dataclass(frozen=True)
class ExtractInput:
    """One conversation turn as the extractor sees it."""

    id: str
    role: str  # "user" | "assistant" | "system" | "tool"
    speaker: str | None
    content: str
    timestamp: datetime | None = None


@dataclass(frozen=True)
class ExtractedFact:
    """One atomic memory with its provenance.

    ``span`` is ``(start, end)`` (end exclusive) into the content of ``source_message_id``.
    ``time_text`` is the part of ``text`` that the extractor added when it resolved a
    relative date ("in the week of 2023-05-01"); the gate checks it against the source's
    temporal expression instead of against the words. ``resolved_names`` are the names the
    extractor substituted for pronouns ("Ana" for "I"), which the source never spells out.
    """

    text: str
    subject: str
    attribute: str
    value: str
    memory_type: MemoryType
    source_message_id: str
    span: tuple[int, int]
    negated: bool = False
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    observed_at: datetime | None = None
    time_text: str = ""
    resolved_names: tuple[str, ...] = ()
    extractor: str = "rules"
    extractor_version: str = ""
    confidence: float = 1.0
    #: The user message that confirmed this fact, when it was stated by someone else (the
    #: assistant said "You moved to Berlin", the user answered "Yes, …").
    confirmed_by: str | None = None

    def metadata(self) -> dict[str, Any]:
        """JSON-safe dict for the memory unit's ``metadata`` column."""
        out = asdict(self)
        out["span"] = list(self.span)
        out["resolved_names"] = list(self.resolved_names)
        for key in ("valid_from", "valid_to", "observed_at"):
            value = out[key]
            out[key] = value.isoformat() if value is not None else None
        return out

    @property
    def extractor_id(self) -> str:
        """``name@version``, the string to store as the unit's ``extractor``."""
        return f"{self.extractor}@{self.extractor_version}" if self.extractor_version \
            else self.extractor


class Extractor(Protocol):
    """Turns conversation turns into atomic facts."""

    name: str
    version: str

    def extract(self, messages: Sequence[ExtractInput], *,
                session_time: datetime | None = None) -> list[ExtractedFact]:
        """Facts stated in ``messages``; ``session_time`` dates turns without a timestamp."""
        ...
