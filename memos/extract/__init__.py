"""Memory extraction: atomic, speaker-attributed facts from conversation turns, gated and
resolved against what is already known.

One batch of turns goes extract → gate → update (:func:`ingest_plan`, pure; the caller
stores):

- :mod:`~memos.extract.fact` — what goes in and out: :class:`ExtractInput` turns,
  :class:`ExtractedFact` facts with their source span, the :class:`Extractor` protocol.
- :mod:`~memos.extract.rules` — :class:`RulesExtractor`, the offline default.
- :mod:`~memos.extract.llm` — :class:`LLMExtractor`, any litellm model, each fact citing
  its turn and a verbatim quote; the prompt is versioned (:data:`EXTRACT_PROMPT_VERSION`).
- :mod:`~memos.extract.gate` — :func:`check`, is a fact supported by the span it cites?
- :mod:`~memos.extract.update` — ADD / UPDATE / DELETE / NOOP against the active facts
  (:class:`RulesUpdater`, :class:`LLMUpdater`).
- :mod:`~memos.extract.text` and :mod:`~memos.extract.clauses` — the word and clause
  helpers they share (also used by the offline HaluMem judge).

Dates said in a turn ("last week") are resolved by :mod:`memos.temporal`, the one date
module; model calls go through :mod:`memos.llm`.

>>> from datetime import datetime
>>> msg = ExtractInput(id="m1", role="user", speaker="Ana", content="I moved to Berlin.",
...                    timestamp=datetime(2023, 5, 8))
>>> [f.text for f in RulesExtractor().extract([msg])]
['Ana moved to Berlin.']
>>> [p.status for p in ingest_plan([msg], [], extractor=RulesExtractor())]
['active']
"""

from memos.extract.clauses import HYPOTHETICAL
from memos.extract.fact import (
    EVENT,
    PERSONA,
    RELATIONSHIP,
    ExtractedFact,
    ExtractInput,
    Extractor,
    MemoryType,
)
from memos.extract.gate import MIN_SIMILARITY, MIN_SUPPORT, GateVerdict, check
from memos.extract.llm import EXTRACT_PROMPT, EXTRACT_PROMPT_VERSION, LLMExtractor
from memos.extract.rules import RulesExtractor
from memos.extract.text import content_tokens, has_negation, is_past, numbers_in, stem, words
from memos.extract.update import (
    SINGLE_VALUED,
    UPDATE_PROMPT,
    UPDATE_PROMPT_VERSION,
    Action,
    ActiveFact,
    Decision,
    LLMUpdater,
    PlannedFact,
    RulesUpdater,
    Updater,
    candidates_for,
    ingest_plan,
    plan,
)

__all__ = [
    # what extraction takes and gives
    "ExtractInput",
    "ExtractedFact",
    "Extractor",
    "MemoryType",
    "PERSONA",
    "EVENT",
    "RELATIONSHIP",
    # extractors
    "RulesExtractor",
    "LLMExtractor",
    "EXTRACT_PROMPT",
    "EXTRACT_PROMPT_VERSION",
    # the faithfulness gate
    "GateVerdict",
    "check",
    "MIN_SUPPORT",
    "MIN_SIMILARITY",
    # update resolution
    "Action",
    "ActiveFact",
    "Decision",
    "Updater",
    "RulesUpdater",
    "LLMUpdater",
    "SINGLE_VALUED",
    "UPDATE_PROMPT",
    "UPDATE_PROMPT_VERSION",
    "PlannedFact",
    "candidates_for",
    "plan",
    "ingest_plan",
    # text helpers
    "words",
    "stem",
    "content_tokens",
    "numbers_in",
    "has_negation",
    "is_past",
    "HYPOTHETICAL",
]
