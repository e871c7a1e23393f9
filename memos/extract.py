"""Memory extraction: atomic, speaker-attributed facts from conversation turns.

Two extractors share one :class:`Extractor` protocol:

- :class:`RulesExtractor` (offline default): splits each user turn into sentences and
  clauses, drops greetings, questions, chit-chat, hypotheticals and reported speech,
  resolves first/second person to names ("I moved to Berlin" said by Ana → "Ana moved to
  Berlin"; "my sister" → "Ana's sister"), resolves relative dates against the message
  timestamp ("last week" on 2023-05-08 → the week of 2023-05-01) and types each fact as
  Persona / Event / Relationship memory with a normalised ``attribute`` key, so the updater
  can find "the same subject and attribute".
- :class:`LLMExtractor`: any litellm model, JSON output in which each fact cites its source
  turn id and a quote/span; the prompt is a versioned constant recorded on every fact.

Every :class:`ExtractedFact` carries its source message id and a character span into that
message's content; :mod:`memos.gate` checks the fact against exactly that span.

>>> from datetime import datetime
>>> msg = ExtractInput(id="m1", role="user", speaker="Ana", content="I moved to Berlin.",
...                    timestamp=datetime(2023, 5, 8))
>>> [f.text for f in RulesExtractor().extract([msg])]
['Ana moved to Berlin.']
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime, time, timedelta
from typing import Any, Literal, Protocol

__all__ = [
    "ExtractInput",
    "ExtractedFact",
    "Extractor",
    "RulesExtractor",
    "LLMExtractor",
    "MemoryType",
    "EXTRACT_PROMPT",
    "EXTRACT_PROMPT_VERSION",
    "content_tokens",
    "resolve_relative_time",
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


# --------------------------------------------------------------------------- tokens
_WORD = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?")
STOPWORDS = frozenset("""
a an the and or but of to in on at for from with by as into onto about over under after
before during since until than then so too very is are was were be been being am do does
did doing have has had having i me my mine myself we us our ours you your yours he him his
she her hers they them their theirs it its this that these those there here who whom whose
which what when where why how all any some each every both few more most other such own
same just also only really now still already currently recently actually finally s t ll
ve re d m will would can could shall should may might must up out off again further once
very lot lots much many quite pretty kind sort get got gets getting go goes going went
make made thing things one ones well oh yeah yes ok okay so like
""".split())
NEGATION_CUES = frozenset("""not no never none nobody nothing neither nor n't cannot without
isn't aren't wasn't weren't don't doesn't didn't won't wouldn't can't couldn't shouldn't
haven't hasn't hadn't longer""".split())

_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100,
}


def stem(word: str) -> str:
    """A deliberately light suffix stripper: 'loves'/'loved'/'loving' → 'lov'."""
    w = word.lower()
    if w.endswith("'s"):
        w = w[:-2]
    for suffix in ("ies", "ing", "ed", "es", "s", "e"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            w = w[: -len(suffix)] + ("i" if suffix == "ies" else "")
            break
    return w[:-1] + "i" if w.endswith("y") and len(w) > 3 else w


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def content_tokens(text: str) -> list[str]:
    """Stemmed, lower-cased tokens of ``text`` minus stopwords and negation cues."""
    out = []
    for w in words(text):
        lw = w.lower()
        if lw.endswith("'s"):
            lw = lw[:-2]
        if lw in STOPWORDS or lw in NEGATION_CUES or "'" in lw:
            continue
        out.append(stem(lw))
    return out


def numbers_in(text: str) -> set[str]:
    """Numbers written as digits or (small) number words, normalised to digit strings."""
    found = set(re.findall(r"\d+(?:\.\d+)?", text))
    for w in words(text):
        if w.lower() in _NUMBER_WORDS:
            found.add(str(_NUMBER_WORDS[w.lower()]))
    return found


def has_negation(text: str) -> bool:
    low = text.lower()
    if re.search(r"n't\b|\bno longer\b|\bnot\b|\bnever\b|\bnone\b|\bnobody\b|\bnothing\b"
                 r"|\bneither\b|\bnor\b|\bcannot\b|\bno\b", low):
        return True
    return False


# --------------------------------------------------------------------------- dates
_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august",
           "september", "october", "november", "december"]
_MONTH_RE = "|".join(_MONTHS)
_WEEKDAY_RE = "|".join(_WEEKDAYS)
_NUM_RE = r"\d+|" + "|".join(k for k in _NUMBER_WORDS if k not in ("zero", "hundred"))
TIME_EXPR = re.compile(
    r"\b(?:(?:the\s+)?day\s+before\s+yesterday|yesterday|today|tonight|this\s+morning|"
    r"this\s+afternoon|this\s+evening|tomorrow|(?:last|this|next)\s+(?:week|month|year|"
    r"weekend|" + _WEEKDAY_RE + r")|(?:on\s+)?(?:" + _WEEKDAY_RE + r")|(?:" + _NUM_RE +
    r"|a|an)\s+(?:day|week|month|year)s?\s+ago|(?:in|on|last|this|next)?\s*(?:" + _MONTH_RE +
    r")(?:\s+\d{1,2}(?:st|nd|rd|th)?)?(?:,?\s+\d{4})?|in\s+\d{4})\b",
    re.IGNORECASE)


def _day(d: date) -> datetime:
    return datetime.combine(d, time.min)


def _span_days(start: date, days: int) -> tuple[datetime, datetime]:
    return _day(start), _day(start + timedelta(days=days)) - timedelta(microseconds=1)


def _month_start(d: date, months: int) -> date:
    """The first day of the month ``months`` after (or, negative, before) ``d``'s month."""
    years, month0 = divmod(d.month - 1 + months, 12)
    return date(d.year + years, month0 + 1, 1)


def resolve_relative_time(expr: str, ref: datetime, *, past: bool = True
                          ) -> tuple[datetime, datetime, str] | None:
    """Resolve a time expression against ``ref`` → ``(valid_from, valid_to, phrase)``.

    ``past`` says whether the clause is in the past tense (it decides whether a bare
    weekday means the last or the next one). ``phrase`` is how the fact text states it.

    >>> resolve_relative_time("last week", datetime(2023, 5, 8))[2]
    'in the week of 2023-05-01'
    >>> resolve_relative_time("yesterday", datetime(2023, 5, 8))[2]
    'on 2023-05-07'
    """
    e = re.sub(r"\s+", " ", expr.strip().lower())
    today = ref.date()

    def day(d: date) -> tuple[datetime, datetime, str]:
        a, b = _span_days(d, 1)
        return a, b, f"on {d.isoformat()}"

    def week(d: date) -> tuple[datetime, datetime, str]:
        monday = d - timedelta(days=d.weekday())
        a, b = _span_days(monday, 7)
        return a, b, f"in the week of {monday.isoformat()}"

    def month(d: date) -> tuple[datetime, datetime, str]:
        first = d.replace(day=1)
        a = _day(first)
        b = _day(_month_start(first, 1)) - timedelta(microseconds=1)
        return a, b, f"in {first.strftime('%B %Y')}"

    def year(y: int) -> tuple[datetime, datetime, str]:
        return datetime(y, 1, 1), datetime(y + 1, 1, 1) - timedelta(microseconds=1), f"in {y}"

    if e in ("yesterday",):
        return day(today - timedelta(days=1))
    if e in ("the day before yesterday", "day before yesterday"):
        return day(today - timedelta(days=2))
    if e in ("today", "tonight", "this morning", "this afternoon", "this evening"):
        return day(today)
    if e == "tomorrow":
        return day(today + timedelta(days=1))
    m = re.fullmatch(r"(last|this|next) (week|weekend|month|year)", e)
    if m:
        shift = {"last": -1, "this": 0, "next": 1}[m.group(1)]
        unit = m.group(2)
        if unit == "week":
            return week(today + timedelta(weeks=shift))
        if unit == "weekend":
            saturday = today - timedelta(days=today.weekday()) + timedelta(days=5 + 7 * shift)
            a, b = _span_days(saturday, 2)
            return a, b, f"on the weekend of {saturday.isoformat()}"
        if unit == "month":
            return month(_month_start(today, shift))
        return year(today.year + shift)
    m = re.fullmatch(r"(?:(last|this|next|on) )?(" + _WEEKDAY_RE + ")", e)
    if m:
        target = _WEEKDAYS.index(m.group(2))
        mode = m.group(1) or "on"
        if mode == "last" or (mode == "on" and past):
            delta = (today.weekday() - target) % 7 or 7
            return day(today - timedelta(days=delta))
        if mode == "this":
            return day(today - timedelta(days=today.weekday()) + timedelta(days=target))
        delta = (target - today.weekday()) % 7 or 7
        return day(today + timedelta(days=delta))
    m = re.fullmatch(r"(" + _NUM_RE + r"|a|an) (day|week|month|year)s? ago", e)
    if m:
        raw = m.group(1)
        n = 1 if raw in ("a", "an") else int(raw) if raw.isdigit() else _NUMBER_WORDS[raw]
        unit = m.group(2)
        if unit == "day":
            return day(today - timedelta(days=n))
        if unit == "week":
            return week(today - timedelta(weeks=n))
        if unit == "month":
            return month(_month_start(today, -n))
        return year(today.year - n)
    m = re.fullmatch(r"in (\d{4})", e)
    if m:
        return year(int(m.group(1)))
    m = re.fullmatch(r"(?:(in|on|last|this|next) )?(" + _MONTH_RE +
                     r")(?: (\d{1,2})(?:st|nd|rd|th)?)?(?:,? (\d{4}))?", e)
    if m:
        mon = _MONTHS.index(m.group(2)) + 1
        if m.group(4):
            yr = int(m.group(4))
        elif m.group(1) == "next" or (not past and m.group(1) != "last"):
            yr = today.year if mon >= today.month else today.year + 1
        else:
            yr = today.year if mon <= today.month else today.year - 1
        if m.group(3):
            try:
                return day(date(yr, mon, int(m.group(3))))
            except ValueError:
                return None
        return month(date(yr, mon, 1))
    return None


# --------------------------------------------------------------------------- clause filters
_GREETING = re.compile(
    r"^(?:hi|hello|hey|hiya|good (?:morning|afternoon|evening|night)|thanks?|thank you|"
    r"bye|goodbye|see you|take care|cheers|lol|haha|hmm|ok|okay|sure|great|cool|nice|"
    r"awesome|wow|yes|yeah|no|nope|right|exactly|absolutely|of course|sounds good|"
    r"no worries|how are you|how's it going|what's up|have a (?:good|nice|great))\b",
    re.IGNORECASE)
_HYPOTHETICAL = re.compile(
    r"\b(?:if|imagine|imagining|suppose|supposing|hypothetically|pretend|what if|wish|"
    r"would|could|might|maybe|perhaps|someday|some day|one day|dream(?:ing)? (?:of|about)|"
    r"fantasi[sz]e|i'd|we'd|considering|thinking (?:about|of)|wondering|not sure|"
    r"in theory|let's say|say i|should i|i guess)\b",
    re.IGNORECASE)
_REPORTED = re.compile(
    r"\b(?:said|says|told me|tells me|thinks|thought|believes|believed|claims|claimed|"
    r"mentioned|suggested|suggests|recommended|heard|according to|insists|reckons)\b",
    re.IGNORECASE)
_ASSISTANT_BOILERPLATE = re.compile(
    r"\b(?:as an ai|language model|i'm happy to|i am happy to|i'd be happy|glad to help|"
    r"happy to help|let me know|feel free|i hope|i understand|i'm sorry|i am sorry|"
    r"great question|i can help|i recommend|i suggest|i'd suggest|here (?:is|are)|"
    r"that sounds|it sounds|you might|you could|you should|i'm here|i am here)\b",
    re.IGNORECASE)
_DISCOURSE = re.compile(
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
    r"i'll|my|we|we're|we've|our)\b)|;\s*|\s+-\s+|,\s+(?=(?:i|i'm|i've|my|we|our)\b)",
    re.IGNORECASE)

_RELATIONS = ("sister", "brother", "mother", "mom", "mum", "father", "dad", "wife",
              "husband", "partner", "boyfriend", "girlfriend", "fiance", "fiancee", "fiancé",
              "fiancée", "son", "daughter", "friend", "best friend", "colleague", "coworker",
              "co-worker", "boss", "roommate", "cousin", "aunt", "uncle", "grandmother",
              "grandma", "grandfather", "grandpa", "niece", "nephew", "neighbor",
              "neighbour", "manager", "mentor", "kid", "child", "parents", "twin")
_REL_RE = "|".join(sorted((re.escape(r) for r in _RELATIONS), key=len, reverse=True))
_SIBLING = {"sister", "brother", "twin"}
_PARTNER = {"wife", "husband", "partner", "boyfriend", "girlfriend", "fiance", "fiancee",
            "fiancé", "fiancée"}
_PARENT = {"mother", "mom", "mum", "father", "dad", "parents"}
_CHILD = {"son", "daughter", "kid", "child"}
_PETS = ("dog", "cat", "puppy", "kitten", "parrot", "hamster", "rabbit", "bunny", "turtle",
         "fish", "goldfish", "horse", "guinea pig", "lizard", "snake", "bird", "ferret")
_PET_RE = "|".join(_PETS)
_OCCUPATIONS = set("""
nurse doctor teacher engineer developer programmer designer lawyer accountant chef cook
pilot architect pharmacist dentist scientist researcher professor lecturer writer author
journalist editor photographer artist musician painter carpenter electrician plumber
mechanic firefighter officer police policeman policewoman paramedic therapist
psychologist consultant analyst manager marketer salesperson cashier barista waiter
waitress librarian veterinarian vet student farmer baker tailor translator interpreter
entrepreneur founder ceo cto freelancer actor actress dancer coach trainer surgeon
economist banker broker realtor agent driver clerk secretary assistant technician
biologist chemist physicist mathematician statistician historian archaeologist
geologist programmer tester administrator sysadmin officer soldier sailor
""".split())
_CAR_BRANDS = set("""toyota honda ford tesla bmw audi volkswagen vw mercedes subaru mazda
nissan hyundai kia volvo chevrolet chevy jeep porsche fiat renault peugeot skoda lexus
mini prius civic corolla""".split())
_SINGLE_VALUED = {"job", "employer", "city", "age", "name", "partner", "car", "school",
                  "hometown", "major"}

_ADVERBS = set("""just recently really also actually finally still usually often always
never absolutely totally currently now already sometimes mostly honestly truly
definitely only even officially no longer""".split())
_IRREGULAR_PAST = set("""went ran saw met took got bought made did had was were came
began became left brought caught drove ate fell felt found flew gave grew heard held
kept knew led lost meant paid put quit read rode said sang sat sent shot slept sold
spent spoke stood swam taught thought told threw understood woke won wore wrote
broke chose forgot hid hit hurt let set shut split spread stuck struck swept
tore""".split())
_MODALS = {"can", "could", "will", "would", "shall", "should", "may", "might", "must",
           "was", "had", "did", "used"}
_THIRD = {"am": "is", "'m": "is", "have": "has", "'ve": "has", "do": "does", "don't": "doesn't",
          "go": "goes", "were": "was", "are": "is", "'re": "is", "'ll": "will",
          "haven't": "hasn't", "aren't": "isn't", "weren't": "wasn't"}


def _third_person(verb: str) -> str:
    low = verb.lower()
    if low in _THIRD:
        return _THIRD[low]
    if low in _MODALS or low in _IRREGULAR_PAST or low.endswith("ed") or "'" in low:
        return verb
    if re.search(r"(?:s|sh|ch|x|z|o)$", low):
        return verb + "es"
    if re.search(r"[^aeiou]y$", low):
        return verb[:-1] + "ies"
    return verb + "s"


def _is_past(clause: str) -> bool:
    for w in words(clause.lower()):
        if w in _IRREGULAR_PAST or (w.endswith("ed") and len(w) > 4) or w in ("was", "were"):
            return True
    return False


def _clean(s: str) -> str:
    s = re.sub(r"\s+", " ", s).strip(" ,;:-")
    return re.sub(r"\s+([,.!?])", r"\1", s)


@dataclass
class _Clause:
    text: str
    start: int
    end: int


def _sentences(content: str) -> Iterator[_Clause]:
    for m in _SENTENCE.finditer(content):
        raw = m.group(0)
        lead = len(raw) - len(raw.lstrip())
        text = raw.strip()
        if text:
            yield _Clause(text, m.start() + lead, m.start() + lead + len(text))


def _clauses(sentence: _Clause) -> Iterator[_Clause]:
    pos = 0
    for m in _CLAUSE_SPLIT.finditer(sentence.text):
        piece = sentence.text[pos:m.start()]
        if piece.strip():
            lead = len(piece) - len(piece.lstrip())
            yield _Clause(piece.strip(), sentence.start + pos + lead,
                          sentence.start + pos + lead + len(piece.strip()))
        pos = m.end()
    piece = sentence.text[pos:]
    if piece.strip():
        lead = len(piece) - len(piece.lstrip())
        yield _Clause(piece.strip(), sentence.start + pos + lead,
                      sentence.start + pos + lead + len(piece.strip()))


# --------------------------------------------------------------------------- attribute rules
# Each rule: (regex over the lower-cased predicate after the subject, attribute, type, negated).
# The value is the named group ``v``; an attribute containing "{x}" is filled from group ``x``.
_V = r"(?P<v>[^,.;!?]+?)"
_END = (r"(?:\s+(?:now|fluently|too|again|lately|these days|a lot|as well|every day|"
        r"full[- ]time|part[- ]time|(?:for|since) (?:\w+ )?(?:years?|months?|weeks?|days?|"
        r"a while|ages|last year|childhood)|(?:when|since) i was [a-z ]+|by trade|"
        r"by profession|a while (?:back|ago)|some time ago|recently|"
        r"been doing it for [a-z ]+))*\s*(?:[,.;!?]|$)")
_RULES: list[tuple[re.Pattern[str], str, MemoryType | None, bool]] = [
    (re.compile(p, re.IGNORECASE), a, t, n) for p, a, t, n in [
        (r"^(?:no longer|don't|do not|doesn't|does not|am not|'m not|is not) work(?:s|ing)?"
         r" (?:at|for) " + _V + _END, "employer", PERSONA, True),
        (r"^(?:quit|left|resigned from|was fired from|got laid off from|got fired from)"
         r" (?:my |his |her |the )?(?:job |position )?(?:at |with )?" + _V + _END,
         "employer", PERSONA, True),
        (r"^(?:am|'m|is|'s|was) no longer (?:a |an )?" + _V + _END, "job", PERSONA, True),
        (r"^(?:no longer|don't|do not|doesn't) live(?:s)? in " + _V + _END,
         "city", PERSONA, True),
        (r"^(?:sold|gave away|got rid of) (?:my |his |her |our )?(?P<v>car|[^,.;!?]+ car)"
         + _END, "car", PERSONA, True),
        (r"^(?:broke up with|divorced|split up with|separated from) " + _V + _END,
         "partner", RELATIONSHIP, True),
        (r"^(?:stopped|gave up|quit|no longer (?:do|play|enjoy|practi[cs]e))"
         r" (?P<v>\w+ing(?: [^,.;!?]+?)?|[^,.;!?]+?)" + _END, "hobby", PERSONA, True),
        (r"^(?:don't|do not|doesn't|does not|never) (?:eat|eats|like|likes|enjoy|enjoys)"
         r" " + _V + _END, "food_dislike", PERSONA, False),
        (r"^(?:work|works|am working|'m working|is working|have been working|'ve been working"
         r"|has been working) as (?:a |an )?" + _V + r"(?: (?:at|for) (?P<emp>[^,.;!?]+?))?"
         + _END, "job", PERSONA, False),
        (r"^(?:got|landed|started|accepted|took) (?:a |my |her |his )?(?:new )?"
         r"(?:job|position|role) as (?:a |an )?" + _V + r"(?: (?:at|for|with) "
         r"(?P<emp>[^,.;!?]+?))?" + _END, "job", PERSONA, False),
        (r"^(?:(?:work|works|am working|'m working|is working|have been working|"
         r"'ve been working|has been working|started working|got a job|got a new job|"
         r"landed a job|accepted a job|accepted an offer|started a new job|started a job)"
         r" (?:at|for|with)|joined|switched to) " + _V + _END, "employer", PERSONA, False),
        (r"^(?:am|'m|is|'s|was|became|have become|'ve become) (?:now )?(?:a |an )"
         r"(?P<v>(?:[a-z-]+ ){0,2}(?:" + "|".join(sorted(_OCCUPATIONS)) + r"))"
         r"(?: (?:at|for) (?P<emp>[^,.;!?]+?))?" + _END, "job", PERSONA, False),
        (r"^(?:live|lives|am living|'m living|is living|reside|resides|am based|'m based|"
         r"is based|have lived|'ve lived|has lived|have been living|'ve been living|"
         r"has been living) in " + _V + _END, "city", PERSONA, False),
        (r"^(?:moved|relocated|have moved|'ve moved|has moved|am moving|'m moving|"
         r"is moving|just moved) to " + _V + _END, "city", PERSONA, False),
        (r"^(?:am|'m|is|'s) (?:originally )?from " + _V + _END, "hometown", PERSONA, False),
        (r"^(?:grew up|was born|was raised) in " + _V + _END, "hometown", PERSONA, False),
        (r"^(?:have|has|'ve got|got|adopted|rescued|bought) (?:a |an |two |three |"
         r"another |new |a new )*(?P<kind>" + _PET_RE + r")(?:s)? (?:named|called) " + _V +
         _END, "pet", PERSONA, False),
        (r"^(?:have|has|'ve got|got|adopted|rescued) (?:a |an |another |a new )*"
         r"(?P<v>" + _PET_RE + r")" + _END, "pet", PERSONA, False),
        (r"^(?:am|'m|is|'s|got|have been|'ve been|has been) (?:married to|engaged to|"
         r"dating|seeing|in a relationship with|together with) " + _V + _END,
         "partner", RELATIONSHIP, False),
        (r"^(?:have|has|'ve got) (?:a |an |two |three |one )?(?:younger |older |little |"
         r"big |twin |baby )?(?P<rel>sister|brother|son|daughter|twin)s? (?:named|called) "
         + _V + _END, "{rel}", RELATIONSHIP, False),
        (r"^(?:drive|drives|am driving|'m driving|bought|got|own|owns|leased) "
         r"(?:a |an |my |the )?(?:new |used |second-hand |brand new )?(?P<v>(?:[a-z0-9-]+ )"
         r"{0,2}(?:" + "|".join(sorted(_CAR_BRANDS)) + r")(?: [a-z0-9-]+){0,2}|"
         r"[a-z0-9- ]+ car)" + _END, "car", PERSONA, False),
        (r"^(?:study|studies|am studying|'m studying|is studying|major in|majoring in|"
         r"am majoring in|'m majoring in) " + _V + r" at (?P<school>[^,.;!?]+?)" + _END,
         "school", PERSONA, False),
        (r"^(?:go to|goes to|attend|attends|am attending|'m attending|study at|studies at|"
         r"am studying at|'m studying at|am enrolled at|'m enrolled at|enrolled at|"
         r"enrolled in|graduated from|got into|was accepted to|got accepted to|am a student at"
         r"|'m a student at) " + _V + _END, "school", PERSONA, False),
        (r"^(?:am|'m|is|'s|just turned|turned) (?P<v>\d{1,3}|[a-z]+ty(?:-[a-z]+)?)"
         r"(?: years old| years of age)?" + _END, "age", PERSONA, False),
        (r"^(?:am|'m|is) allergic to " + _V + _END, "allergy", PERSONA, False),
        (r"^(?:am|'m|is) (?:a )?(?P<v>vegetarian|vegan|pescatarian)" + _END,
         "diet", PERSONA, False),
        (r"^(?:speak|speaks|am learning|'m learning|is learning|learned|learnt) "
         r"(?P<v>(?:english|spanish|french|german|italian|portuguese|japanese|chinese|"
         r"mandarin|korean|russian|arabic|hindi|dutch|swedish|polish|turkish|greek)"
         r"(?: and [a-z]+)?)" + _END, "language", PERSONA, False),
        (r"^(?:play|plays|am learning|'m learning|started playing|learned to play) "
         r"(?:the )?(?P<v>guitar|piano|violin|drums|cello|flute|saxophone|trumpet|ukulele|"
         r"bass|harp|clarinet)" + _END, "instrument", PERSONA, False),
        (r"^(?:play|plays|started playing|took up|picked up|have taken up|'ve taken up|"
         r"has taken up|got into|am into|'m into|is into|love|loves|enjoy|enjoys|like|likes|"
         r"am obsessed with|'m obsessed with|is obsessed with|started|began) "
         r"(?P<v>(?:playing |doing )?(?:[a-z]+ing|tennis|soccer|football|basketball|chess|"
         r"yoga|pilates|golf|volleyball|baseball|badminton|karate|judo|pottery|photography|"
         r"gardening|hiking|knitting|painting|climbing|surfing|skiing|cycling|running|"
         r"swimming|boxing|crochet|origami|archery|fencing|rugby|cricket)"
         r"(?: [a-z]+){0,3}?)" + _END, "hobby", PERSONA, False),
        (r"^(?:love|loves|enjoy|enjoys|like|likes|adore|adores|am crazy about|'m crazy about"
         r"|can't get enough of|crave|craves) (?:eating |to eat |cooking )?(?P<v>[a-z ]*?"
         r"(?:food|cuisine|sushi|pizza|pasta|tacos|ramen|curry|noodles|burgers?|steak|"
         r"dumplings|pho|paella|chocolate|ice cream|cake|salad|barbecue|bbq|dim sum|kimchi|"
         r"falafel|hummus|cheese|seafood|tapas|biryani|pancakes|lasagna|risotto|"
         r"burritos|gnocchi|croissants|bagels|kebab|goulash|schnitzel|lobster))" + _END, "food",
         PERSONA, False),
    ]
]
_FAVORITE = re.compile(r"^(?:favou?rite|fave) (?P<thing>[a-z]+(?: [a-z]+)?) (?:is|are|was) "
                       + _V + _END, re.IGNORECASE)
_NAME = re.compile(r"^(?:name is|name's) (?P<v>[A-Z][a-z]+(?: [A-Z][a-z]+)?)" + _END)
_PERSONA_ATTRS = {"job", "employer", "city", "hometown", "pet", "hobby", "food", "car",
                  "school", "age", "allergy", "diet", "language", "instrument", "name",
                  "food_dislike"}


def _memory_type(attribute: str, past: bool, has_time: bool) -> MemoryType:
    if attribute in ("partner", "sibling", "parent", "child", "friend"):
        return RELATIONSHIP
    if attribute in _PERSONA_ATTRS or attribute.startswith("favorite_"):
        return PERSONA
    if past or has_time:
        return EVENT
    return PERSONA


_SUBJECT = re.compile(
    r"^(?:(?P<fp>i|we)\b(?P<contr>'m|'ve|'d|'ll|'re)?|(?:me and|my (?:" + _REL_RE +
    r") and i)\b|(?:my|our) (?P<rel>" + _REL_RE + r")(?:,? (?P<relname>(?-i:[A-Z][a-z]+)),?)?"
    r"(?=\s|'s)|(?P<own>my|our) (?=\w))", re.IGNORECASE)
_INTENT = re.compile(
    r"^(?:'d|would|could|should|might|may|want|wants|hope|hopes|plan to|need|needs|"
    r"have to|'ll|will|am going to|'m going to|guess|think|feel|wonder|was wondering|"
    r"don't know|do not know|wish)\b", re.IGNORECASE)


_AUXILIARIES = frozenset("""m ve re s d ll am is are have has been was were do does did not
n't don't didn't doesn't""".split())


def _strip_adverbs(predicate: str) -> str:
    toks = predicate.split(" ")
    i = 0
    while i < len(toks) and toks[i].lower() in _ADVERBS - {"no", "longer", "never"}:
        i += 1
    return " ".join(toks[i:])


class RulesExtractor:
    """Offline, deterministic extractor built from clause patterns (see the module doc).

    Only turns whose role is ``user`` yield facts by default: assistant turns restate,
    suggest and reassure, and a suggestion ("you could try pottery") is not a memory of the
    user. ``include_assistant=True`` also extracts non-boilerplate first-person statements
    of the assistant (subject: its speaker name or "the assistant").
    """

    name = "rules"
    version = "rules/1"

    def __init__(self, *, user_name: str | None = None, assistant_name: str | None = None,
                 include_assistant: bool = False) -> None:
        self.user_name = user_name
        self.assistant_name = assistant_name
        self.include_assistant = include_assistant

    # -- public
    def extract(self, messages: Sequence[ExtractInput], *,
                session_time: datetime | None = None) -> list[ExtractedFact]:
        facts: list[ExtractedFact] = []
        previous: list[ExtractInput] = []
        for msg in messages:
            if msg.role == "user" or (self.include_assistant and msg.role == "assistant"):
                facts.extend(self._extract_message(msg, session_time,
                                                   self._addressee(msg, previous)))
            previous.append(msg)
        return facts

    def _addressee(self, msg: ExtractInput, previous: Sequence[ExtractInput]) -> str | None:
        """Who "you" is: the latest earlier speaker other than this one (in a conversation
        between two people that is the other person; with an assistant, the assistant)."""
        for prior in reversed(previous):
            if (prior.speaker or prior.role) != (msg.speaker or msg.role):
                if prior.role == "assistant":
                    return self.assistant_name or (
                        prior.speaker if prior.speaker and prior.speaker != "assistant"
                        else None)
                return prior.speaker
        return None

    # -- internals
    def _names(self, msg: ExtractInput) -> tuple[str, str]:
        """(name for first person, name for second person) in this message."""
        user = self.user_name or "the user"
        assistant = self.assistant_name or "the assistant"
        if msg.role == "user":
            return (msg.speaker or user), assistant
        return (msg.speaker or assistant), user

    def _extract_message(self, msg: ExtractInput, session_time: datetime | None,
                         addressee: str | None = None) -> list[ExtractedFact]:
        me, you = self._names(msg)
        you = addressee or you
        ref = msg.timestamp or session_time
        out: list[ExtractedFact] = []
        for sentence in _sentences(msg.content):
            if self._skip_sentence(sentence.text, msg.role):
                continue
            for clause in _clauses(sentence):
                fact = self._clause_fact(clause, msg, me, you, ref)
                if fact is not None:
                    out.append(fact)
        return out

    @staticmethod
    def _skip_sentence(text: str, role: str) -> bool:
        t = text.strip()
        if t.endswith("?"):
            return True
        if role == "assistant" and _ASSISTANT_BOILERPLATE.search(t):
            return True
        if _HYPOTHETICAL.search(t):
            return True
        stripped = _DISCOURSE.sub("", t)
        if _GREETING.match(stripped) and len(content_tokens(stripped)) < 3:
            return True
        return False

    def _clause_fact(self, clause: _Clause, msg: ExtractInput, me: str, you: str,
                     ref: datetime | None) -> ExtractedFact | None:
        text = clause.text.rstrip(".!?").strip()
        if _GREETING.match(text) and len(content_tokens(text)) < 3:
            return None
        # A leading time expression ("Last week, I ran …") or discourse marker is lifted off.
        body = _DISCOURSE.sub("", text)
        time_match = TIME_EXPR.search(body)
        time_expr = time_match.group(0).strip() if time_match else ""
        if time_match and time_match.start() == 0:
            body = _DISCOURSE.sub("", body[time_match.end():].lstrip(" ,"))
        subj = _SUBJECT.match(body)
        if subj is None:
            return None
        predicate = body[subj.end():].strip()
        if subj.group("contr"):
            predicate = subj.group("contr") + " " + predicate
        if not content_tokens(predicate):
            return None
        if _REPORTED.search(predicate):
            return None  # someone else's claim, or the speaker quoting one
        if _INTENT.match(_strip_adverbs(predicate)) and not time_expr:
            return None  # wishes, intentions and opinions are not facts
        if time_expr and time_match and time_match.start() > 0:
            predicate = _clean(re.sub(re.escape(time_expr), "", predicate, count=1,
                                      flags=re.IGNORECASE))
        past = _is_past(predicate)
        relation = subj.group("rel")
        owned = subj.group("own")
        if relation:  # "my sister (Mia) lives in Paris": a fact about someone else
            rel = relation.lower()
            rel_name = subj.group("relname")
            subject = f"{me}'s {rel}" + (f" {rel_name}" if rel_name else "")
            attribute, value, negated, mtype = self._attribute(predicate)
            if rel_name and re.match(r"^(?:is|'s) (?:named|called)\b", predicate, re.I):
                subject, attribute, value = me, self._relation_attr(rel), rel_name
            elif not rel_name and re.match(r"^(?:is|'s) (?:named|called) (?-i:[A-Z])",
                                           predicate, re.I):
                subject, attribute = me, self._relation_attr(rel)
                value = _clean(re.sub(r"^(?:is|'s) (?:named|called) ", "", predicate))
            elif not rel_name and re.match(r"^(?:'s )?name is ", predicate, re.I):
                subject, attribute = me, self._relation_attr(rel)
                value = _clean(predicate.split("name is", 1)[1])
            resolved_body = self._resolve_pronouns(predicate, me, you)
            sentence = f"{me}'s {rel}" + (f" {rel_name}" if rel_name else "") + \
                f" {resolved_body}"
            mtype = RELATIONSHIP
        elif owned:  # "my favorite food is sushi", "my birthday is in June"
            attribute, value, negated, mtype = self._attribute(predicate)
            if attribute.startswith(("stmt:", "event:")):
                head = re.match(r"^(?:favou?rite |fave )?([a-z]+)", predicate, re.I)
                attribute = stem(head.group(1)) if head else attribute
                value = _clean(re.sub(r"^[\w ]*?\b(?:is|are|was|were)\b", "", predicate,
                                      count=1))
            subject = me
            sentence = f"{me}'s {self._resolve_pronouns(predicate, me, you)}"
        else:
            subject = me
            attribute, value, negated, mtype = self._attribute(_strip_adverbs(predicate))
            sentence = f"{me} {self._resolve_pronouns(self._conjugate(predicate), me, you)}"
        sentence = _clean(sentence)
        valid_from = valid_to = None
        time_text = ""
        if time_expr and ref is not None:
            resolved = resolve_relative_time(time_expr, ref, past=past)
            if resolved is not None:
                valid_from, valid_to, time_text = resolved
                sentence = f"{sentence} {time_text}"
        if valid_from is None and ref is not None and attribute in _SINGLE_VALUED | {"pet"}:
            valid_from = ref  # a state change is taken to hold from the moment it was said
        sentence = sentence[0].upper() + sentence[1:]
        if not sentence.endswith((".", "!")):
            sentence += "."
        if mtype is None:
            mtype = _memory_type(attribute, past, bool(time_text))
        clause_low = clause.text.lower()
        resolved_names = tuple(sorted(
            {me} - {n for n in (me,) if n.lower() in msg.content.lower()}
            | ({you} if re.search(r"\byour?s?\b", clause_low) else set())))
        generic = attribute.startswith(("stmt:", "event:"))
        return ExtractedFact(
            text=sentence, subject=subject, attribute=attribute, value=value,
            memory_type=mtype, source_message_id=msg.id, span=(clause.start, clause.end),
            negated=negated or (has_negation(predicate) and attribute != "food_dislike"),
            valid_from=valid_from, valid_to=valid_to, observed_at=msg.timestamp,
            time_text=time_text, resolved_names=resolved_names, extractor=self.name,
            extractor_version=self.version, confidence=0.8 if generic else 0.95)

    @staticmethod
    def _relation_attr(rel: str) -> str:
        if rel in _SIBLING:
            return "sibling"
        if rel in _PARTNER:
            return "partner"
        if rel in _PARENT:
            return "parent"
        if rel in _CHILD:
            return "child"
        return rel.replace(" ", "_")

    @staticmethod
    def _attribute(predicate: str) -> tuple[str, str, bool, MemoryType | None]:
        low = predicate.lower()
        fav = _FAVORITE.match(re.sub(r"^(?:'s|is)\s+", "", low))
        if fav:
            return f"favorite_{fav.group('thing').replace(' ', '_')}", _clean(fav.group("v")), \
                False, PERSONA
        name = _NAME.match(predicate)
        if name:
            return "name", name.group("v"), False, PERSONA
        for pattern, attribute, mtype, negated in _RULES:
            m = pattern.match(low)
            if m:
                groups = m.groupdict()
                value = _clean(groups.get("v") or "")
                if "{rel}" in attribute:
                    attribute = RulesExtractor._relation_attr(groups["rel"])
                if attribute == "pet" and groups.get("kind"):
                    value = f"{groups['kind']} {value}"
                if attribute == "school" and groups.get("school"):
                    value = _clean(groups["school"])
                if not value:
                    continue
                value = re.sub(r"^(?:a|an|the|my|our|his|her) ", "", value)
                value = re.sub(r"\s+(?:now|too|again|fluently|lately|these days)$", "", value)
                return attribute, value, negated, mtype
        # Generic fallback: the main verb names the attribute, the rest is the value.
        toks = [w.lower() for w in words(predicate)]
        toks = [t for t in toks if t not in _ADVERBS]
        verb = next((t for t in toks if t not in _AUXILIARIES), "be")
        rest = predicate.lower().split(verb, 1)[-1]
        value = _clean(rest)
        past = _is_past(predicate)
        prefix = "event" if past else "stmt"
        return f"{prefix}:{stem(verb)}", value, False, None

    @staticmethod
    def _conjugate(predicate: str) -> str:
        """Turn a first-person predicate into third person: "just love" → "just loves"."""
        toks = predicate.split(" ")
        for i, tok in enumerate(toks):
            bare = tok.lower().strip(",")
            if bare in _ADVERBS:
                continue
            if bare.startswith("'"):
                toks[i] = {"'m": "is", "'ve": "has", "'re": "is", "'ll": "will",
                           "'d": "had" if i + 1 < len(toks) and (
                               toks[i + 1].endswith("ed") or toks[i + 1] in _IRREGULAR_PAST)
                           else "would"}.get(bare, tok)
            else:
                toks[i] = _third_person(tok)
            break
        return " ".join(toks)

    @staticmethod
    def _resolve_pronouns(text: str, me: str, you: str) -> str:
        mapping = {"i": me, "me": me, "myself": me, "my": f"{me}'s", "mine": f"{me}'s",
                   "we": me, "us": me, "our": f"{me}'s", "ours": f"{me}'s",
                   "you": you, "your": f"{you}'s", "yours": f"{you}'s", "yourself": you,
                   "i'm": f"{me} is", "i've": f"{me} has", "i'll": f"{me} will"}

        def sub(m: re.Match[str]) -> str:
            return mapping[m.group(0).lower()]

        return re.sub(r"\b(?:i'm|i've|i'll|i|me|myself|my|mine|we|us|our|ours|you|your|"
                      r"yours|yourself)\b", sub, text, flags=re.IGNORECASE)


# --------------------------------------------------------------------------- LLM extractor
EXTRACT_PROMPT = """You extract long-term memories about the people in a conversation.
Return JSON: {"facts": [{"text": str, "subject": str, "attribute": str, "value": str,
"memory_type": "Persona Memory" | "Event Memory" | "Relationship Memory",
"negated": bool, "source_id": str, "quote": str, "valid_from": "YYYY-MM-DD" | null,
"valid_to": "YYYY-MM-DD" | null, "confidence": float}]}.
Rules:
- One atomic fact per item, in the third person with names instead of pronouns
  ("I moved to Berlin" said by Ana -> "Ana moved to Berlin"; "my sister" -> "Ana's sister").
- "attribute" is a short snake_case key (job, employer, city, pet, hobby, partner, sibling,
  food, car, school, age, ...); "value" is the attribute's value.
- "source_id" is the id of the turn that states the fact; "quote" is the exact substring of
  that turn's content that supports it (copy it verbatim).
- Resolve relative dates against the turn's timestamp into valid_from/valid_to.
- Do NOT extract greetings, questions, small talk, hypotheticals ("if I were", "imagine"),
  wishes, suggestions by the assistant, or claims reported from other people.
- A retraction ("I no longer work at X", "I quit X") is a fact with negated=true.
- If nothing qualifies, return {"facts": []}.
"""
EXTRACT_PROMPT_VERSION = "llm-extract/1+" + hashlib.sha256(EXTRACT_PROMPT.encode()).hexdigest()[:8]

_MEMORY_TYPES = {"persona memory": PERSONA, "event memory": EVENT,
                 "relationship memory": RELATIONSHIP, "persona": PERSONA, "event": EVENT,
                 "relationship": RELATIONSHIP}


def _litellm_completion(**kwargs: Any) -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    return litellm.completion(**kwargs)


def response_text(response: Any) -> str:
    """The assistant text of a litellm/OpenAI-style completion response."""
    try:
        return response.choices[0].message.content or ""
    except (AttributeError, IndexError, KeyError, TypeError):
        if isinstance(response, dict):
            return str(response["choices"][0]["message"]["content"] or "")
        return str(response)


def parse_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in ``text`` (fenced or bare), or None when there is none."""
    text = text.strip()
    fence = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    if fence:
        text = fence.group(1).strip()
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        start, end = text.find("{"), text.rfind("}")
        if start < 0 or end <= start:
            return None
        try:
            obj = json.loads(text[start:end + 1])
        except json.JSONDecodeError:
            return None
    return obj if isinstance(obj, dict) else None


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
    gated. ``completion`` defaults to ``litellm.completion``; ``completion_kwargs`` pass
    through (``mock_response=…`` in tests, ``api_base``, ``temperature``…).
    """

    model: str
    completion_kwargs: dict[str, Any] = field(default_factory=dict)
    completion: Callable[..., Any] | None = None
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
        call = self.completion or _litellm_completion
        response = call(model=self.model, messages=[
            {"role": "system", "content": EXTRACT_PROMPT},
            {"role": "user", "content": "Conversation turns (JSON lines):\n" + "\n".join(lines)},
        ], **self.completion_kwargs)
        payload = parse_json_object(response_text(response))
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


def with_source(fact: ExtractedFact, **changes: Any) -> ExtractedFact:
    """A copy of ``fact`` with ``changes`` (used to plant tampered facts in tests)."""
    return replace(fact, **changes)
