"""How well the retrieved memory covers a query: a calibrated ``coverage`` in [0, 1].

:func:`query_coverage` turns retrieval signals into one number, the estimated share of the
memory points a question's answer rests on that the hits hold (0 = nothing relevant was
found, 1 = all of it), so a caller can tell "the answer is in memory" from "memory has
nothing on this" before it answers. The signals (:func:`signals`) are lexical, over the
query's content words (stemmed, stopwords out, see :class:`memos.lexical.Analyzer`; the
calendar dates it names are left out — "as of Sep 06, 2025" says when, not what, and a
memory of that day rarely repeats its date; a word that most of the hits share, the cube's
user name say, tells nothing about this query and is left out when at least
:data:`MIN_HITS_FOR_COMMON` hits came back):

- ``lexical_best``: the share of them in the best of the top :data:`TOP_HITS` hits;
- ``lexical_top3``: the share in the top three together;
- ``answer_best``: the share in the best of the top :data:`TOP_HITS` hits *that can answer*:
  it says something the query does not (a content word beyond the query's own) and holds
  what the query asks for (:func:`answer_type`: a date for "when", a number for "how
  many", a name for "who", a place for "where"; :func:`carries`); a query word that a
  paraphrase of :data:`EXPANSIONS` stands for counts as held ("how old" by "turned 43").

The hits' scores are not used: router scores are not comparable across queries, and on the
development users the best dense cosine did not predict evidence coverage (Spearman ≈ 0;
README, "Honest answers").

A logistic model maps the signals to the coverage (:data:`CALIBRATION`). Its weights were
fitted with ``memos eval halumem-calibrate`` on the two HaluMem development users (3 and
12) against the offline judge's evidence coverage of each question (the share of its
evidence points the judge scores fully covered by the hits; 0 for a question whose answer
is not in the dialogues), checked leave-one-user-out and on the synthetic set. The signals
are properties of the query and the hits, not of one extractor, so the model carries over
to other extractors as far as the hits do; it is an approximation and is documented as one.

>>> query_coverage("Where does Ana work?", [])
0.0
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from memos.lexical import Analyzer
from memos.temporal import TIME_EXPR, without_periods

__all__ = ["Calibration", "CALIBRATION", "TOP_HITS", "MIN_HITS_FOR_COMMON", "COMMON_SHARE",
           "signals", "query_coverage", "FEATURES", "ANSWER_TYPES", "answer_type", "carries",
           "EXPANSIONS", "question_parts"]

#: What a question asks for, by its wording (:func:`answer_type`): a date, a number, a
#: person's name, a place, a yes or no, or anything else ("open").
ANSWER_TYPES = ("date", "number", "name", "place", "yes_no", "open")
_ASKS = [(kind, re.compile(p, re.IGNORECASE)) for kind, p in [
    ("date", r"^\W*when\b|\b(?:what|which) (?:(?:is|was) the (?:exact |specific )?)?"
             r"(?:date|day|year|month|time)\b|"
             r"\bin (?:what|which) year\b|\bbirth ?(?:date|day)\b|\bdate of birth\b"),
    ("number", r"\bhow (?:many|much|old|long|far|often)\b|\bwhat (?:is|was|are|were) (?:the )?"
               r"(?:[\w'’]+ ){0,3}(?:income|salary|age|number|amount|price|cost|budget|"
               r"weight|height|score|rent|rank|ranking)\b"),
    ("name", r"^\W*(?:who|whom|whose)\b|\bwhat (?:is|was) (?:the )?name\b|"
             r"\bwhat is the name of\b"),
    ("place", r"^\W*where\b|\b(?:which|what) (?:city|country|town|state|place|"
              r"neighbou?rhood)\b"),
    ("yes_no", r"^\W*(?:is|are|was|were|do|does|did|has|have|had|can|could|will|would|"
               r"should)\b"),
]]
_DATE_IN = re.compile(r"\b\d{4}-\d{2}-\d{2}\b|\b(?:1[89]|20)\d{2}\b|" + TIME_EXPR.pattern,
                      re.IGNORECASE)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|"
                     r"eleven|twelve|twenty|thirty|forty|fifty|hundred|thousand|million|"
                     r"once|twice|dozen)\b", re.IGNORECASE)
_CAPITALISED = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-z]+|^[A-Z][a-z]+")
_NOT_NAMES = frozenset("""I The A An This That These Those It He She They We You My Her His
Their Our Your Its And But Or So Yes No Not Mr Mrs Ms Dr Monday Tuesday Wednesday Thursday
Friday Saturday Sunday January February March April May June July August September October
November December""".split())


#: Query expansion for common personal-fact questions: a pattern of the question → words a
#: memory answering it tends to use instead ("do for a living" is answered by "works as").
#: A small hand-written table of everyday paraphrases, shared with the offline answerer;
#: it was written alongside the synthetic HaluMem generator, so the synthetic set is no
#: independent check of it (README, "Honest answers").
EXPANSIONS: list[tuple[re.Pattern[str], tuple[str, ...]]] = [
    (re.compile(p, re.IGNORECASE), tuple(ws.split())) for p, ws in [
        (r"for a living|\bjob\b|profession|occupation|career|works? as", "work job profession"),
        (r"\bcity\b|\blives?\b|\bliving in\b|where .* based", "live move based relocated"),
        (r"company|employer|works? (?:for|at)", "work join employer company"),
        (r"\bcar\b|\bdrives?\b", "drive car bought"),
        (r"allergic|allergy|must .* avoid|should .* avoid", "allergic allergy"),
        (r"instrument", "play"),
        (r"language", "speak learning language"),
        (r"\bstudy|school|university|college|graduat", "studied study graduated school"),
        (r"how old|\bage\b|years old", "old age turned"),
        (r"birth ?(?:date|day)|date of birth|\bborn\b", "born birth"),
        (r"\bdish\b|\bfood\b|\bcook\b|\beat\b|restaurant", "food favorite love eat"),
        (r"activity|hobby|weekend|free time", "enjoy love hobby taken"),
        (r"married|partner|wife|husband", "married partner wife husband"),
    ]]


def answer_type(question: str) -> str:
    """What ``question`` asks for: one of :data:`ANSWER_TYPES` (first match wins).

    >>> answer_type("When did Ana move to Oslo?"), answer_type("Did Ana move?")
    ('date', 'yes_no')
    """
    for kind, pattern in _ASKS:
        if pattern.search(question):
            return kind
    return "open"


def carries(kind: str, text: str, question: str = "") -> bool:
    """Whether ``text`` holds an answer of ``kind`` beyond what ``question`` already names
    (a date, a number, a capitalised name); yes/no and open questions accept any text.

    >>> carries("number", "Ana earns 4,200 a month.", "How much does Ana earn?")
    True
    >>> carries("name", "Ana's sister is a nurse.", "Who is Ana's sister?")
    False
    """
    if kind == "date":
        asked = {m.group(0).lower() for m in _DATE_IN.finditer(question)}
        return any(m.group(0).strip() and m.group(0).lower() not in asked
                   for m in _DATE_IN.finditer(text))
    if kind == "number":
        asked = {m.group(0).lower() for m in _NUMBER.finditer(question)}
        return any(m.group(0).lower() not in asked for m in _NUMBER.finditer(text))
    if kind in ("name", "place"):
        asked = {w.lower() for w in re.findall(r"[A-Za-z]+", question)}
        return any(w not in _NOT_NAMES and w.lower() not in asked
                   for w in _CAPITALISED.findall(text))
    return True

#: The hits whose words count for ``lexical_best``.
TOP_HITS = 5
#: With at least this many hits, a word in :data:`COMMON_SHARE` of them is left out.
MIN_HITS_FOR_COMMON = 5
COMMON_SHARE = 0.6
#: Signal names, in the order the calibration's weights use them.
FEATURES = ("answer_best",)


@dataclass(frozen=True)
class Calibration:
    """Logistic weights: coverage = σ(intercept + Σ weight · signal) over :data:`FEATURES`."""

    weights: tuple[float, ...]  # intercept, then one weight per FEATURES
    source: str


#: Fitted by ``memos eval halumem-calibrate`` on the traces of HaluMem users 3 and 12
#: (``memos eval halumem --trace``, rules extractor, offline judge; README, "Honest answers").
CALIBRATION = Calibration(weights=(-1.0813, 2.425),
                          source="halumem-calibrate on HaluMem dev users 3 and 12")


@functools.lru_cache(maxsize=1)
def _analyzer() -> Analyzer:
    return Analyzer()


def signals(query: str, texts: Sequence[str]) -> dict[str, float]:
    """The retrieval signals of ``query`` against hit ``texts`` (best first)."""
    analyzer = _analyzer()
    docs = [set(analyzer.tokens(t)) for t in texts]
    common: set[str] = set()
    if len(docs) >= MIN_HITS_FOR_COMMON:
        counts = Counter(tok for d in docs for tok in d)
        common = {t for t, n in counts.items() if n >= COMMON_SHARE * len(docs)}
    want = _wanted(query, common)
    out = {"lexical_best": 0.0, "lexical_top3": 0.0, "answer_best": 0.0}
    if want and docs:
        out["lexical_best"] = max(len(want & d) for d in docs[:TOP_HITS]) / len(want)
        out["lexical_top3"] = len(want & set().union(*docs[:3])) / len(want)
        # a two-part question ("X, and in which city …?") is answered part by part, so
        # each part's best answering hit counts for that part
        parts = question_parts(query)
        out["answer_best"] = sum(_answer_best(part, want if len(parts) == 1 else
                                              _wanted(part, common), docs, texts)
                                 for part in parts) / len(parts)
    return out


def _wanted(query: str, common: set[str]) -> set[str]:
    """The words a hit should hold for ``query``: its tokens, less the calendar dates it
    names (a day or month says when, not what: a hit need not repeat it) and less the
    ``common`` words most hits share (unless nothing else is left)."""
    analyzer = _analyzer()
    own = set(analyzer.tokens(without_periods(query))) or set(analyzer.tokens(query))
    return (own - common) or own


def _answer_best(query: str, want: set[str], docs: Sequence[set[str]],
                 texts: Sequence[str]) -> float:
    """``answer_best`` of one question (part): the share of ``want`` in the best of the top
    hits *that can answer* — one saying something the query does not (a word beyond the
    query's own) and holding what it asks for (a date for "when", …); a query word a
    paraphrase stands for counts as held ("how old" by "turned 43")."""
    if not want:
        return 0.0
    asked = set(_analyzer().tokens(query))
    kind = answer_type(query)
    expansions = _expansions(query)
    return max((len(want & (d | {t for trig, alts in expansions if alts & d for t in trig}))
                / len(want) for d, text in zip(docs[:TOP_HITS], texts, strict=False)
                if d - asked and carries(kind, text, query)), default=0.0)


_PART_BREAK = re.compile(r",?\s+and\s+(?=(?:in |at |on )?(?:what|which|who|where|when|how)\b)")


def question_parts(question: str) -> list[str]:
    """A two-part question's parts ("What is the name of Ana's brother, and in which city
    does Ana live?" → two questions); any other question is its one part.

    >>> question_parts("Who is Ana's boss, and where does she work?")
    ["Who is Ana's boss", 'where does she work?']
    """
    return [p for p in _PART_BREAK.split(question) if p.strip()] or [question]


def _expansions(query: str) -> list[tuple[set[str], set[str]]]:
    """(the query's tokens a pattern of :data:`EXPANSIONS` matched, the tokens of the words
    standing for them) for each pattern the query matches."""
    analyzer = _analyzer()
    out = []
    for pattern, words in EXPANSIONS:
        trig = {t for m in pattern.finditer(query) for t in analyzer.tokens(m.group(0))}
        if trig:
            out.append((trig, {t for w in words for t in analyzer.tokens(w)}))
    return out


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def query_coverage(query: str, texts: Sequence[str], *,
                   calibration: Calibration = CALIBRATION) -> float:
    """The calibrated coverage of ``query`` by hit ``texts`` (best first); no hits: 0."""
    if not texts:
        return 0.0
    sig = signals(query, texts)
    w = calibration.weights
    z = w[0] + sum(wi * sig[n] for n, wi in zip(FEATURES, w[1:], strict=True))
    return round(_sigmoid(z), 4)
