"""HaluMem-style hallucination evaluation of a memos server, per memory operation.

``run_halumem`` reads HaluMem-format JSONL (see ``shared/HALUMEM.md``), drives a memos
server through a client (the SDK, or anything with the same methods), and measures:

- **extraction** — after each session is added, that session's active ``fact`` memories E
  are read back; each gold point is scored for *integrity* (2/1/0), each distractor for
  whether it was stored, each memory for *accuracy* against the dialogue (2/1/0) and
  whether it is about a gold field ("included"). recall = #{score 2}/|G|; weighted recall =
  Σ imp·score/2 / Σ imp; FMR = #{distractors scored 0}/|I|; target precision = mean acc/2
  over included; accuracy = mean acc/2 over E; F1 = 2PR/(P+R) (P target precision,
  R recall).
- **update** — for each point with ``is_update == "True"`` and original memories: search
  top-10 with its content, label correct / hallucination / omission / other.
- **QA** — each question: search top-20, answer briefly, label correct / hallucination /
  omission. The offline answerer abstains ("not in memory", an omission where the answer
  exists) when the search's ``coverage`` is below ``abstain_below``; *evidence coverage*
  is the share of the question's evidence points the judge finds in those hits.

- **stated in the dialogue** (``extraction.stated_in``, ``update.stated_in``) — the same
  judge's verdict on each point against the session's turns themselves, as if every turn
  were a memory: against its user turns (what an extractor that reads the user's words, and
  the assistant's only where the user confirms them, can be credited with) and against all
  turns. A reference for the figures above, not a bound a memory could not pass (a fact can
  join two turns or resolve a date); HaluMem states most of its interference points in
  assistant turns, so the share of distractors each side states is reported too.

Rates use all items as denominators; an unparseable LLM judgement counts as a failure.

Judges: ``"offline"`` is a deterministic approximation (weighted token coverage, numbers,
dates, names, negation, subject and modality checks, the faithfulness gate with an
optional embedder); its report says ``"judge": "offline (approximate)"``. Any other value
is a litellm model name used with HaluMem's rubric.

>>> # report = run_halumem("halumem.jsonl", client=MemosClient(...), json_path="out.json")
"""

from __future__ import annotations

import functools
import json
import math
import re
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from memos.embed import Embedder
from memos.errors import InvalidInput
from memos.extract import HYPOTHETICAL, check, content_tokens, has_negation, numbers_in, stem
from memos.llm import CompletionFn, ask, parse_json_object
from memos.retrieval.coverage import (
    EXPANSIONS,
    answer_type,
    carries,
    query_coverage,
    question_parts,
)
from memos.temporal import TIME_EXPR, query_periods, time_closeness

__all__ = [
    "run_halumem",
    "OfflineJudge",
    "LLMJudge",
    "Judge",
    "Retrieved",
    "offline_answer",
    "LLMAnswerer",
    "add_halumem_commands",
    "extraction_metrics",
    "load_jsonl",
    "print_report",
    "canon_dates",
    "key_tokens",
    "coverage",
    "Match",
    "make_judge",
    "make_answerer",
    "without_sources",
]

#: Set by the application to build a client from ``--base-url`` (or None: in-process).

UPDATE_LABELS = ("correct", "hallucination", "omission", "other")
QA_LABELS = ("correct", "hallucination", "omission")
UNKNOWN = "unknown"
#: What the offline answerer says when the hits' coverage is below the threshold.
NOT_IN_MEMORY = "not in memory"
#: The offline answerer abstains below this coverage: chosen on the dev users with
#: ``memos eval halumem-calibrate`` (leave-one-user-out; README, "Honest answers").
ABSTAIN_BELOW = 0.39
#: What each QA question's context is: ``"facts+turns"`` (default) the best
#: ``QA_TOP_K - QA_TURNS`` facts (hybrid search) then the best ``QA_TURNS`` dialogue turns
#: (router search) but those whose facts among the best facts hold ``QA_TURN_HELD`` of
#: their words (:func:`without_sources`), as an agent reading memory would get both;
#: ``"facts"`` the best ``QA_TOP_K`` facts only.
QA_SEARCHES = ("facts+turns", "facts")
QA_TOP_K = 20
QA_TURNS = 10
#: A turn whose facts in the context hold this share of its content words adds too little
#: to keep its slot (chosen on the dev users; README, "Evidence coverage").
QA_TURN_HELD = 0.7


@dataclass(frozen=True)
class Retrieved:
    """One search hit as the answerer and judges see it."""

    id: str
    text: str
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)


AnswerFn = Callable[[str, Sequence[Retrieved]], str]


# --------------------------------------------------------------------------- text analysis
_MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august",
           "september", "october", "november", "december"]
_MONTH_ABBR = {m[:3]: i + 1 for i, m in enumerate(_MONTHS)}
_DATE_LONG = re.compile(r"\b(" + "|".join(_MONTHS) + r"|" + "|".join(_MONTH_ABBR) +
                        r")\.?\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})\b", re.IGNORECASE)
_DATE_ISO = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_MONTH_YEAR = re.compile(r"\b(" + "|".join(_MONTHS) + r")\s+(\d{4})\b", re.IGNORECASE)

#: Words that carry little of a memory's identity: what makes "Ana works as a nurse" a
#: distinct memory is "nurse", not "works".
LIGHT = frozenset(stem(w) for w in """work works working worked live lives living lived
has have had enjoy enjoys enjoyed love loves loved like likes liked drive drives play plays
study studied go goes went move moved moving speak speaks learning named called name
favorite favourite food hobby person people year years old now new get got become became
based near really think want make day week month time thing things kind lot""".split())
_RELATION_WORDS = frozenset(stem(w) for w in """sister brother mother mom mum father dad wife
husband partner boyfriend girlfriend son daughter friend colleague coworker boss roommate
cousin aunt uncle neighbor neighbour manager mentor""".split())
#: A statement that declines to give the fact ("unknown", "not provided", "the memories do
#: not mention it", "no record of that"): an abstention, in an answer or a reference.
_UNKNOWN_RE = re.compile(
    r"\b(?:unknown|don't know|do not know|not sure|can't tell|cannot (?:be )?(?:tell|"
    r"determined?|answered|answer)|unable to (?:determine|answer|find|tell)|"
    r"not (?:stated|specified|available|provided|mentioned|known|recorded|given|found|"
    r"included|determined|in (?:the )?memor(?:y|ies))|"
    r"no (?:[\w-]+\s+){0,3}?(?:information|info|records?|recorded|data|details|memory|"
    r"memories|mention|mentioned|evidence)|"
    r"(?:does|do|did)(?: not|n't) (?:provide|mention|contain|specify|include|say|state|"
    r"have (?:any )?(?:information|details|records?|memor(?:y|ies))))\b", re.IGNORECASE)
#: A yes/no answer's polarity word at its start ("No, she prefers …").
_YES_NO = re.compile(r"^\s*(yes|no)\b", re.IGNORECASE)
#: A question answered by yes or no: it opens with an auxiliary verb.
_YES_NO_QUESTION = re.compile(r"^\s*(?:is|are|was|were|do|does|did|has|have|had|can|could|"
                              r"will|would|should)\b", re.IGNORECASE)


def canon_dates(text: str) -> str:
    """Rewrite dates to single tokens so "May 7, 2023" and "2023-05-07" compare equal, and
    drop thousands separators so "$21,900" and "21900" do too."""
    text = _THOUSANDS.sub("", text)

    def long(m: re.Match[str]) -> str:
        mon = m.group(1).lower()
        month = _MONTHS.index(mon) + 1 if mon in _MONTHS else _MONTH_ABBR[mon[:3]]
        return f" d{m.group(3)}{month:02d}{int(m.group(2)):02d} "

    text = _DATE_LONG.sub(long, text)
    text = _DATE_ISO.sub(lambda m: f" d{m.group(1)}{m.group(2)}{m.group(3)} ", text)
    return _MONTH_YEAR.sub(
        lambda m: f" m{m.group(2)}{_MONTHS.index(m.group(1).lower()) + 1:02d} ", text)


def key_tokens(text: str, ignore: Iterable[str] = ()) -> dict[str, float]:
    """Content tokens with weights (light words 0.3, others 1.0), minus ``ignore`` names."""
    return dict(_key_tokens(text, tuple(ignore)))


@functools.lru_cache(maxsize=1 << 16)
def _key_tokens(text: str, ignore: tuple[str, ...]) -> tuple[tuple[str, float], ...]:
    # cached: a judge compares each of hundreds of memories with every point
    skip = {stem(t) for name in ignore for t in content_tokens(name)}
    out: dict[str, float] = {}
    for tok in content_tokens(canon_dates(text)):
        if tok in skip:
            continue
        out[tok] = 0.3 if tok in LIGHT else 1.0
    return tuple(out.items())


#: Coverage granted when all of a text's identifying (non-light) words are present.
FULL_WHEN_HEAVY = 0.8


def coverage(target: str, candidate: str, ignore: Iterable[str] = ()) -> float:
    """Weighted share of ``target``'s key tokens that occur in ``candidate``."""
    return _cover(key_tokens(target, ignore), set(key_tokens(candidate, ignore)))


def _cover(want: dict[str, float], have: set[str]) -> float:
    if not want:
        return 0.0
    total = sum(want.values())
    cov = sum(w for t, w in want.items() if t in have) / total
    heavy = {t for t, w in want.items() if w >= 1.0}
    if heavy and heavy <= have:
        cov = max(cov, FULL_WHEN_HEAVY)  # every identifying word is there; verbs may differ
    return cov


#: How many of a point's identifying words a memory must share to cover it partly (all of
#: them when the point has fewer).
MIN_SHARED = 1


def _shares_identifying_word(target: str, candidate: str, ignore: Iterable[str],
                             at_least: int = 1) -> bool:
    """Whether ``candidate`` has ``at_least`` of ``target``'s identifying (non-light) words
    (all of them, when it has fewer)."""
    have = set(key_tokens(candidate, ignore))
    heavy = [t for t, w in key_tokens(target, ignore).items() if w >= 1.0]
    return bool(heavy) and sum(t in have for t in heavy) >= min(at_least, len(heavy))


#: Where a long memory's statements part: sentence ends, semicolons, and contrasting or
#: adding conjunctions ("…, while her mental health is …").
_CLAUSE_BREAK = re.compile(r"[;.!?](?:\s+|$)|,?\s+(?:while|whereas|but|although)\s+|,\s+and\s+")


def _best_clause(point: str, memory: str, subject: str) -> str:
    """The clause of ``memory`` that covers most of ``point`` (the memory if it has one)."""
    clauses = [c for c in _CLAUSE_BREAK.split(memory) if c.strip()]
    if len(clauses) <= 1:
        return memory
    return max(clauses, key=lambda c: coverage(point, c, [subject]))


def _subject_relation(clause: str, subject: str) -> set[str]:
    """A relation noun the clause is about, when it opens the clause ("Ana's coworker Tom
    enjoys chess", "My sister moved"); a relation named later ("Ana leads her team with her
    manager") leaves the clause about the subject."""
    pat = (r"^\W*(?:" + re.escape(subject) + r"['’]s|my|her|his|their)\s+(\w+)(?:\s+(\w+))?")
    m = re.match(pat, clause, re.IGNORECASE)
    return ({stem(w) for w in m.groups() if w} & _RELATION_WORDS) if m else set()


#: "<attribute> is <value>" / "<attribute>: <value>": the value is the point's key field.
_ATTRIBUTE_VALUE = re.compile(r"^(?P<attr>.+?)(?::|\s+(?:is|are|was|were)\s+)(?P<value>[^:]+)$")


def _relations(text: str, subject: str) -> set[str]:
    """Relation nouns used as a possessed subject ("Ana's coworker", "my sister")."""
    pat = r"(?:\b" + re.escape(subject) + r"'s|\bmy|\bher|\bhis|\btheir)\s+(\w+)(?:\s+(\w+))?"
    found = set()
    for m in re.finditer(pat, text, re.IGNORECASE):
        found |= {stem(w) for w in m.groups() if w}
    return found & _RELATION_WORDS


#: Words that turn a statement against what follows them: negation, and aversion or a
#: negative judgement ("dislikes romantic comedies", "avoids soda", "a negative impact on").
_AGAINST = frozenset("""not no never none nothing neither nor cannot without dislike dislikes
disliked avoid avoids avoided avoiding hate hates hated negative negatively lack lacks lacking
against refuse refuses refused quit quits stopped""".split())
#: How many content words after an against-word it still applies to (within the clause).
_AGAINST_SCOPE = 3
#: Words that open a new clause, where an against-word before them stops applying.
_SCOPE_ENDS = frozenset("""because since so which who whom that but while whereas although
though when as if""".split())
_WORD_OR_BREAK = re.compile(r"[\w'’-]+|[,;.!?()]")


def _stance(text: str, subject: str) -> dict[str, set[bool]]:
    """Each key token of ``text`` mapped to the stances it occurs in: True where an
    against-word governs it (one of :data:`_AGAINST`, or a "-n't" verb, at most
    :data:`_AGAINST_SCOPE` content words before it in the same clause, before any of
    :data:`_SCOPE_ENDS`), False where none does.
    "Ana dislikes golf but loves tennis" → golf {True}, tennis {False}."""
    skip = {stem(t) for t in content_tokens(subject)}
    out: dict[str, set[bool]] = {}
    last = -100
    k = 0  # position in content words: the user's name and stopwords do not count
    for w in _WORD_OR_BREAK.findall(canon_dates(text).lower()):
        if not (w[0].isalnum() or w[0] == "_") or w in _SCOPE_ENDS:
            last = -100  # a clause break or a new clause ("… because …") ends the scope
            continue
        if w in _AGAINST or w.endswith(("n't", "n’t")):
            last = k
            continue
        for tok in content_tokens(w):
            if tok not in skip:
                k += 1
                out.setdefault(tok, set()).add(k - last <= _AGAINST_SCOPE)
    return out


def _opposite_stance(point: str, memory: str, subject: str) -> bool:
    """Whether ``memory`` takes only the other stance than ``point`` on one of the
    identifying words they share ("Ana has a new interest in romantic comedies" / "Ana
    dislikes romantic comedies"; "Ana works at Acme" / "Ana no longer works at Acme"). A
    word used both ways in either text ("dislikes heavy metal … finds heavy metal too
    aggressive") and negation elsewhere in the memory ("no chronic diseases") do not
    count."""
    want = key_tokens(point, [subject])
    p, m = _stance(point, subject), _stance(memory, subject)
    return any(want.get(t, 0.0) >= 1.0 and t in m and len(p[t]) == len(m[t]) == 1
               and p[t] != m[t] for t in p)


@dataclass(frozen=True)
class Match:
    score: int  # 2 / 1 / 0
    why: str
    wrong_key: bool = False  # a related memory states a different number/date/name


class Judge(Protocol):
    @property
    def name(self) -> str:
        ...

    def integrity(self, point: str, memories: Sequence[str], *, subject: str) -> Match | None:
        ...

    def accuracy(self, memory: str, dialogue: Sequence[str], gold: Sequence[str], *,
                 subject: str) -> tuple[int, bool] | None:
        ...

    def update_label(self, point: str, originals: Sequence[str], memories: Sequence[str], *,
                     subject: str) -> str | None:
        ...

    def qa_label(self, question: str, reference: str, evidence: Sequence[str], answer: str,
                 *, subject: str) -> str | None:
        ...


# --------------------------------------------------------------------------- offline judge
@dataclass
class OfflineJudge:
    """A deterministic approximation of HaluMem's GPT-4o judge (see the module doc).

    Integrity of a point p against memories: the best single memory (or the union of the
    two best, for points split over two memories) by weighted key-token coverage (for an
    "<attribute> is <value>" point, the value is the key field); 2 if coverage ≥ ``full``
    with p's numbers/dates present, 1 if ≥ ``partial`` and the memory shares
    ``min_shared`` of p's identifying words (all, if p has fewer), or if a key number/date
    is off (a memory stating another value touches the point: HaluMem's LLM judge scores it
    1), 0 otherwise. A memory whose clause carrying p is about someone else (it opens with
    a relation noun p lacks: "Ana's coworker …") counts 0; one that takes the other stance
    on the words it shares with p (negation or aversion governing them: "avoids romantic
    comedies" for "enjoys romantic comedies") or a hypothetical one for a plain point is
    capped at 1.

    Update (memories' leading record times ignored): correct when the new point scores 2,
    no memory still states an original as current, and a memory stating it differs from
    the originals (where the point restates an original, the original kept is no update);
    hallucination when a related memory has a number/date that is neither the point's nor
    an original's, or the new and the old value both stand; omission otherwise (HaluMem's
    "no new related memory").

    QA: an abstention ("unknown", "not provided", "no record of …") is correct where the
    reference abstains, else an omission; a different number/date (beyond those the
    question names) is a hallucination; a yes/no answer with the wrong polarity is a
    hallucination, with the right one correct unless the reference's correction is
    contradicted (a reference that states the fact without "yes"/"no" answers "no" when
    it takes the other stance on the question's words or lacks most of them, "yes" when
    it has them all in the question's stance); otherwise the share of the reference's
    words the question does not already contain decides: ≥ ``qa_full`` correct,
    ≥ ``qa_partial`` omission (incomplete) unless the answer adds a content word nothing
    supports, else hallucination.
    Thresholds: fitted by ``memos eval halumem-judge-check`` on the LLM-judged dev users
    (README, HaluMem evaluation).
    """

    embedder: Embedder | None = None
    full: float = 0.6
    partial: float = 0.2
    min_shared: int = MIN_SHARED
    qa_full: float = 0.8
    qa_partial: float = 0.5
    max_answer_words: int = 60
    name: str = "offline (approximate)"

    def _match_one(self, point: str, memory: str, subject: str) -> Match:
        # a long memory states several things: judge who and which polarity by the clause
        # that carries the point, not by a "her partner" or "no chronic disease" elsewhere
        clause = _best_clause(point, memory, subject)
        if _subject_relation(clause, subject) - _relations(point, subject):
            return Match(0, "memory is about another person")
        against = _opposite_stance(point, clause, subject)
        cov = max(coverage(point, memory, [subject]), self._value_coverage(point, memory,
                                                                            subject))
        p_nums = numbers_in(canon_dates(point)) | _date_tokens(point)
        m_nums = numbers_in(canon_dates(memory)) | _date_tokens(memory)
        missing_nums = p_nums - m_nums
        wrong_key = bool(missing_nums and (m_nums - p_nums) and cov >= self.partial * 0.6)
        mentioned = _shares_identifying_word(point, memory, [subject], self.min_shared)
        if cov >= self.full and not missing_nums:
            score = 2
        elif (cov >= self.partial and mentioned) or (cov >= self.full and missing_nums):
            score = 1
        else:
            score = 0
        if score == 2 and HYPOTHETICAL.search(memory) and not HYPOTHETICAL.search(point):
            score = 1
        if against:
            return Match(min(score, 1), f"opposite polarity, coverage {cov:.2f}",
                         wrong_key=wrong_key)
        return Match(score, f"coverage {cov:.2f}", wrong_key=wrong_key)

    def _value_coverage(self, point: str, memory: str, subject: str) -> float:
        """For "<attribute> is <value>" points: the value is the key field. All of a short
        value present counts as covered when it is a number/date or the attribute is
        recognisable too ("birth date is 1986-03-26" ~ "born on March 26, 1986"), else as
        partly covered."""
        m = _ATTRIBUTE_VALUE.match(point.strip().rstrip("."))
        if m is None:
            return 0.0
        value = key_tokens(m["value"], [subject])
        have = set(key_tokens(memory, [subject]))
        if not value or len(value) > 5 or _cover(value, have) < FULL_WHEN_HEAVY:
            return 0.0
        attr = key_tokens(m["attr"], [subject])
        keyed = bool(numbers_in(canon_dates(m["value"])))
        # a one- or two-word value stated in full identifies the attribute ("ENTJ",
        # "female"); a longer one needs the attribute to be recognisable too
        recognisable = not attr or len(value) <= 2 or _cover(attr, have) >= 0.5
        return self.full if keyed or recognisable else self.partial

    def integrity(self, point: str, memories: Sequence[str], *, subject: str) -> Match:
        if not memories:
            return Match(0, "no memories")
        matches = [self._match_one(point, m, subject) for m in memories]
        best = max(range(len(memories)), key=lambda i: (matches[i].score,
                                                        coverage(point, memories[i], [subject])))
        result = matches[best]
        if result.score < 2 and len(memories) > 1:
            ranked = sorted((i for i in range(len(memories)) if matches[i].why.startswith(
                "coverage")), key=lambda i: -coverage(point, memories[i], [subject]))[:2]
            if len(ranked) == 2:
                union = self._match_one(point, memories[ranked[0]] + " " +
                                        memories[ranked[1]], subject)
                if union.score > result.score:
                    result = Match(union.score, "union of two memories: " + union.why)
        if not result.wrong_key:
            result = Match(result.score, result.why,
                           wrong_key=any(m.wrong_key for m in matches))
        return result

    def accuracy(self, memory: str, dialogue: Sequence[str], gold: Sequence[str], *,
                 subject: str) -> tuple[int, bool]:
        best = 0
        # A resolved date cannot occur verbatim in the dialogue ("last week"): check the rest
        # of the memory word by word, and require a temporal expression in the turn.
        dated = bool(_date_tokens(memory))
        plain = _DATE_PHRASE.sub(" ", canon_dates(memory)) if dated else memory
        for turn in dialogue:
            if dated and not TIME_EXPR.search(turn):
                continue
            verdict = check(plain, turn, aliases=[subject], embedder=self.embedder)
            if verdict.supported:
                best = 2
                break
            if verdict.checks.get("words") or coverage(memory, turn, [subject]) >= self.partial:
                best = max(best, 1)
        included = any(max(coverage(g, memory, [subject]), coverage(memory, g, [subject]))
                       >= self.partial for g in gold)
        return best, included

    def update_label(self, point: str, originals: Sequence[str], memories: Sequence[str], *,
                     subject: str) -> str:
        # a retrieved memory's record time ("2025-09-05T13:30:48+00:00: …") is not a date
        # it states
        memories = [_RECORD_TIME.sub("", m) for m in memories]
        new = self.integrity(point, memories, subject=subject)
        stale = False
        carriers = []  # memories that state the new point in full
        for m in memories:
            if self._match_one(point, m, subject).score == 2:
                carriers.append(m)
                continue
            if any(self._match_one(o, m, subject).score == 2 and
                   coverage(point, m, [subject]) < self.full for o in originals):
                stale = True
        # a memory that states an original just as well shows no update: where the new
        # point restates the old one, only a memory that differs from it does
        shows_new = not carriers or any(
            all(self._match_one(o, m, subject).score < 2 for o in originals) for m in carriers)
        if new.score == 2 and not stale and shows_new:
            return "correct"
        # HaluMem's rubric: a hallucinated update is a related memory with wrong facts (a
        # value that is neither the new one nor an original); the old value kept with
        # nothing new is an omitted update
        old_nums: set[str] = set()
        for o in originals:
            old_nums |= numbers_in(canon_dates(o)) | _date_tokens(o)
        p_nums = numbers_in(canon_dates(point)) | _date_tokens(point)
        for m in memories:
            match = self._match_one(point, m, subject)
            m_nums = numbers_in(canon_dates(m)) | _date_tokens(m)
            if match.wrong_key and (m_nums - p_nums) - old_nums:
                return "hallucination"
        if stale and new.score == 2:
            return "hallucination"
        return "omission"

    def qa_label(self, question: str, reference: str, evidence: Sequence[str], answer: str,
                 *, subject: str) -> str:
        ref_unknown = bool(_UNKNOWN_RE.search(reference)) and not _YES_NO.match(reference)
        said_unknown = not answer.strip() or bool(_UNKNOWN_RE.search(answer))
        if ref_unknown:
            return "correct" if said_unknown else "hallucination"
        if said_unknown:
            return "omission"
        if len(answer.split()) > self.max_answer_words:
            return "omission"  # not an answer: a dump of memories
        # numbers and dates the question itself names are not the answer's claims
        q_nums = numbers_in(canon_dates(question)) | _date_tokens(question)
        ref_nums = numbers_in(canon_dates(reference)) | _date_tokens(reference)
        ans_nums = (numbers_in(canon_dates(answer)) | _date_tokens(answer)) - q_nums
        if ref_nums and not ref_nums <= ans_nums and ans_nums - ref_nums:
            return "hallucination"  # a different number or date
        ref = _YES_NO_LEAD.sub("", reference.strip())
        # the answer need not repeat the question: score the reference's other words
        # ("Sarah's birth date is 1986-03-26" answering "What is Sarah's birth date?")
        want = key_tokens(ref, [subject])
        asked = set(key_tokens(question, [subject]))
        key = {t: w for t, w in want.items() if t not in asked} or want
        cov = _cover(key, set(key_tokens(answer, [subject])))
        ref_polarity, ans_polarity = _YES_NO.match(reference), _YES_NO.match(answer)
        if ans_polarity and not ref_polarity and _YES_NO_QUESTION.match(question):
            implied = _implied_polarity(question, reference, subject)
            if implied is not None:
                return ("correct" if implied == ans_polarity.group(1).lower()
                        else "hallucination")
        if ref_polarity and ans_polarity and _YES_NO_QUESTION.match(question):
            if ref_polarity.group(1).lower() != ans_polarity.group(1).lower():
                return "hallucination"
            # the right yes/no; where the reference also corrects the question ("No, she
            # visited after a stressful season"), the answer must not say otherwise
            brief_correction = len(key) <= 2
            return "correct" if brief_correction or cov >= self.qa_partial else "hallucination"
        if ref_nums and ref_nums <= ans_nums and not ans_nums - ref_nums:
            cov = max(cov, self.qa_full)  # the key numbers/dates, and no others
        if cov >= self.qa_full:
            return "correct"
        # HaluMem's priority rule: incomplete is an omission, but incomplete with content
        # that neither the reference, the question nor the evidence supports ("Adventure
        # and biographical films" for "Adventure films and mystery thrillers") is a
        # hallucination
        supported = asked | set(want)
        for point in evidence:
            supported |= set(key_tokens(point, [subject]))
        unsupported = any(w >= 1.0 and t not in supported
                          for t, w in key_tokens(answer, [subject]).items())
        if cov >= self.qa_partial and not (ans_nums - ref_nums) and not unsupported:
            return "omission"  # incomplete
        return "hallucination"


_YES_NO_LEAD = re.compile(r"^(?:no|yes)[.,!]\s*", re.IGNORECASE)
_DATE_PHRASE = re.compile(r"\b(?:(?:on|in|during)\s+(?:the\s+)?(?:week\s+of\s+)?)?[dm]\d{6,8}\b"
                          r"|\bin\s+\d{4}\b")


#: A leading record time on a retrieved memory (ISO date-time and a colon).
_RECORD_TIME = re.compile(r"^\s*\[?\d{4}-\d{2}-\d{2}[T ][\d:.]+(?:Z|[+-]\d{2}:?\d{2})?\]?:?\s*")


def _implied_polarity(question: str, reference: str, subject: str) -> str | None:
    """How a reference that states a fact answers a yes/no question ("Did Ana keep
    drinking soda?" / "Ana decided to avoid soda"): "no" when it takes the other stance on
    the question's words or lacks at least half of its identifying words, "yes" when it has
    them all in the same stance, None when it is unclear."""
    asked = [t for t, w in key_tokens(question, [subject]).items()
             if w >= 1.0 and not re.fullmatch(r"[dm]\d{6,8}|\d+", t)]
    if not asked:
        return None
    if _opposite_stance(question, reference, subject):
        return "no"
    have = set(key_tokens(reference, [subject]))
    missing = sum(t not in have for t in asked)
    if missing * 2 >= len(asked):
        return "no"
    return "yes" if missing == 0 else None


def _date_tokens(text: str) -> set[str]:
    return set(re.findall(r"\b[dm]\d{6,8}\b", canon_dates(text)))


# --------------------------------------------------------------------------- LLM judge
# HaluMem's four judged tasks, in our own words after its published task definitions:
# memory integrity (is a reference point captured?), memory accuracy (is an extracted memory
# true to the dialogue?), memory update (does the system show the new value?) and question
# answering. Each asks for one JSON object with HaluMem's output keys; the readers also
# take the shorter keys ("score", "label") older prompts used.
INTEGRITY_PROMPT = """You are grading a memory system on HaluMem's memory-integrity task.
You are given one reference memory point about the user and the memories the system holds.
Decide how completely the system's memories capture the reference point: its subject, the
key facts, and key fields such as names, numbers, dates and places.
- 2: fully captured, stated outright or logically implied by the memories together;
- 1: partly captured: the gist is there but a detail is missing, vaguer, or a key field is
  slightly off;
- 0: not captured, or the memories contradict it or attribute it to someone else.
Reply with one JSON object only: {"reasoning": "<one or two sentences>", "score": 0 | 1 | 2}"""
ACCURACY_PROMPT = """You are grading a memory system on HaluMem's memory-accuracy task.
You are given one memory the system extracted, the dialogue it came from, and the reference
memory points of that dialogue. Judge the memory on its own:
- accuracy_score 2: every claim in it is supported by the dialogue (dates resolved from the
  dialogue's timestamps count as supported);
- 1: partly supported: some claims are unsupported, exaggerated or slightly wrong;
- 0: unsupported or contradicted by the dialogue (a hallucination).
- is_included: true when the memory is about information one of the reference points covers.
Reply with one JSON object only:
{"reasoning": "<one or two sentences>", "accuracy_score": 0 | 1 | 2, "is_included": true | false}"""
UPDATE_PROMPT = """You are grading a memory system on HaluMem's memory-update task.
Some information about the user changed: the ORIGINAL memories held the old value and the
NEW memory point states the current one. You are given the memories the system retrieves
for the new point. Classify what the system shows:
- "Correct": a retrieved memory states the new information with its key fields right, and
  no retrieved memory still presents the old value as current;
- "Hallucination": a retrieved memory about this information states something false (a
  wrong value, or the old and the new value both as current);
- "Omission": nothing retrieved reflects the update (no related memory, or only the old
  value, or the key field missing);
- "Other": none of these.
Reply with one JSON object only:
{"reasoning": "<one or two sentences>",
 "evaluation_result": "Correct" | "Hallucination" | "Omission" | "Other"}"""
QA_PROMPT = """You are grading an answer on HaluMem's question-answering task. You are given
the question, the reference answer, the evidence memory points it rests on, and the system's
answer. Classify the system's answer:
- "Correct": it says what the reference says (wording may differ) and contradicts neither the
  reference nor the evidence; where the reference says the information is unknown or was
  never given, declining to answer is correct;
- "Hallucination": it states something the reference or the evidence contradicts, or it
  asserts an answer where the reference says the information is unknown;
- "Omission": it declines to answer, or its answer is incomplete, although the reference
  gives an answer (incomplete AND wrong is a hallucination).
Reply with one JSON object only:
{"reasoning": "<one or two sentences>",
 "evaluation_result": "Correct" | "Hallucination" | "Omission"}"""


@dataclass
class LLMJudge:
    """HaluMem's rubric through any litellm model; an unparseable answer returns None."""

    model: str
    completion_kwargs: dict[str, Any] = field(default_factory=dict)
    completion: CompletionFn | None = None

    @property
    def name(self) -> str:
        return f"llm:{self.model}"

    def _ask(self, system: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        try:
            reply = ask(self.completion, model=self.model, system=system,
                        user=json.dumps(payload, ensure_ascii=False),
                        options=self.completion_kwargs)
        except Exception:  # noqa: BLE001 - any provider failure is a failed judgement
            return None
        return parse_json_object(reply)

    def integrity(self, point: str, memories: Sequence[str], *, subject: str) -> Match | None:
        out = self._ask(INTEGRITY_PROMPT, {"memory_point": point,
                                           "extracted_memories": list(memories)})
        score = _int_in(out, "score")
        return None if score is None else Match(score, _reason(out))

    def accuracy(self, memory: str, dialogue: Sequence[str], gold: Sequence[str], *,
                 subject: str) -> tuple[int, bool] | None:
        out = self._ask(ACCURACY_PROMPT, {"memory": memory, "dialogue": list(dialogue),
                                          "reference_points": list(gold)})
        score = _int_in(out, "accuracy_score", "accuracy")
        if score is None or out is None:
            return None
        included = out.get("is_included", out.get("included", False))
        return score, (included.strip().lower() == "true" if isinstance(included, str)
                       else bool(included))

    def update_label(self, point: str, originals: Sequence[str], memories: Sequence[str], *,
                     subject: str) -> str | None:
        out = self._ask(UPDATE_PROMPT, {"new_memory_point": point,
                                        "original_memories": list(originals),
                                        "retrieved_memories": list(memories)})
        return _label_in(out, UPDATE_LABELS)

    def qa_label(self, question: str, reference: str, evidence: Sequence[str], answer: str,
                 *, subject: str) -> str | None:
        out = self._ask(QA_PROMPT, {"question": question, "reference_answer": reference,
                                    "evidence": list(evidence), "system_answer": answer})
        return _label_in(out, QA_LABELS)


def _int_in(out: dict[str, Any] | None, *keys: str) -> int | None:
    """The first of ``keys`` present in ``out`` as 0, 1 or 2 (also "2"), else None."""
    if out is None:
        return None
    raw = next((out[k] for k in keys if k in out), None)
    try:
        value = int(str(raw).strip())
    except (TypeError, ValueError):
        return None
    return value if value in (0, 1, 2) else None


def _label_in(out: dict[str, Any] | None, labels: Sequence[str]) -> str | None:
    """HaluMem's ``evaluation_result`` (or ``label``) as one of ``labels``, any case."""
    raw = (out or {}).get("evaluation_result", (out or {}).get("label", ""))
    label = str(raw).lower().strip()
    return label if label in labels else None


def _reason(out: dict[str, Any] | None) -> str:
    return str((out or {}).get("reasoning", (out or {}).get("reason", "")))


# --------------------------------------------------------------------------- answerers
_QWORDS = frozenset(stem(w) for w in """what which who whom whose when where why how does did
is are was were name named called kind sort type right suggest should recommend cook make
happy would enjoy living""".split())
#: :data:`memos.retrieval.coverage.EXPANSIONS` with the judge's stemmer.
_EXPAND: list[tuple[re.Pattern[str], tuple[str, ...]]] = [
    (pattern, tuple(stem(w) for w in words)) for pattern, words in EXPANSIONS]


def _recency(r: Retrieved) -> str:
    md = r.metadata or {}
    return str(md.get("valid_from") or md.get("observed_at") or md.get("created_at") or "")


#: How much a hit's search score adds to its lexical support when the offline answerer
#: picks the memory to answer from (cosine scores; a router score is scaled the same way).
DENSE_WEIGHT = 0.5
#: For a question about the present value ("current", "now", "latest") the newer memory
#: wins a near tie (within this much support); otherwise support decides, then recency.
RECENT_TIE = 0.05
_DATE_TOKEN = re.compile(r"[dm]\d{6,8}")
_ASKS_CURRENT = re.compile(r"\b(?:current(?:ly)?|now|latest|these days|still)\b",
                           re.IGNORECASE)
#: A stance lexicon for yes/no questions ("Did Ana express disappointment with …" against
#: "Ana was delighted with …"): everyday words of a positive and of a negative stance.
_POSITIVE = frozenset(stem(w) for w in """like likes liked love loves loved enjoy enjoys
enjoyed enjoying prefer prefers preferred excited excitement exciting delight delighted
enthusiasm enthusiastic grateful gratitude appreciate appreciates appreciated appreciation
happy proud pride support supported supportive include included increase increased improve
improved improvement success successful interest interested clarity determined determination
confident confidence optimistic satisfied satisfaction continue continued accept accepted
agree agreed positive easy benefit benefited helpful inspired inspiring""".split())
_NEGATIVE = frozenset(stem(w) for w in """dislike dislikes disliked hate hates hated
disinterest disinterested disappointed disappointment dissatisfied dissatisfaction
frustrated frustration skeptical skepticism confused confusion indecision indecisive avoid
avoided exclude excluded stop stopped quit decrease decreased decline declined reject
rejected disagree disagreed sad unhappy fail failed failure negative difficult unrelated
worried worry anxious anxiety doubt doubted lack lacked regret regretted bored boring
reluctant reluctance""".split())


def _support(question: str, want: dict[str, float], heavy: set[str], r: Retrieved,
             ignore: Sequence[str], kind: str, subject: str) -> float | None:
    """How well memory ``r`` answers ``question`` (None: it cannot): the weighted share of
    the question's key words it holds, plus :data:`DENSE_WEIGHT` × its search score. It
    must hold one of the question's identifying words, say something the question does
    not (unless it is a yes/no question, which it then confirms), carry what the question
    asks for (:func:`memos.retrieval.coverage.carries`) and be about the subject, not a
    relative the question does not name."""
    have = set(key_tokens(r.text, ignore))
    # the extractor's attribute key ("job") is part of what the memory says
    attr = set(content_tokens(str((r.metadata or {}).get("attribute", "")).replace(
        "_", " ").replace(":", " ")))
    have |= attr
    if heavy and not heavy & have:
        return None
    if kind != "yes_no" and not have - set(want) - set(key_tokens(question, ignore)):
        return None  # only repeats the question (which confirms a yes/no question)
    if not carries(kind, r.text, f"{question} {subject}"):
        return None  # the subject's own name is no answer to "who …"
    if subject and _relations(r.text, subject) - _relations(question, subject):
        return None  # about the subject's coworker/sister, not the subject
    total = sum(want.values())
    overlap = sum(w for t, w in want.items() if t in have)
    if overlap <= 0 or not total:
        return None
    return overlap / total + DENSE_WEIGHT * max(0.0, min(1.0, r.score))


#: A question that asks for a speculation ("What hobby might Ana take up …", "How could
#: she …", "… would she likely …"): the answer is an inference from memory, which an
#: extractive answerer cannot make — quoting a related memory is not one. Modal verbs in
#: lower case only, so a date in May is not one.
_SPECULATIVE = re.compile(r"\b(?:might|could|would|likely|may)\b|^(?:Might|Could|Would|May)\b")
#: A question that asks how one thing shaped or changed another ("How did her promotion
#: influence …", "How has her income changed …", "What role did …"): an explanation or a
#: before-and-after, again not one memory's words ("how many/much/old/long/often" asks
#: for a quantity and is not one).
_EXPLANATORY = re.compile(r"\bhow\s+(?!many\b|much\b|old\b|long\b|often\b|far\b)"
                          r"(?:did|does|do|has|have|had|is|was|were|are|will|can)\b"
                          r"|\bin what ways?\b|\bwhat role\b", re.IGNORECASE)
#: A recommendation ("Which dish should I cook to make Ana happy?", "Suggest an activity
#: Ana would enjoy"): answered by a liking the memory states, and only then. A modal
#: question about what someone would enjoy or like is one, not a speculation.
_RECOMMENDATION = re.compile(r"\b(?:should|suggest|recommend)\b|\b(?:might|could|would|may)\s+"
                             r"(?:\w+\s+)?(?:enjoy|like|love|prefer|appreciate)\b",
                             re.IGNORECASE)


def _quotable(question: str) -> bool:
    """Whether a quoted memory can answer ``question``: not a speculation (unless it asks
    for a recommendation) nor an explanation (:data:`_SPECULATIVE`, :data:`_EXPLANATORY`,
    :data:`_RECOMMENDATION`)."""
    if _EXPLANATORY.search(question):
        return False
    return not _SPECULATIVE.search(question) or bool(_RECOMMENDATION.search(question))


#: Words that state a preference beyond :data:`_POSITIVE`'s ("favorite food is …").
_PREFERENCE_WORDS = frozenset(stem(w) for w in "favorite favourite preference".split())
#: A question about what someone likes best ("What is Sharon's favorite cuisine?", "…
#: prefer …"): a memory on the topic that states no liking does not answer it.
_ASKS_FAVOURITE = re.compile(r"\b(?:favou?rite|prefer\w*)\b", re.IGNORECASE)
#: A question about what someone dislikes ("What sports does Sharon dislike?"): answered
#: only by a memory that states an aversion, not by one of what she prefers.
_ASKS_AVERSION = re.compile(r"\b(?:dislik\w*|hat(?:e|es|ed)|avoid\w*)\b|"
                            r"\b(?:not|n't) (?:like|enjoy)\b", re.IGNORECASE)


def _states_preference(memory: str) -> bool:
    return bool(set(content_tokens(memory)) & (_POSITIVE | _PREFERENCE_WORDS))


def _states_aversion(memory: str) -> bool:
    return bool(set(content_tokens(memory)) & _NEGATIVE) or has_negation(memory)


def _yes_no_lead(question: str, memory: str) -> str:
    """A yes/no answer's lead: "No" when the memory takes the opposite stance to the one
    the question asks about (negation, or a stance word of :data:`_POSITIVE` against one of
    :data:`_NEGATIVE` or the other way round), "Yes" when it
    holds every identifying word of the question with the same polarity, else ""."""
    q, m = set(content_tokens(question)), set(content_tokens(memory))
    if has_negation(question) != has_negation(memory):
        return "No"
    for asked, held in ((_NEGATIVE, _POSITIVE), (_POSITIVE, _NEGATIVE)):
        if (q & asked) - m and (m & held) - q:
            return "No"  # the question asks about one stance, the memory takes the other
    heavy = {t for t, w in key_tokens(question).items() if w >= 1.0} - _QWORDS
    return "Yes" if heavy and heavy <= m else ""


def _answer_one(question: str, retrieved: Sequence[Retrieved], subject: str) -> str:
    ignore = [subject] if subject else []
    kind = answer_type(question)
    # a date the question names anchors it in time ("on May 20, 2026"); it is not what
    # the answer is about
    want = {t: w for t, w in key_tokens(question, ignore).items()
            if t not in _QWORDS and not _DATE_TOKEN.fullmatch(t)}
    confirm = bool(re.search(r",\s*(?:right|correct|isn't (?:it|she|he)|doesn't (?:she|he))\?$",
                             question.strip(), re.IGNORECASE))
    heavy = set() if confirm or kind == "yes_no" else {t for t, w in want.items() if w >= 1.0}
    for pattern, words_ in _EXPAND:
        if pattern.search(question):
            for w in words_:
                want.setdefault(w, 0.5)
                heavy.add(w) if heavy else None
    scored = [(sup, r) for r in retrieved
              if (sup := _support(question, want, heavy, r, ignore, kind, subject)) is not None]
    if not scored:
        return ""
    top = max(sup for sup, _ in scored)
    if _ASKS_CURRENT.search(question):
        near = [(sup, r) for sup, r in scored if sup >= top - RECENT_TIE]
        best = max(near, key=lambda p: (_recency(p[1]), p[0]))[1]
    else:
        best = max(scored, key=lambda p: (p[0], _recency(p[1])))[1]
    text = best.text.strip()
    if kind == "yes_no":
        # a memory that neither confirms nor contradicts the question answers neither
        # "yes" nor "no": quoting it would read as an answer (every such reply on the dev
        # users was judged a hallucination), so no memory of this set answers
        lead = _yes_no_lead(question, text)
        return f"{lead}, {text}" if lead else ""
    return text


def _sentences(retrieved: Sequence[Retrieved]) -> list[Retrieved]:
    """Each sentence of each (turn) hit as a hit of its own, so an answer quotes the
    sentence that carries it, not the whole turn."""
    out = []
    for r in retrieved:
        for k, sent in enumerate(re.split(r"(?<=[.!?])\s+", r.text.strip())):
            if len(sent.split()) >= 3:
                out.append(Retrieved(id=f"{r.id}#{k}", text=sent, score=r.score,
                                     metadata=r.metadata))
    return out


#: How near (:func:`memos.temporal.time_closeness`) a memory must be to a day the question
#: names to count as that day's memory (1 on the day; 0.5 about a day and a half off).
DATED_CLOSENESS = 0.5


def _posix(value: Any) -> float:
    try:
        when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return math.nan
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


def _of_the_day(question: str, retrieved: Sequence[Retrieved]) -> list[Retrieved]:
    """The memories said or holding (``observed_at``, ``valid_from``) on a day ``question``
    names ("… on Aug 22, 2027?", "… as of May 24, 2029?"); none when it names no day."""
    days = [p for p in query_periods(question) if p.day is not None]
    if not days or not retrieved:
        return []
    times = np.array([[_posix((r.metadata or {}).get(k)) for k in ("observed_at", "valid_from")]
                      for r in retrieved])
    near = np.maximum(time_closeness(days, times[:, 0]), time_closeness(days, times[:, 1]))
    return [r for r, c in zip(retrieved, near) if c >= DATED_CLOSENESS]


def offline_answer(question: str, retrieved: Sequence[Retrieved], *, subject: str = ""
                   ) -> str:
    """Extractive answer: the memory that best supports the question.

    Support (see :func:`_support`) is the weighted share of the question's content words a
    memory holds (with a small query expansion for personal-fact questions) plus half its
    search score; a memory counts only if it adds something to the question and carries
    the answer type the question asks for (:func:`memos.retrieval.coverage.answer_type`:
    a date for "when", a number for "how many", a name for "who", a place for "where").
    For a question about the current value the newest of the near-best memories wins. A
    yes/no question is answered "Yes, …"/"No, …" with the memory when the memory takes the
    same/opposite stance; a memory that does neither does not answer it. A two-part
    question ("X, and Y?") is answered part by part. Facts are tried first; only when none
    qualifies is the answer the best-supporting sentence of another hit (a dialogue turn).
    Says "unknown" when no memory qualifies, and for a question a quote cannot answer: a
    speculation ("What hobby might Ana take up …") or an explanation ("How did her move
    change …") asks for an inference, so the quote would read as a confident wrong answer;
    a recommendation ("Which dish should I cook for Ana?", "… that Ana would enjoy") or a
    favourite ("What is Ana's favorite cuisine?") is answered only by a memory that states a
    liking, and a dislike ("What sports does Ana dislike?") only by one that states an
    aversion.

    A question that names a day ("What workshop did Ana attend on Aug 22, 2027?") asks
    about what was said or held that day: the memories of that day (:func:`_of_the_day`)
    answer it first, facts then dialogue sentences as above, and the whole context only
    when none of them does.
    """
    if not _quotable(question):
        return UNKNOWN
    dated = _of_the_day(question, retrieved)
    if dated and len(dated) < len(retrieved):
        answer = _answer_from(question, dated, subject)
        if answer != UNKNOWN:
            return answer
    return _answer_from(question, retrieved, subject)


def _answer_from(question: str, retrieved: Sequence[Retrieved], subject: str) -> str:
    """:func:`offline_answer` from these memories, with no regard to a date asked about."""
    parts = question_parts(question)
    facts = [r for r in retrieved if (r.metadata or {}).get("granularity", "fact") == "fact"]
    others = [r for r in retrieved if r not in facts]
    answers = []
    for part in parts:
        text = _answer_one(part, facts, subject) or _answer_one(part, _sentences(others),
                                                                  subject)
        if text and (_RECOMMENDATION.search(part) or _ASKS_FAVOURITE.search(part)) \
                and not _states_preference(text):
            text = ""  # a recommendation or a favourite: a memory that states a liking
        if text and _ASKS_AVERSION.search(part) and not _states_aversion(text):
            text = ""  # what someone dislikes: a memory that states an aversion
        if text and text not in answers:
            answers.append(text)
    return " ".join(answers) if answers else UNKNOWN


ANSWER_PROMPT = """You answer questions about a user from a memory system's memories
(HaluMem's question-answering task). Use only the memories given, each with the time it
was recorded. Answer briefly and directly. When memories conflict, the more recent one
holds. Resolve relative dates against the memory's time. If the memories do not contain
the answer, do not guess: reply exactly "not in memory"."""


@dataclass
class LLMAnswerer:
    model: str
    completion_kwargs: dict[str, Any] = field(default_factory=dict)
    completion: CompletionFn | None = None

    def __call__(self, question: str, retrieved: Sequence[Retrieved]) -> str:
        memories = "\n".join(f"- [{_recency(r) or 'undated'}] {r.text}" for r in retrieved)
        return ask(self.completion, model=self.model, system=ANSWER_PROMPT,
                   user=f"Memories:\n{memories}\n\nQuestion: {question}",
                   options=self.completion_kwargs).strip()


# --------------------------------------------------------------------------- metrics
def _rate(n: float, d: float) -> float:
    return float(n) / d if d else 0.0


def extraction_metrics(gold: Sequence[tuple[int | None, float]],
                       distractors: Sequence[int | None],
                       accuracies: Sequence[tuple[int | None, bool]]) -> dict[str, float]:
    """HaluMem extraction metrics from judged items.

    ``gold``: (integrity score or None if unparseable, importance) per gold point;
    ``distractors``: integrity score per interference point; ``accuracies``: (accuracy
    score or None, included) per extracted memory.
    """
    recall = _rate(sum(1 for s, _ in gold if s == 2), len(gold))
    imp = sum(i for _, i in gold)
    weighted = _rate(sum(i * (s or 0) / 2 for s, i in gold), imp)
    fmr = _rate(sum(1 for s in distractors if s == 0), len(distractors))
    included = [(s or 0) / 2 for s, inc in accuracies if inc]
    target_p = _rate(sum(included), len(included))
    acc = _rate(sum((s or 0) / 2 for s, _ in accuracies), len(accuracies))
    f1 = 2 * target_p * recall / (target_p + recall) if target_p + recall else 0.0
    return {"recall": recall, "weighted_recall": weighted, "target_precision": target_p,
            "accuracy": acc, "fmr": fmr, "f1": f1}


def _evidence_rates(scores: Sequence[Sequence[int | None]]) -> dict[str, float]:
    """Mean over questions of the share of evidence points scored 2 / at least 1, and of
    the mean score / 2 (an unparsed score counts 0)."""
    def mean_of(f: Callable[[int], float]) -> float:
        return _rate(sum(sum(f(x or 0) for x in sc) / len(sc) for sc in scores if sc),
                     sum(1 for sc in scores if sc))
    return {"n": sum(1 for sc in scores if sc), "full": mean_of(lambda x: float(x == 2)),
            "partial": mean_of(lambda x: float(x >= 1)), "weighted": mean_of(lambda x: x / 2)}


def _label_rates(labels: Sequence[str | None], names: Sequence[str]) -> dict[str, float]:
    return {n: _rate(sum(1 for lab in labels if lab == n), len(labels)) for n in names}


def _timing(xs: Sequence[float]) -> dict[str, float]:
    if not xs:
        return {"n": 0, "mean": 0.0, "p50": 0.0, "p95": 0.0, "total": 0.0}
    s = sorted(xs)
    return {"n": len(s), "mean": statistics.fmean(s), "p50": s[len(s) // 2],
            "p95": s[min(len(s) - 1, math.ceil(0.95 * len(s)) - 1)], "total": sum(s)}


# --------------------------------------------------------------------------- client glue
def _value(x: Any) -> str:
    return str(getattr(x, "value", x))


def _iso(ts: str) -> str:
    from memos.eval.halumem_synth import parse_time

    try:
        return parse_time(ts).isoformat()
    except ValueError:
        return ts


def _retrieved(response: Any) -> list[Retrieved]:
    """The hits as :class:`Retrieved`. A hybrid hit's score is its cosine part (in its
    ``explain``) when the search explained it: the offline answerer counts the query's
    words a memory holds itself, and the fused score would count them twice."""
    hybrid = _value(getattr(response, "score_kind", "")) == "hybrid"
    out = []
    for hit in getattr(response, "hits", response) or []:
        unit = getattr(hit, "unit", hit)
        md = dict(getattr(unit, "metadata", None) or {})
        gran = getattr(unit, "granularity", None)
        if gran is not None and "granularity" not in md:
            md["granularity"] = _value(gran)
        for key in ("valid_from", "created_at"):
            val = getattr(unit, key, None)
            if val is not None and key not in md:
                md[key] = val.isoformat() if hasattr(val, "isoformat") else str(val)
        score = float(getattr(hit, "score", 0.0))
        explain = getattr(hit, "explain", None) or {}
        if hybrid and "dense" in explain:
            score = float(explain["dense"])
        out.append(Retrieved(id=str(getattr(unit, "id", "")), text=str(
            getattr(unit, "text", "") or ""), score=score, metadata=md))
    return out


_TRACE_METADATA = ("granularity", "valid_from", "created_at", "observed_at", "attribute",
                   "memory_type")


def _trace_metadata(hit: Retrieved) -> dict[str, Any]:
    md = hit.metadata or {}
    return {k: md[k] for k in _TRACE_METADATA if md.get(k) is not None}


def _diagnose(judge: Judge, evidence: Sequence[str], subject: str, *, cube_facts: Sequence[str],
              turns: Sequence[str], mixed: Sequence[Retrieved]) -> dict[str, Any]:
    """Where a question's evidence points are, for the trace: their integrity scores
    against every fact read back so far (``cube_evidence_scores``; a superset of the active
    facts: one superseded later still counts), against every dialogue turn so far, the
    user's and the assistant's (``turn_evidence_scores``), and against the top 20 of a
    router search over facts and turns (``mixed_hits``, ``mixed_evidence_scores``)."""
    def scores(texts: Sequence[str]) -> list[int | None]:
        out = []
        for e in evidence:
            m = judge.integrity(e, list(texts), subject=subject)
            out.append(None if m is None else m.score)
        return out

    return {"cube_evidence_scores": scores(cube_facts), "turn_evidence_scores": scores(turns),
            "mixed_hits": [{"text": h.text, "score": h.score,
                            "granularity": str((h.metadata or {}).get("granularity", ""))}
                           for h in mixed],
            "mixed_evidence_scores": scores([h.text for h in mixed])}


def without_sources(turns: Sequence[Retrieved], facts: Sequence[Retrieved], *,
                    held: float = QA_TURN_HELD) -> list[Retrieved]:
    """``turns`` less those the facts of ``facts`` extracted from them already hold: at
    least ``held`` of the turn's content words are in the facts whose
    ``source_message_id`` is its ``message_id``. Order is kept; the slot goes to a turn
    that adds something. A turn that says more than its facts (most long ones) stays."""
    said: dict[str, set[str]] = defaultdict(set)
    for f in facts:
        if f.metadata and f.metadata.get("source_message_id"):
            said[str(f.metadata["source_message_id"])].update(content_tokens(f.text))
    out = []
    for t in turns:
        words = set(content_tokens(t.text))
        facts_words = said.get(str((t.metadata or {}).get("message_id")))
        if facts_words and words and len(words & facts_words) >= held * len(words):
            continue
        out.append(t)
    return out


def load_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with Path(path).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _subject(record: dict[str, Any]) -> str:
    m = re.search(r"Name:\s*([^;]+)", record.get("persona_info", "") or "")
    return m.group(1).strip() if m else "the user"


def make_judge(judge: str | Judge, *, embedder: Embedder | None = None) -> Judge:
    if not isinstance(judge, str):
        return judge
    if judge == "offline":
        return OfflineJudge(embedder=embedder)
    return LLMJudge(judge)


def make_answerer(answerer: str | AnswerFn | None, subject_hint: bool = True) -> AnswerFn | None:
    if answerer is None or answerer == "offline":
        return None  # offline_answer with the user's name, chosen per user
    if callable(answerer):
        return answerer
    if answerer == "bundled":
        raise InvalidInput("the bundled answerer is not available in this build; pass "
                           "answer_fn= or a litellm model name")
    return LLMAnswerer(answerer)


# --------------------------------------------------------------------------- the run
def _is_update(point: dict[str, Any]) -> bool:
    """Whether a memory point is one of the update task's: marked an update, with the
    original memories it changes."""
    return str(point.get("is_update", "False")) == "True" and bool(point.get(
        "original_memories"))


def _judge_stated(judge: Judge, dialogue: Sequence[dict[str, Any]],
                  g_points: Sequence[dict[str, Any]], i_points: Sequence[dict[str, Any]],
                  subject: str, out: dict[str, list[int | None]]) -> None:
    """Append the judge's score of each point against the session's user turns
    (``<group>:user``) and all its turns (``<group>:any``); groups ``gold``, ``update`` (the
    update task's points, in its order) and ``interference``."""
    turns = {"user": [t["content"] for t in dialogue
                      if t.get("role") == "user" and t.get("content", "").strip()],
             "any": [t["content"] for t in dialogue if t.get("content", "").strip()]}
    groups = [("gold", list(g_points)), ("interference", list(i_points)),
              ("update", [p for p in g_points if _is_update(p)])]
    for group, points in groups:
        for p in points:
            for side, texts in turns.items():
                match = judge.integrity(p["memory_content"], texts, subject=subject)
                out[f"{group}:{side}"].append(None if match is None else match.score)


def _stated_rates(stated: dict[str, list[int | None]], group: str, types: Sequence[str]
                  ) -> dict[str, Any]:
    """Share of ``group``'s points the judge finds in full (score 2) in the user turns and
    in any turn, overall and per memory type; and for the interference points, the share
    each side states (score 2: stored, they would count against FMR)."""
    def full(scores: Sequence[int | None]) -> float:
        return _rate(sum(1 for x in scores if x == 2), len(scores))

    out: dict[str, Any] = {side: full(stated[f"{group}:{side}"]) for side in ("user", "any")}
    out["by_memory_type"] = {t: {side: full([x for x, ty in zip(
        stated[f"{group}:{side}"], types, strict=True) if ty == t]) for side in ("user", "any")}
        for t in sorted(set(types))}
    if group == "gold":
        out["interference"] = {side: full(stated[f"interference:{side}"])
                               for side in ("user", "any")}
    return out


def run_halumem(data_path: str | Path, *, client: Any, judge: str | Judge = "offline",
                answerer: str | AnswerFn | None = None, answer_fn: AnswerFn | None = None,
                json_path: str | Path | None = None, progress: bool = True,
                embedder: Embedder | None = None, search_filters: dict[str, Any] | None = None,
                cube_prefix: str = "halumem", print_table: bool = True,
                abstain_below: float | None = None, trace_path: str | Path | None = None,
                extractor: str | None = None, qa_search: str = "facts+turns",
                stated_in: bool | None = None) -> dict[str, Any]:
    """Evaluate the memos server behind ``client`` on a HaluMem-format file.

    ``client`` needs ``create_cube``, ``delete_cube``, ``add_messages``,
    ``session_memories`` and ``search`` (the SDK's signatures). Each user gets a fresh cube
    that is deleted afterwards. ``search_filters`` default to fact memories only (the units
    HaluMem calls memories). Returns the report dict (also written to ``json_path``).

    Each question's context is chosen by ``qa_search`` (:data:`QA_SEARCHES`; default the
    best facts then the best turns, 20 units in all) and comes with the calibrated
    ``coverage`` of its fact search (:mod:`memos.retrieval.coverage`: the search's own, or
    computed here from the fact hits for a client whose responses lack it; the model is
    fitted on fact hits). The offline answerer abstains ("not in memory") when it is below
    ``abstain_below`` (default :data:`ABSTAIN_BELOW`; 0 never abstains). *Evidence
    coverage* is, per question with evidence, the share of its evidence points the same
    judge scores 2 against the question's hits (``full``: what "covers" means), at least 1
    (``partial``), and the mean score / 2 (``weighted``). ``trace_path`` writes one JSON line per
    question (hits, coverage, evidence scores, the label given, the answer and label
    before any abstention, and the label abstaining would get) for ``memos eval
    halumem-calibrate``. ``extractor`` only names the
    server's extractor in the report. ``stated_in`` judges every point against the session's
    turns as well (see the module doc; default: with the offline judge only, since an LLM
    judge would take two more calls per point).
    """
    from tqdm import tqdm

    if qa_search not in QA_SEARCHES:
        raise InvalidInput(f"qa_search must be one of {', '.join(QA_SEARCHES)}, not "
                           f"{qa_search!r}")
    records = load_jsonl(data_path)
    the_judge = make_judge(judge, embedder=embedder)
    answer = answer_fn or make_answerer(answerer)
    filters = {"granularity": ["fact"]} if search_filters is None else search_filters

    gold: list[tuple[int | None, float]] = []
    gold_types: list[str] = []
    distractors: list[int | None] = []
    accuracies: list[tuple[int | None, bool]] = []
    upd_labels: list[str | None] = []
    upd_types: list[str] = []
    qa_labels: list[str | None] = []
    qa_types: list[str] = []
    qa_coverage: list[float] = []
    evid: list[tuple[str, list[int | None]]] = []  # question type, evidence scores
    abstained = 0
    threshold = ABSTAIN_BELOW if abstain_below is None else abstain_below
    trace = Path(trace_path).open("w", encoding="utf-8") if trace_path is not None else None
    add_times: list[float] = []
    search_times: list[float] = []
    n_sessions = n_memories = 0
    if stated_in is None:
        stated_in = the_judge.name.startswith("offline")
    # the judge's verdict on each point against the session's user turns / all its turns
    stated: dict[str, list[int | None]] = defaultdict(list)

    # diagnosis for the trace: every fact read back so far and every dialogue turn so far,
    # so an evidence point the hits miss can be told apart as ranked out / not extracted
    facts_seen: dict[str, str] = {}
    said: list[str] = []

    def search(cube_id: str, query: str, k: int, *, filters: dict[str, Any] = filters,
               timed: bool = True, explain: bool = False) -> tuple[list[Retrieved], float]:
        t0 = time.perf_counter()
        resp = client.search(cube_id, query=query, top_k=k, filters=filters, explain=explain)
        if timed:
            search_times.append(time.perf_counter() - t0)
        hits = _retrieved(resp)
        cov = getattr(resp, "coverage", None)
        if cov is None:
            cov = query_coverage(query, [h.text for h in hits])
        return hits, float(cov)

    def qa_context(cube_id: str, question: str) -> tuple[list[Retrieved], float]:
        # explained: a hybrid fact hit's cosine is what the offline answerer weighs
        if qa_search == "facts":
            return search(cube_id, question, QA_TOP_K, explain=True)
        facts, cov = search(cube_id, question, QA_TOP_K - QA_TURNS, explain=True)
        turns, _ = search(cube_id, question, 2 * QA_TURNS, filters={"granularity": ["turn"]})
        return facts + without_sources(turns, facts)[:QA_TURNS], cov

    total_sessions = sum(len(r.get("sessions", [])) for r in records)
    bar = tqdm(total=total_sessions, desc="halumem sessions", disable=not progress,
               unit="session")
    for ui, record in enumerate(records):
        subject = _subject(record)
        cube_id = f"{cube_prefix}-{ui}-{str(record.get('uuid', ''))[:8] or 'user'}"
        # one user's memory: the cube names its user (extraction and search read it)
        client.create_cube(cube_id, name=f"HaluMem {subject}",
                           metadata={"user_name": subject})
        try:
            for si, session in enumerate(record.get("sessions", [])):
                session_id = f"s{si}"
                dialogue = session.get("dialogue", [])
                messages = [{"id": f"{cube_id}-s{si}-t{j}", "role": turn["role"],
                             "speaker": subject if turn["role"] == "user" else "assistant",
                             "content": turn["content"],
                             "timestamp": _iso(turn.get("timestamp") or
                                               session.get("start_time", ""))}
                            for j, turn in enumerate(dialogue) if turn.get("content", "").strip()]
                if messages:
                    t0 = time.perf_counter()
                    client.add_messages(cube_id, session_id=session_id, messages=messages,
                                        sync=True)
                    add_times.append(time.perf_counter() - t0)
                n_sessions += 1
                memories = [m for m in client.session_memories(cube_id, session_id)
                            if _value(getattr(m, "granularity", "fact")) == "fact"
                            and _value(getattr(m, "status", "active")) == "active"]
                texts = [str(m.text) for m in memories if getattr(m, "text", None)]
                n_memories += len(texts)
                if trace is not None:
                    facts_seen.update((str(getattr(m, "id", i)), str(m.text))
                                      for i, m in enumerate(memories) if getattr(m, "text", None))
                    said.extend(m["content"] for m in messages)
                points = session.get("memory_points", []) or []
                g_points = [p for p in points if p.get("memory_source") != "interference"]
                i_points = [p for p in points if p.get("memory_source") == "interference"]
                for p in g_points:
                    match = the_judge.integrity(p["memory_content"], texts, subject=subject)
                    gold.append((None if match is None else match.score,
                                 float(p.get("importance", 1.0) or 0.0)))
                    gold_types.append(p.get("memory_type", "unknown"))
                for p in i_points:
                    match = the_judge.integrity(p["memory_content"], texts, subject=subject)
                    distractors.append(None if match is None else match.score)
                if stated_in:
                    _judge_stated(the_judge, dialogue, g_points, i_points, subject, stated)
                if points or texts:
                    dialogue_texts = [t["content"] for t in dialogue if t.get("content")]
                    # "included": about a field the session's memory points cover
                    # (distractors too: a stored distractor is about the user's job/city…)
                    gold_texts = [p["memory_content"] for p in points]
                    for text in texts:
                        acc = the_judge.accuracy(text, dialogue_texts, gold_texts,
                                                 subject=subject)
                        accuracies.append((None, False) if acc is None else acc)
                for p in g_points:
                    if not _is_update(p):
                        continue
                    hits, _ = search(cube_id, p["memory_content"], 10)
                    upd_labels.append(the_judge.update_label(
                        p["memory_content"], list(p["original_memories"]),
                        [h.text for h in hits], subject=subject))
                    upd_types.append(p.get("memory_type", "unknown"))
                for q in session.get("questions", []) or []:
                    hits, cov = qa_context(cube_id, q["question"])
                    if answer is None:
                        reply = offline_answer(q["question"], hits, subject=subject)
                    else:
                        reply = answer(q["question"], hits)
                    evidence = [e.get("memory_content", "") for e in q.get("evidence", [])]
                    label = the_judge.qa_label(q["question"], str(q["answer"]), evidence,
                                               reply, subject=subject)
                    abstain_label = the_judge.qa_label(q["question"], str(q["answer"]),
                                                       evidence, NOT_IN_MEMORY,
                                                       subject=subject)
                    answered, answered_label = reply, label
                    if answer is None and cov < threshold:
                        reply, label, abstained = NOT_IN_MEMORY, abstain_label, abstained + 1
                    qtype = q.get("question_type", "unknown")
                    qa_labels.append(label)
                    qa_types.append(qtype)
                    qa_coverage.append(cov)
                    texts_hit = [h.text for h in hits]
                    scores = []
                    for e in evidence:
                        hit_match = the_judge.integrity(e, texts_hit, subject=subject)
                        scores.append(None if hit_match is None else hit_match.score)
                    if evidence:
                        evid.append((qtype, scores))
                    if trace is not None:
                        diagnosis = _diagnose(the_judge, evidence, subject, cube_facts=list(
                            facts_seen.values()), turns=said, mixed=search(
                                cube_id, q["question"], 20,
                                filters={"granularity": ["fact", "turn"]}, timed=False)[0])
                        trace.write(json.dumps({
                            "user": ui, "session": si, "subject": subject,
                            "question": q["question"], "question_type": qtype,
                            "reference": str(q["answer"]), "evidence": evidence,
                            "evidence_scores": scores, "coverage": cov,
                            "hits": [{"text": h.text, "score": h.score,
                                      "metadata": _trace_metadata(h)} for h in hits],
                            **diagnosis,
                            "answer": reply, "label": label, "answered": answered,
                            "answered_label": answered_label, "abstain_label": abstain_label,
                        }, ensure_ascii=False) + "\n")
                bar.update(1)
        finally:
            try:
                client.delete_cube(cube_id)
            except Exception:  # noqa: BLE001 - cleanup must not hide the result
                pass
    bar.close()
    if trace is not None:
        trace.close()

    extraction = extraction_metrics(gold, distractors, accuracies)
    by_type: dict[str, dict[str, float]] = {}
    groups: dict[str, list[tuple[int | None, float]]] = defaultdict(list)
    for (s, imp), t in zip(gold, gold_types, strict=True):
        groups[t].append((s, imp))
    for t, items in sorted(groups.items()):
        m = extraction_metrics(items, [], [])
        by_type[t] = {"n": len(items), "recall": m["recall"],
                      "partial": _rate(sum(1 for s, _ in items if (s or 0) >= 1), len(items)),
                      "weighted_recall": m["weighted_recall"]}
    update = _label_rates(upd_labels, UPDATE_LABELS)
    upd_by: dict[str, dict[str, float]] = {}
    for t in sorted(set(upd_types)):
        labs = [lab for lab, ty in zip(upd_labels, upd_types, strict=True) if ty == t]
        upd_by[t] = {"n": len(labs), **_label_rates(labs, UPDATE_LABELS)}
    qa = _label_rates(qa_labels, QA_LABELS)
    qa_by: dict[str, dict[str, float]] = {}
    for t in sorted(set(qa_types)):
        labs = [lab for lab, ty in zip(qa_labels, qa_types, strict=True) if ty == t]
        qa_by[t] = {"n": len(labs), **_label_rates(labs, QA_LABELS)}
    report: dict[str, Any] = {
        "benchmark": "halumem",
        "data": str(data_path),
        "judge": the_judge.name,
        "approximate": the_judge.name.startswith("offline"),
        "extractor": extractor or "the server's (MEMOS_EXTRACTOR; default rules)",
        "qa_search": qa_search,
        "answerer": "offline (extractive)" if answer is None else getattr(
            answer, "model", getattr(answer, "__name__", "custom")),
        "users": len(records),
        "sessions": n_sessions,
        "extraction": {**extraction, "by_memory_type": by_type,
                       "counts": {"gold": len(gold), "interference": len(distractors),
                                  "memories": n_memories,
                                  "included": sum(1 for _, inc in accuracies if inc),
                                  "unparsed": sum(1 for s, _ in gold if s is None)
                                  + sum(1 for s in distractors if s is None)
                                  + sum(1 for s, _ in accuracies if s is None)},
                       "stated_in": _stated_rates(stated, "gold", gold_types)
                       if stated_in else None},
        "update": {**update, "n": len(upd_labels),
                   "unparsed": sum(1 for lab in upd_labels if lab is None),
                   "by_memory_type": upd_by,
                   "stated_in": _stated_rates(stated, "update", upd_types)
                   if stated_in else None},
        "qa": {**qa, "n": len(qa_labels),
               "unparsed": sum(1 for lab in qa_labels if lab is None),
               "abstained": _rate(abstained, len(qa_labels)),
               "abstain_below": threshold if answer is None else None,
               "mean_coverage": _rate(sum(qa_coverage), len(qa_coverage)),
               "by_question_type": qa_by},
        "evidence_coverage": {**_evidence_rates([sc for _, sc in evid]),
                              "by_question_type": {t: _evidence_rates(
                                  [sc for ty, sc in evid if ty == t])
                                  for t in sorted({ty for ty, _ in evid})}},
        "timings": {"add_session_s": _timing(add_times), "search_s": _timing(search_times)},
    }
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(report, indent=2))
    if print_table:
        print_report(report)
    return report


def print_report(report: dict[str, Any]) -> None:
    """Readable tables (percentages): the headline numbers, extraction and update per
    memory type, QA and evidence coverage per question type, and the timings."""
    ex, up, qa = report["extraction"], report["update"], report["qa"]
    ev = report.get("evidence_coverage", {})
    rows = [
        ("extraction", "recall", ex["recall"]), ("", "weighted recall", ex["weighted_recall"]),
        ("", "target precision", ex["target_precision"]), ("", "accuracy", ex["accuracy"]),
        ("", "FMR", ex["fmr"]), ("", "F1", ex["f1"]),
        ("update", "correct", up["correct"]), ("", "hallucination", up["hallucination"]),
        ("", "omission", up["omission"]), ("", "other", up["other"]),
        ("qa", "correct", qa["correct"]), ("", "hallucination", qa["hallucination"]),
        ("", "omission", qa["omission"]),
    ]
    if "abstained" in qa:
        rows += [("", "abstained", qa["abstained"]), ("", "mean coverage", qa["mean_coverage"])]
    if ev:
        rows += [("evidence", "covered (score 2)", ev["full"]),
                 ("", "partly (score>=1)", ev["partial"]), ("", "weighted", ev["weighted"])]
    approx = "  (approximate: offline judge)" if report.get("approximate") else ""
    print(f"HaluMem  judge: {report['judge']}{approx}  answerer: {report['answerer']}  "
          f"extractor: {report.get('extractor', '-')}  users: {report['users']}  "
          f"sessions: {report['sessions']}")
    if qa.get("abstain_below") is not None:
        print(f"offline answerer abstains below coverage {qa['abstain_below']:.2f}")
    print(f"{'task':<12}{'metric':<20}{'%':>8}")
    for task, metric, value in rows:
        print(f"{task:<12}{metric:<20}{100 * value:>8.2f}")
    st, ust = ex.get("stated_in"), up.get("stated_in")
    if st:
        print(f"stated in the dialogue (the judge on the session's turns, as if each were a "
              f"memory), user turns / any turn: memory points {100 * st['user']:.2f} / "
              f"{100 * st['any']:.2f}, update points {100 * ust['user']:.2f} / "
              f"{100 * ust['any']:.2f}, interference points "
              f"{100 * st['interference']['user']:.2f} / {100 * st['interference']['any']:.2f}")
    print(f"\n{'extraction by memory type':<34}{'n':>5}{'recall':>8}{'partly':>8}{'w.recall':>9}")
    for t, m in ex["by_memory_type"].items():
        print(f"{t[:33]:<34}{m['n']:>5}{100 * m['recall']:>8.2f}"
              f"{100 * m.get('partial', 0.0):>8.2f}{100 * m['weighted_recall']:>9.2f}")
    print(f"\n{'update by memory type':<34}{'n':>5}{'correct':>8}{'halluc.':>8}{'omiss.':>8}"
          f"{'other':>8}")
    for t, m in up["by_memory_type"].items():
        print(f"{t[:33]:<34}{m['n']:>5}{100 * m['correct']:>8.2f}{100 * m['hallucination']:>8.2f}"
              f"{100 * m['omission']:>8.2f}{100 * m['other']:>8.2f}")
    evt = ev.get("by_question_type", {})
    print(f"\n{'qa by question type':<34}{'n':>5}{'correct':>8}{'halluc.':>8}{'omiss.':>8}"
          f"{'evid.2':>8}{'evid.1+':>8}")
    for t, m in qa["by_question_type"].items():
        e = evt.get(t)
        cov = f"{100 * e['full']:>8.2f}{100 * e['partial']:>8.2f}" if e else f"{'-':>8}{'-':>8}"
        print(f"{t[:33]:<34}{m['n']:>5}{100 * m['correct']:>8.2f}{100 * m['hallucination']:>8.2f}"
              f"{100 * m['omission']:>8.2f}{cov}")
    t = report["timings"]
    a = t["add_session_s"]
    print(f"\nadd session (ingest + extraction + update, sync): mean {a['mean']:.2f} s, "
          f"p50 {a['p50']:.2f} s, p95 {a['p95']:.2f} s over {a['n']} sessions;   search: p50 "
          f"{t['search_s']['p50'] * 1000:.1f} ms, p95 {t['search_s']['p95'] * 1000:.1f} ms")


# --------------------------------------------------------------------------- CLI
def _extractor_setting(value: str | None) -> str | None:
    """``--extractor``: ``rules``/``none`` or a litellm model (``llm:`` optional) as the
    server's ``MEMOS_EXTRACTOR`` value; None keeps the server's default."""
    if value is None:
        return None
    if value in ("rules", "none") or value.startswith("llm:"):
        if value == "llm:":
            raise InvalidInput("--extractor llm: needs a model name (llm:<litellm model>)")
        return value
    return f"llm:{value}"


def _cmd_halumem(args: Any) -> int:
    """Evaluate the server at ``--base-url``, or a fresh local server started for the run
    (with ``--extractor`` as its extractor)."""
    from memos.client import MemosClient
    from memos.local_server import local_server

    extractor = _extractor_setting(args.extractor)
    options = {"judge": args.judge, "answerer": args.answerer, "json_path": args.json,
               "progress": not args.no_progress, "abstain_below": args.abstain_below,
               "trace_path": args.trace, "extractor": extractor,
               "qa_search": args.qa_search, "stated_in": True if args.stated_in else None}
    if args.base_url:
        if extractor is not None:
            raise InvalidInput("--extractor configures the local server this command starts; "
                               "with --base-url the server's own MEMOS_EXTRACTOR applies")
        with MemosClient(args.base_url, timeout=300) as client:
            run_halumem(args.data, client=client, **options)
        return 0
    env = {"MEMOS_EXTRACTOR": extractor} if extractor else None
    with local_server(env=env) as url, MemosClient(url, timeout=600) as client:
        run_halumem(args.data, client=client, **options)
    return 0


def _cmd_synth(args: Any) -> int:
    from memos.eval.halumem_synth import gate_rates, generate, write_jsonl

    records = generate(args.seed, args.users, sessions=args.sessions)
    path = write_jsonl(records, args.out)
    print(f"wrote {args.users} users to {path}")
    rates = gate_rates(records, seed=args.seed)
    print(f"faithfulness gate on planted facts: caught {100 * rates['caught']:.1f}% of "
          f"{rates['unsupported']} unsupported, passed {100 * rates['passed']:.1f}% of "
          f"{rates['supported']} supported")
    return 0


def add_halumem_commands(subparsers: Any) -> None:
    """Add ``halumem`` and ``halumem-synth`` to an argparse subparsers object."""
    p = subparsers.add_parser("halumem", help="HaluMem hallucination evaluation")
    p.add_argument("--data", required=True, help="HaluMem-format JSONL file")
    p.add_argument("--base-url", default=None,
                   help="memos server URL (default: a fresh local server)")
    p.add_argument("--judge", default="offline", help="'offline' or a litellm model name")
    p.add_argument("--answerer", default="offline",
                   help="'offline' (extractive, abstains below --abstain-below coverage) or "
                   "a litellm model name")
    p.add_argument("--extractor", default=None,
                   help="the local server's extractor: 'rules' (default), 'none' or a "
                   "litellm model name (also 'llm:<model>')")
    p.add_argument("--abstain-below", type=float, default=None, metavar="COVERAGE",
                   help=f"offline answerer: answer 'not in memory' below this search "
                   f"coverage (default {ABSTAIN_BELOW}; 0 never abstains)")
    p.add_argument("--qa-search", default="facts+turns", choices=QA_SEARCHES,
                   help=f"each question's context: the best {QA_TOP_K - QA_TURNS} facts then "
                   f"the best {QA_TURNS} turns those facts do not already hold (default), "
                   f"or the best {QA_TOP_K} facts")
    p.add_argument("--trace", default=None, metavar="FILE",
                   help="write one JSON line per question (hits, coverage, evidence scores, "
                   "labels) for 'memos eval halumem-calibrate'")
    p.add_argument("--json", required=True, help="write the JSON report here")
    p.add_argument("--stated-in", action="store_true",
                   help="score every point against its session's turns with an LLM judge "
                        "too (always done with the offline judge; two more judge calls a "
                        "point)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_halumem)
    s = subparsers.add_parser("halumem-synth", help="write a synthetic HaluMem-format file")
    s.add_argument("--seed", type=int, default=0, help="random seed")
    s.add_argument("--out", required=True, help="JSONL file to write")
    s.add_argument("--users", type=int, default=3, help="synthetic users")
    s.add_argument("--sessions", type=int, default=4, help="sessions per user")
    s.set_defaults(func=_cmd_synth)
