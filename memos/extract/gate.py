"""Faithfulness gate: is an extracted fact supported by the text it cites?

:func:`check` compares a fact with its cited source span and runs independent, explainable
checks; a fact is *supported* only when every check passes:

1. **words** — at least ``min_support`` of the fact's content words (stemmed, stopwords
   removed) occur in the source. Names that the extractor substituted for pronouns ("Ana"
   for "I") and the resolved date phrase are excused: the source cannot spell them out.
2. **numbers** — every number in the fact occurs in the source ("32" vs "thirty-two" match).
3. **names** — every capitalised name in the fact occurs in the source, or is who said it:
   the speaker of the cited message (and, for a ``user`` message, the cube's user name)
   supports statements about themselves — Ana's "My dog Pixel loves the canal" supports
   "Ana's dog Pixel loves the canal", but not a statement about Ben.
4. **negation** — the fact is negated exactly when the source is.
5. **modality** — a hypothetical, wish or question in the source cannot support a plain
   statement ("If I were a pilot" does not support "Ana is a pilot").
6. **time** — a resolved date needs a temporal expression in the source, and, when the
   observation time is known, must equal what that expression resolves to
   (:func:`memos.temporal.resolve_relative_time`).
7. **similarity** (only with an embedder) — cosine(fact, source) ≥ ``min_similarity``.

``score`` in [0, 1] is the evidence strength (word support, averaged with the embedding
similarity when there is one); it is 0 when a hard check failed. Unsupported facts are
stored ``quarantined`` with ``reasons`` as the status reason: never searchable, visible.

>>> check("Ana moved to Berlin.", "I moved to Berlin.", aliases=["Ana"]).supported
True
>>> check("Ana's dog is Pixel.", "My dog is Pixel.", speakers=["Ana"]).supported
True
>>> check("Ben's dog is Pixel.", "My dog is Pixel.", speakers=["Ana"]).supported
False
>>> v = check("Ana moved to Madrid.", "I moved to Berlin.", aliases=["Ana"])
>>> v.supported, "name 'Madrid' not in source" in v.reasons
(False, True)
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from memos.embed import Embedder
from memos.extract.clauses import HYPOTHETICAL
from memos.extract.fact import ExtractedFact
from memos.extract.text import content_tokens, has_negation, is_past, numbers_in, stem, words
from memos.temporal import TIME_EXPR, resolve_relative_time

__all__ = ["GateVerdict", "check", "MIN_SUPPORT", "MIN_SIMILARITY"]

#: Share of the fact's content words that must occur in the source. 0.8 lets one novel word
#: in five through (a paraphrased verb) but not a swapped noun in a short fact.
MIN_SUPPORT = 0.8
#: Cosine floor for all-MiniLM-L6-v2; faithful restatements of a clause score 0.6–0.95,
#: unrelated sentences 0–0.3.
MIN_SIMILARITY = 0.45

_NOT_LIKE = re.compile(r"(?:n't|\bnot)\s+(?:really\s+|particularly\s+)?(?:like|enjoy)\b",
                       re.IGNORECASE)
_DISLIKE = re.compile(r"\bdislik(?:e|es|ed|ing)\b", re.IGNORECASE)
_FUNCTION_CAPS = {"i", "the", "a", "an", "on", "in", "at", "of", "and", "with", "to", "for",
                  "from", "by", "my", "his", "her", "their", "our"}
_ROLE_WORDS = {"assistant", "user"}


@dataclass(frozen=True)
class GateVerdict:
    supported: bool
    score: float
    reasons: list[str] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)


def _names(text: str) -> list[str]:
    """Capitalised words that are not sentence-initial function words."""
    out = []
    for i, w in enumerate(words(text)):
        bare = w[:-2] if w.endswith("'s") else w
        if bare[:1].isupper() and not (i == 0 and bare.lower() in _FUNCTION_CAPS) \
                and bare.lower() not in _FUNCTION_CAPS:
            out.append(bare)
    return out


def _strip_time(text: str, time_text: str) -> str:
    if time_text and time_text in text:
        return text.replace(time_text, " ")
    return text


def check(fact: ExtractedFact | str, source_text: str, *, embedder: Embedder | None = None,
          aliases: Iterable[str] = (), speakers: Iterable[str] = (),
          min_support: float = MIN_SUPPORT,
          min_similarity: float = MIN_SIMILARITY) -> GateVerdict:
    """Check ``fact`` against ``source_text`` (its cited span); see the module doc.

    ``aliases`` adds names that may appear in the fact without appearing in the source
    (an :class:`ExtractedFact` already brings its ``resolved_names``); ``speakers`` are the
    names of who said the source (its speaker; for a user message also the cube's user
    name), which a fact about them may use in place of "I"/"my".
    """
    aliases = [*aliases, *(s for s in speakers if s and s.strip())]
    if isinstance(fact, ExtractedFact):
        text = _strip_time(fact.text, fact.time_text)
        excused_names = set(fact.resolved_names) | set(aliases)
        time_text, observed = fact.time_text, fact.observed_at
        valid_from = fact.valid_from
    else:
        text, excused_names = fact, set(aliases)
        time_text, observed, valid_from = "", None, None
    excused = {stem(t) for name in excused_names for t in content_tokens(name)}
    excused |= _ROLE_WORDS
    failures: list[str] = []
    checks: dict[str, bool] = {}

    src_tokens = set(content_tokens(source_text))
    if _NOT_LIKE.search(source_text):
        src_tokens.add(stem("dislike"))  # "I don't like X" supports "dislikes X"
    fact_tokens = [t for t in content_tokens(text) if t not in excused]
    missing = [t for t in fact_tokens if t not in src_tokens]
    support = 1.0 - len(missing) / len(fact_tokens) if fact_tokens else 0.0
    checks["words"] = bool(fact_tokens) and support >= min_support
    if not fact_tokens:
        failures.append("fact has no content words")
    elif not checks["words"]:
        failures.append(f"only {support:.0%} of the fact's words are in the source "
                        f"(missing: {', '.join(sorted(set(missing)))})")

    src_numbers = numbers_in(source_text)
    bad_numbers = sorted(numbers_in(text) - src_numbers)
    checks["numbers"] = not bad_numbers
    failures.extend(f"number {n} not in source" for n in bad_numbers)

    src_low = source_text.lower()
    excused_low = {n.lower() for name in excused_names for n in words(name)}
    bad_names = []
    for name in _names(text):
        low = name.lower()
        if low in excused_low or low in _ROLE_WORDS or re.search(
                r"\b" + re.escape(low) + r"\b", src_low):
            continue
        bad_names.append(name)
    checks["names"] = not bad_names
    failures.extend(f"name {n!r} not in source" for n in dict.fromkeys(bad_names))

    # "dislikes" carries the polarity that "don't like" spells with a negation
    fact_neg = has_negation(text) or bool(_DISLIKE.search(text))
    src_neg = has_negation(source_text) or bool(_DISLIKE.search(source_text))
    checks["negation"] = fact_neg == src_neg
    if not checks["negation"]:
        failures.append("negation mismatch: the fact is " + ("negated" if fact_neg else
                        "affirmative") + " but the source is " + ("negated" if src_neg else
                                                                   "affirmative"))

    hypothetical = HYPOTHETICAL.search(source_text)
    question = source_text.strip().endswith("?")
    checks["modality"] = not ((hypothetical and not HYPOTHETICAL.search(text)) or question)
    if hypothetical and not HYPOTHETICAL.search(text):
        failures.append(f"source is hypothetical/irrealis ({hypothetical.group(0)!r}) but the "
                        "fact is stated as real")
    if question:
        failures.append("source is a question")

    checks["time"] = True
    if time_text:
        expr = TIME_EXPR.search(source_text)
        if expr is None:
            checks["time"] = False
            failures.append(f"date {time_text!r} has no time expression in the source")
        elif observed is not None and valid_from is not None:
            resolved = resolve_relative_time(expr.group(0), observed,
                                             past=is_past(source_text))
            if resolved is not None and resolved[0].date() != valid_from.date():
                checks["time"] = False
                failures.append(f"{expr.group(0)!r} resolves to {resolved[2]!r}, not "
                                f"{time_text!r}")

    similarity = None
    if embedder is not None:
        vecs = np.asarray(embedder.embed([text, source_text]), dtype=np.float32)
        similarity = float(vecs[0] @ vecs[1])
        checks["similarity"] = similarity >= min_similarity
        if not checks["similarity"]:
            failures.append(f"embedding similarity {similarity:.2f} < {min_similarity}")

    evidence = support if similarity is None else (support + max(0.0, similarity)) / 2
    supported = not failures
    score = round(float(evidence if supported else 0.0), 4)
    if supported:
        detail = f"word support {support:.2f}"
        if similarity is not None:
            detail += f", similarity {similarity:.2f}"
        reasons = [f"supported: all checks passed ({detail})"]
    else:
        reasons = failures
    return GateVerdict(supported=supported, score=score, reasons=reasons, checks=checks)
