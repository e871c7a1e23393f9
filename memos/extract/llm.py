"""The LLM extractor: facts by any litellm model, each citing its turn and a verbatim quote.

:class:`LLMExtractor` sends the turns as JSON lines (id, role, speaker, timestamp, content)
under :data:`EXTRACT_PROMPT` and reads back ``{"facts": [...]}`` through
:func:`memos.llm.ask_json`. A fact is kept only when its ``source_id`` names one of the
turns and its ``quote`` is found in that turn's content (exactly, else ignoring case; else
a valid ``span``): its span is then where the quote is, so the gate checks it against the
words the model cited. Everything else is dropped and said why in
:attr:`LLMExtractor.rejected`. :data:`EXTRACT_PROMPT_VERSION` hashes the prompt and is
recorded on every fact, so facts from another prompt can be told apart.

>>> import json
>>> reply = json.dumps({"facts": [{"text": "Ana moved to Berlin.", "subject": "Ana",
...     "attribute": "city", "value": "Berlin", "memory_type": "Persona Memory",
...     "source_id": "m1", "quote": "I moved to Berlin"}]})
>>> ex = LLMExtractor("gpt-4o-mini", completion=lambda **kw: reply)
>>> [(f.text, f.span) for f in ex.extract([ExtractInput("m1", "user", "Ana",
...                                                     "I moved to Berlin.")])]
[('Ana moved to Berlin.', (0, 17))]
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from memos.extract.fact import EVENT, PERSONA, RELATIONSHIP, ExtractedFact, ExtractInput
from memos.llm import CompletionFn, ask_json

__all__ = ["LLMExtractor", "EXTRACT_PROMPT", "EXTRACT_PROMPT_VERSION"]

EXTRACT_PROMPT = """You extract long-term memory points about the user from a conversation
(HaluMem's memory-extraction task). A memory point is one atomic statement worth
remembering about the user, of one of three types:
- "Persona Memory": who the user is and what they like: identity, background, job, health,
  traits, values, preferences and dislikes, habits, goals;
- "Event Memory": something that happened to or was done or planned by the user, with
  when it happened;
- "Relationship Memory": a person in the user's life, how they relate to the user, and
  what the user thinks or does with them.
Return JSON: {"facts": [{"text": str, "subject": str, "attribute": str, "value": str,
"memory_type": "Persona Memory" | "Event Memory" | "Relationship Memory",
"negated": bool, "source_id": str, "quote": str, "valid_from": "YYYY-MM-DD" | null,
"valid_to": "YYYY-MM-DD" | null, "confidence": float}]}.
Rules:
- Write each point in the third person about the user by name, never "I", "my" or "the
  user" ("I moved to Berlin" said by Ana -> "Ana moved to Berlin"; "my sister" -> "Ana's
  sister"). Keep names, numbers, amounts, places and dates exactly.
- One fact per point; a long turn that states several things gives several points. A
  feeling or reason the user gives is part of the point ("Ana is proud of her promotion
  although it scares her").
- Take points from what the user says. Take a point from an assistant turn only when the
  user confirms it in the conversation.
- "attribute" is a short snake_case key (job, employer, city, pet, hobby, partner, sibling,
  food, car, school, age, health, ...); "value" is the attribute's value.
- "source_id" is the id of the turn that states the fact; "quote" is the exact substring of
  that turn's content that supports it (copy it verbatim).
- Resolve relative dates ("last week") against the turn's timestamp into valid_from /
  valid_to.
- A changed value ("I got promoted to senior director") is a new point with the new value;
  a retraction ("I no longer work at X", "I quit X") is a point with negated=true.
- Do NOT extract greetings, questions, small talk, hypotheticals ("if I were", "imagine"),
  wishes, the assistant's suggestions, or claims reported from other people.
- If nothing qualifies, return {"facts": []}.
"""
EXTRACT_PROMPT_VERSION = "llm-extract/2+" + hashlib.sha256(EXTRACT_PROMPT.encode()).hexdigest()[:8]

_MEMORY_TYPES = {"persona memory": PERSONA, "event memory": EVENT,
                 "relationship memory": RELATIONSHIP, "persona": PERSONA, "event": EVENT,
                 "relationship": RELATIONSHIP}


def _parse_date(value: Any) -> datetime | None:
    if not value or not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.strip()[:19])
    except ValueError:
        return None


@dataclass
class LLMExtractor:
    """Extraction by any litellm model; every fact must cite a turn id and a verbatim quote.

    Facts whose ``source_id`` is unknown or whose quote cannot be found in that turn are
    dropped (and counted in :attr:`rejected`): a fact without a locatable source cannot be
    gated. ``completion`` defaults to :func:`memos.llm.litellm_completion`;
    ``completion_kwargs`` pass through (``mock_response=…`` in tests, ``api_base``,
    ``temperature``…).
    """

    model: str
    completion_kwargs: dict[str, Any] = field(default_factory=dict)
    completion: CompletionFn | None = None
    name: str = "llm"
    version: str = EXTRACT_PROMPT_VERSION
    rejected: list[str] = field(default_factory=list)

    def extract(self, messages: Sequence[ExtractInput], *,
                session_time: datetime | None = None) -> list[ExtractedFact]:
        if not messages:
            return []
        by_id = {m.id: m for m in messages}
        lines = []
        for m in messages:
            when = (m.timestamp or session_time)
            lines.append(json.dumps({"id": m.id, "role": m.role, "speaker": m.speaker,
                                     "timestamp": when.isoformat() if when else None,
                                     "content": m.content}, ensure_ascii=False))
        payload = ask_json(self.completion, model=self.model, system=EXTRACT_PROMPT,
                           user="Conversation turns (JSON lines):\n" + "\n".join(lines),
                           options=self.completion_kwargs)
        if payload is None or not isinstance(payload.get("facts"), list):
            self.rejected.append("unparseable response")
            return []
        out = []
        for item in payload["facts"]:
            fact = self._fact(item, by_id)
            if fact is not None:
                out.append(fact)
        return out

    def _fact(self, item: Any, by_id: dict[str, ExtractInput]) -> ExtractedFact | None:
        if not isinstance(item, dict) or not str(item.get("text", "")).strip():
            self.rejected.append(f"malformed item: {item!r:.80}")
            return None
        source_id = str(item.get("source_id") or (item.get("source_ids") or [""])[0])
        msg = by_id.get(source_id)
        if msg is None:
            self.rejected.append(f"unknown source id {source_id!r}")
            return None
        quote = str(item.get("quote") or "").strip()
        start = msg.content.find(quote) if quote else -1
        if start < 0 and quote:
            start = msg.content.lower().find(quote.lower())
        if start < 0:
            span = item.get("span")
            if isinstance(span, list) and len(span) == 2 and all(isinstance(x, int)
                                                                 for x in span) \
                    and 0 <= span[0] < span[1] <= len(msg.content):
                start, end = span
            else:
                self.rejected.append(f"quote not found in {source_id}: {quote!r:.60}")
                return None
        else:
            end = start + len(quote)
        mtype = _MEMORY_TYPES.get(str(item.get("memory_type", "")).lower().strip(), PERSONA)
        try:
            confidence = min(1.0, max(0.0, float(item.get("confidence", 0.8))))
        except (TypeError, ValueError):
            confidence = 0.8
        subject = str(item.get("subject") or msg.speaker or "the user")
        return ExtractedFact(
            text=str(item["text"]).strip(), subject=subject,
            attribute=re.sub(r"\W+", "_", str(item.get("attribute") or "fact").lower()),
            value=str(item.get("value") or ""), memory_type=mtype,
            source_message_id=msg.id, span=(start, end), negated=bool(item.get("negated")),
            valid_from=_parse_date(item.get("valid_from")),
            valid_to=_parse_date(item.get("valid_to")), observed_at=msg.timestamp,
            resolved_names=tuple(n for n in {subject.split("'")[0], msg.speaker or ""}
                                 if n and n.lower() not in msg.content.lower()),
            extractor=f"{self.name}:{self.model}", extractor_version=self.version,
            confidence=confidence)
