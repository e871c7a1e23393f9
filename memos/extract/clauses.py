"""Sentences and clauses of a message, and the cues that keep a clause from stating a fact.

:func:`sentences` splits a message's content into sentences (abbreviations such as "Dr."
and decimals such as "2.5" do not end one) and :func:`clauses` splits a sentence at
coordinating conjunctions and semicolons that start a new first-person clause ("I moved
to Berlin and my sister lives in Paris" is two clauses). Every :class:`Clause` carries its
character span into the original content: ``content[start:end] == text``.

The cue patterns (:data:`GREETING`, :data:`HYPOTHETICAL`, :data:`REPORTED`,
:data:`ASSISTANT_BOILERPLATE`, :data:`DISCOURSE`) are case-insensitive regular expressions
shared by the rules extractor (to skip what states no fact), the faithfulness gate (a
hypothetical source supports no plain statement) and the offline HaluMem judge.

>>> content = "Hi! I moved to Berlin and my sister lives in Paris."
>>> [(c.text, content[c.start:c.end] == c.text)
...  for s in sentences(content) for c in clauses(s)]
[('Hi!', True), ('I moved to Berlin', True), ('my sister lives in Paris.', True)]
>>> bool(HYPOTHETICAL.search("If I were a pilot"))
True
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from memos.temporal import TIME_EXPR

__all__ = [
    "Clause",
    "sentences",
    "clauses",
    "GREETING",
    "HYPOTHETICAL",
    "REPORTED",
    "ASSISTANT_BOILERPLATE",
    "DISCOURSE",
]

#: A greeting, thanks, farewell or bare acknowledgement at the start of a sentence.
GREETING = re.compile(
    r"^(?:hi|hello|hey|hiya|good (?:morning|afternoon|evening|night)|thanks?|thank you|"
    r"bye|goodbye|see you|take care|cheers|lol|haha|hmm|ok|okay|sure|great|cool|nice|"
    r"awesome|wow|yes|yeah|no|nope|right|exactly|absolutely|of course|sounds good|"
    r"no worries|how are you|how's it going|what's up|have a (?:good|nice|great))\b",
    re.IGNORECASE)
#: Irrealis: a hypothetical, wish, plan, musing or hedge ("if", "would", "maybe", "I'd").
#: A sentence with one states no fact, and a source with one supports no plain statement.
HYPOTHETICAL = re.compile(
    r"\b(?:if|imagine|imagining|suppose|supposing|hypothetically|pretend|what if|wish|"
    r"would|could|might|maybe|perhaps|someday|some day|one day|dream(?:ing)? (?:of|about)|"
    r"fantasi[sz]e|i'd|we'd|considering|thinking (?:about|of)|wondering|not sure|"
    r"in theory|let's say|say i|should i|i guess)\b",
    re.IGNORECASE)
#: Reported speech or belief ("said", "told me", "thinks"): someone else's claim.
REPORTED = re.compile(
    r"\b(?:said|says|told me|tells me|thinks|thought|believes|believed|claims|claimed|"
    r"mentioned|suggested|suggests|recommended|heard|according to|insists|reckons)\b",
    re.IGNORECASE)
#: What an assistant says to be helpful ("let me know", "you could"), not about itself.
ASSISTANT_BOILERPLATE = re.compile(
    r"\b(?:as an ai|language model|i'm happy to|i am happy to|i'd be happy|glad to help|"
    r"happy to help|let me know|feel free|i hope|i understand|i'm sorry|i am sorry|"
    r"great question|i can help|i recommend|i suggest|i'd suggest|here (?:is|are)|"
    r"that sounds|it sounds|you might|you could|you should|i'm here|i am here)\b",
    re.IGNORECASE)
#: Leading discourse markers and framing ("well,", "guess what", "these days"), to lift
#: off before a sentence's subject.
DISCOURSE = re.compile(
    r"^(?:(?:well|so|oh|ah|yeah|yes|also|and|but|anyway|actually|honestly|btw|by the way|"
    r"guess what|fun fact|you know what|speaking of which|just so you know|oh and|"
    r"also,|plus|besides|funny enough|believe it or not|(?:big |good |some |great )?news:?|"
    r"these days|nowadays|lately|currently|at the moment|right now|on weekends|"
    r"in my free time|in my spare time|for work|back in the day|just so you know|"
    r"for the record|to be honest|fun fact)[,:!]?\s+)+",
    re.IGNORECASE)

_SENTENCE = re.compile(r"(?:\b(?:St|Dr|Mr|Mrs|Ms|Jr|Sr|Prof|Mt|vs|etc|e\.g|i\.e)\.|\d\.\d|"
                       r"[^.!?\n])+(?:[.!?]+|$)")
_CLAUSE_SPLIT = re.compile(
    r"(?:,\s*|\s+)(?:and|but|so|although|though|because|plus)\s+(?=(?:i|i'm|i've|i'd|"
    r"i'll|my)\b)|;\s*|\s+-\s+|,\s+(?=(?:i|i'm|i've|my)\b)",
    re.IGNORECASE)
#: A left piece that ends inside an open subordinate clause ("I believe that by doing so,",
#: "When I travel,"): the comma after it does not end a clause. ("we"/"our" never start a
#: new clause: "we" includes someone else, whom the clause before names.)
_OPEN_LEFT = re.compile(
    r"\b(?:that|if|when|whenever|while|as|because|since|although|though|after|before|once|"
    r"until|unless|whether|by|which|who)\b[^,]*$", re.IGNORECASE)


def _only_time(piece: str) -> bool:
    """A fronted time and nothing else ("Last week", "Yesterday", "On May 3, 2021"): it
    belongs to the clause after its comma."""
    stripped = DISCOURSE.sub("", piece.strip())
    m = TIME_EXPR.search(stripped)
    return m is not None and not stripped[:m.start()].strip(" ,") and not stripped[
        m.end():].strip(" ,")


@dataclass
class Clause:
    """A sentence or clause: its stripped ``text`` and its span (end exclusive) into the
    content it was split from."""

    text: str
    start: int
    end: int


def sentences(content: str) -> Iterator[Clause]:
    """The sentences of ``content``, in order, with their spans; blank ones are skipped."""
    for m in _SENTENCE.finditer(content):
        raw = m.group(0)
        lead = len(raw) - len(raw.lstrip())
        text = raw.strip()
        if text:
            yield Clause(text, m.start() + lead, m.start() + lead + len(text))


def clauses(sentence: Clause) -> Iterator[Clause]:
    """The clauses of ``sentence``, in order, with spans into the same content."""
    pos = 0
    for m in _CLAUSE_SPLIT.finditer(sentence.text):
        piece = sentence.text[pos:m.start()]
        if m.group(0).startswith(",") and m.group(0).strip() == "," and (
                _OPEN_LEFT.search(piece) or _only_time(piece)):
            continue  # the comma closes a fronted subordinate clause or time, not a statement
        if piece.strip():
            lead = len(piece) - len(piece.lstrip())
            yield Clause(piece.strip(), sentence.start + pos + lead,
                         sentence.start + pos + lead + len(piece.strip()))
        pos = m.end()
    piece = sentence.text[pos:]
    if piece.strip():
        lead = len(piece) - len(piece.lstrip())
        yield Clause(piece.strip(), sentence.start + pos + lead,
                     sentence.start + pos + lead + len(piece.strip()))
