"""Memory updating: ADD / UPDATE / DELETE / NOOP for a new fact against what is known.

The updater is pure: given a new :class:`~memos.extract.fact.ExtractedFact` and the active facts
that may concern the same thing (same subject and attribute, plus near neighbours by
embedding — see :func:`candidates_for`), it returns a :class:`Decision`; the caller stores.

- **ADD** — new information (a new attribute, or another value of a multi-valued one such as
  a second hobby or pet).
- **UPDATE** — a single-valued attribute (job, city, partner, …) got a new value: the target
  is superseded, its ``valid_to`` becomes ``Decision.valid_to`` (the new fact's event time)
  and it stays in history.
- **DELETE** — an explicit retraction ("I no longer work at X", "I quit X", "I sold my
  car"): the target stops being true at ``Decision.valid_to``. A retirement ends the job it
  leaves and the employment status ("Ana is currently employed") together: the further
  facts a decision ends are ``Decision.also_ends``.
- **NOOP** — already known (same subject, attribute and value, or the same text); the
  caller records the extra source on the target. A statement of a known value that says
  more than it ("promoted to X, and it's been a journey balancing work with my health") is
  an ADD; a later value ends every statement of the old one.

Idempotence: replaying a session yields NOOPs — the same fact matches itself, and a value
older than the active one for a single-valued attribute never overwrites it.

>>> from memos.extract import ExtractInput, RulesExtractor
>>> fact = RulesExtractor().extract([ExtractInput("m1", "user", "Ana", "I moved to Berlin.")])[0]
>>> RulesUpdater().decide(fact, []).action
<Action.ADD: 'ADD'>
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import Enum
from typing import Any, Protocol

import numpy as np

from memos.embed import Embedder
from memos.extract.clauses import HYPOTHETICAL
from memos.extract.fact import ExtractedFact, ExtractInput, Extractor
from memos.extract.gate import GateVerdict
from memos.extract.gate import check as gate_check
from memos.extract.text import content_tokens, numbers_in
from memos.llm import CompletionFn, ask_json

__all__ = [
    "Action",
    "ActiveFact",
    "Decision",
    "Updater",
    "RulesUpdater",
    "LLMUpdater",
    "SINGLE_VALUED",
    "candidates_for",
    "plan",
    "UPDATE_PROMPT",
    "UPDATE_PROMPT_VERSION",
    "PlannedFact",
    "ingest_plan",
    "same_value",
    "same_attribute",
    "preference",
]

#: Attributes with one current value per subject; a new value supersedes the old one.
SINGLE_VALUED = frozenset({"job", "employer", "city", "age", "name", "partner", "car", "school",
                           "hometown", "major", "diet", "favorite_food", "favorite_color",
                           "favorite_movie", "favorite_book", "favorite_band",
                           "favorite_sport", "favorite_song", "favorite_drink"})


class Action(str, Enum):
    ADD = "ADD"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    NOOP = "NOOP"


@dataclass(frozen=True)
class ActiveFact:
    """What the updater needs to know about a stored, active fact."""

    id: str
    text: str
    subject: str = ""
    attribute: str = ""
    value: str = ""
    negated: bool = False
    valid_from: datetime | None = None
    observed_at: datetime | None = None
    source_message_ids: tuple[str, ...] = ()

    @classmethod
    def from_metadata(cls, id: str, text: str, metadata: dict[str, Any], *,
                      source_message_ids: Iterable[str] = ()) -> ActiveFact:
        """Build from a stored unit whose metadata came from ``ExtractedFact.metadata()``."""

        def when(key: str) -> datetime | None:
            raw = metadata.get(key)
            if isinstance(raw, datetime):
                return raw
            try:
                return datetime.fromisoformat(raw) if raw else None
            except (TypeError, ValueError):
                return None

        sources = tuple(source_message_ids) or tuple(
            s for s in [metadata.get("source_message_id")] if s)
        return cls(id=id, text=text, subject=str(metadata.get("subject", "")),
                   attribute=str(metadata.get("attribute", "")),
                   value=str(metadata.get("value", "")),
                   negated=bool(metadata.get("negated", False)), valid_from=when("valid_from"),
                   observed_at=when("observed_at"), source_message_ids=sources)


@dataclass(frozen=True)
class Decision:
    action: Action
    target_fact_id: str | None
    reason: str
    #: For UPDATE/DELETE: when the target stopped being true (the new fact's event time).
    valid_to: datetime | None = None
    #: Further facts the new one ends along with the target, at the same ``valid_to``
    #: (retiring ends the job and the "is employed" status).
    also_ends: tuple[str, ...] = ()


class Updater(Protocol):
    def decide(self, new: ExtractedFact, candidates: Sequence[ActiveFact]) -> Decision:
        ...


# --------------------------------------------------------------------------- helpers
@functools.lru_cache(maxsize=1 << 14)
def _norm_subject(s: str) -> str:
    return re.sub(r"'s\b", "", s.lower()).strip()


def _norm_text(s: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", s.lower()))


def same_attribute(a: str, b: str) -> bool:
    """The same attribute: equal keys, or two ``own:`` keys of which one names the other
    with fewer words ("own:incom" and "own:monthli_incom": "my income" and "my monthly
    income" are one attribute; "own:physical_health" and "own:mental_health" are two)."""
    if a == b:
        return True
    if not (a.startswith("own:") and b.startswith("own:")):
        return False
    wa, wb = set(a[4:].split("_")), set(b[4:].split("_"))
    return bool(wa and wb) and (wa <= wb or wb <= wa)


#: A stated preference in a fact's text: "<subject> dislikes playing golf because …",
#: "<subject> likes rock music, because …"; the object ends at a comma or "because".
_PREFERENCE = re.compile(
    r"^(?P<subj>.+?) (?P<verb>dislikes|likes|loves|enjoys|hates|prefers|is fond of)\s+"
    r"(?:to\s+)?(?:(?:play(?:ing)?|watch(?:ing)?|eat(?:ing)?|drink(?:ing)?|listen(?:ing)? to|"
    r"wear(?:ing)?|read(?:ing)?|do(?:ing)?)\s+)?(?P<obj>[^,.;!?]+?)(?:,|\s+because\b|[.;!?]|$)",
    re.IGNORECASE)
#: A turn towards liking something ("has started to appreciate", "now enjoys", "fan of").
_LIKING = re.compile(r"\b(?:appreciat\w*|enjoy\w*|lov(?:e|es|ed|ing)|lik(?:es|ed|ing)|"
                     r"fond of|fan of|embrac\w*|appeal\w*|favou?rite|excited about)\b",
                     re.IGNORECASE)
#: A turn away from something ("dislikes", "no longer enjoys", "lost interest in").
_DISLIKING = re.compile(r"\b(?:dislik\w*|hat(?:e|es|ed)|no longer (?:enjoy|like|love)s?|"
                        r"lost (?:interest|the appeal)|tired of|(?:interest|appreciation) "
                        r"(?:in \w+(?: \w+)? )?(?:has )?(?:decreased|faded|waned))\b",
                        re.IGNORECASE)


@functools.lru_cache(maxsize=1 << 14)
def preference(text: str, subject: str) -> tuple[bool, frozenset[str]] | None:
    """``(likes, object words)`` when ``text`` states ``subject``'s preference for one thing
    (at most four content words), else None."""
    m = _PREFERENCE.match(text)
    if m is None or _norm_subject(m["subj"]) != _norm_subject(subject):
        return None
    obj = frozenset(content_tokens(m["obj"]))
    if not obj or len(obj) > 4:
        return None
    return m["verb"].lower() not in ("dislikes", "hates"), obj


def _reverses(new: ExtractedFact, old: ActiveFact) -> bool:
    """``new`` turns ``old``'s stated preference around: "Ana dislikes puzzle games", then
    "Ana has started to appreciate puzzle games" (or the other way): same subject, every
    word of the object in the new fact, the opposite leaning and no negation of it."""
    if _norm_subject(new.subject) != _norm_subject(old.subject):
        return False
    pref = preference(old.text, old.subject)
    if pref is None:
        return False
    likes, obj = pref
    if not obj <= set(content_tokens(new.text)):
        return False
    past = _PAST_STANCE.search(new.text)
    if past is not None and obj <= set(content_tokens(past["obj"])):
        # "altering her previous dislike for bowling": the stance itself is called past
        stance = past["noun"] or past["verb"]
        return bool(_PAST_DISLIKE.match(stance)) != likes
    off = _OFF_LIST.search(new.text)
    if off is not None and obj <= set(content_tokens(off["obj"])):
        # "removing sugary sodas from my disliked list": the listed stance ends
        return bool(_PAST_DISLIKE.match(off["list"] or off["listof"])) != likes
    stated = preference(new.text, new.subject)
    if stated is not None:  # a preference itself: about the same thing, the other way
        return stated[0] != likes and obj <= stated[1]
    if likes:
        return bool(_DISLIKING.search(new.text))
    return bool(_LIKING.search(new.text)) and not new.negated and not _DISLIKING.search(
        new.text)


#: A stance named as past, and what it was about: "her previous dislike for bowling", "once
#: disliked spicy food", "used to hate jogging", "initially skeptical about bowling", "no
#: longer dislikes sushi".
_PAST_STANCE = re.compile(
    r"\b(?:(?:previous|former|earlier|initial|past) (?P<noun>dislike|distaste|"
    r"aversion|skepticism|scepticism|love|liking|fondness|passion|enthusiasm|preference)"
    r" (?:of|for|towards?|about)|(?:once|previously|initially|used to|at first|no longer) "
    r"(?P<verb>dislik(?:ed|es|e)|hat(?:ed|es|e)|avoid(?:ed|s)?|lov(?:ed|es|e)|lik(?:ed|es|e)|"
    r"enjoy(?:ed|s)?|(?:skeptical|sceptical|wary) (?:of|about)))\s+(?P<obj>[^,;.!?]+)",
    re.IGNORECASE)
#: Something taken off a list of likes or dislikes, and which list: "removing sugary sodas
#: from my disliked list", "took jogging off her list of dislikes", "crossed sushi off my
#: favourites list".
_OFF_LIST = re.compile(
    r"\b(?:remov(?:e|es|ed|ing)|tak(?:e|es|en|ing)|took|cross(?:es|ed|ing)?|strik(?:e|es|ing)|"
    r"struck|drop(?:s|ped|ping)?)\s+(?P<obj>[^,;.!?]+?)\s+(?:off|from)\s+(?:\S+\s+){0,2}?"
    r"(?:list of (?P<listof>dislikes|likes|favou?rites|loves)|(?P<list>dislike[sd]?|"
    r"like[sd]?|favou?rites?|loved?)\s+list)\b", re.IGNORECASE)
#: Which of those stances lean against their object (the others lean towards it).
_PAST_DISLIKE = re.compile(r"^(?:dislik|distaste|aversion|s[ck]eptic|hat|avoid|wary)",
                           re.IGNORECASE)


#: A stated change of state: "moved from Boston to Chicago", "my preferences have shifted
#: from road trips to city breaks", "my health changed from Normal to Affected"; the words
#: before the verb name what changed ("my health").
_CHANGE_FROM = re.compile(
    r"(?P<topic>[^,;.!?]*?)\b(?:shift|shifts|shifted|shifting|mov(?:e|es|ed|ing)|"
    r"transition(?:s|ed|ing)?|switch(?:es|ed|ing)?|chang(?:e|es|ed|ing)|went|gone|"
    r"evolv(?:e|es|ed|ing)|turn(?:s|ed|ing)?)\b[^,;.!?]*?\bfrom\s+(?P<old>[^,;.!?]+?)"
    r"\s+(?:to|into|towards?)\s+(?P<new>[^,;.!?]+)", re.IGNORECASE)
#: "used to favor nature retreats, but now …": the old state is what follows the verb.
_USED_TO = re.compile(r"\bused to \w+ (?P<old>[^,;.!?]+?),? but (?:now|these days|lately)"
                      r"\b(?P<new>[^,;.!?]*)", re.IGNORECASE)


@functools.lru_cache(maxsize=1 << 14)
def stated_change(text: str, subject: str) -> tuple[frozenset[str], frozenset[str],
                                                     frozenset[str]] | None:
    """``(topic, old, new)`` content words when ``text`` states that something of
    ``subject``'s changed from one state to another, else None. The subject's own name
    is not a topic word ("Ana's health changed from …": the topic is "health")."""
    m = _CHANGE_FROM.search(text) or _USED_TO.search(text)
    if m is None:
        return None
    name = set(content_tokens(subject))
    old = frozenset(content_tokens(m["old"])) - name
    new = frozenset(content_tokens(m["new"])) - name
    if not old or len(old) > 6 or old <= new:
        return None
    topic = frozenset(content_tokens(m.groupdict().get("topic") or "")) - name - _NOT_TOPICS
    return topic, old, new


#: Words before a change verb that do not say what changed ("it's fascinating how …").
_NOT_TOPICS = frozenset(content_tokens("recent recently lately fascinating interesting"))


def _changed_away(new: ExtractedFact, old: ActiveFact) -> bool:
    """``new`` states that the state ``old`` describes has changed: "Ana lives in Boston",
    then "Ana moved from Boston to Chicago". Same subject; ``old`` is a plain statement of
    the state changed from (all the "from" words, several of them, or one that is its
    value with the topic, if any, shared), not one already of the "to" state and not a
    change itself (a past move is history, not the state it left)."""
    if _norm_subject(new.subject) != _norm_subject(old.subject) or old.negated:
        return False
    change = stated_change(new.text, new.subject)
    if change is None or stated_change(old.text, old.subject) is not None:
        return False
    topic, was, now = change
    words = set(content_tokens(old.text))
    if (not was <= words or (now and now <= words) or _STATE_CHANGE_WORDS.search(old.text)
            or not _states(old)):
        return False
    if len(was) >= 2:
        return True
    return same_value(old.value, " ".join(was)) and (not topic or bool(topic & words))


def _states(fact: ActiveFact) -> bool:
    """Whether ``fact`` states how things are (a preference, a single-valued attribute,
    "Ana is …", "Ana finds cricket too long", "Ana lives in …") rather than what happened
    ("Ana attended a nature retreat"), which no later change undoes."""
    if fact.attribute in SINGLE_VALUED or fact.attribute.startswith("own:"):
        return True
    if preference(fact.text, fact.subject) is not None:
        return True
    head = re.escape(fact.subject)
    return re.match(rf"{head}(?:'s(?: [\w-]+){{1,3}})? {_STATE_VERBS}\b", fact.text,
                    re.IGNORECASE) is not None


_STATE_VERBS = (r"(?:is|are|remains|stays|finds|feels|prefers|favou?rs|likes|loves|enjoys|"
                r"dislikes|hates|lives|works|is currently|currently \w+s)")


#: A fact that tells of a change itself ("transitioned into tech"), which a later change
#: does not end.
_STATE_CHANGE_WORDS = re.compile(r"\b(?:transition\w*|mov(?:ed|ing) (?:to|into)|switch\w*|"
                                 r"shift\w*|used to)\b", re.IGNORECASE)


def _job_at(fact: ActiveFact, employer: str) -> bool:
    """Whether ``fact`` is a job held at ``employer`` (a ``job`` fact whose text names it:
    "Ana works at Acme Labs as an engineer" for "acme labs")."""
    want = _value_tokens(employer)
    return (fact.attribute == "job" and not fact.negated and bool(want)
            and want <= set(content_tokens(fact.text)))


#: A fact whose statement is that its subject has retired ("Ana retired", "Ana is retired
#: now", "Ana has finally made the decision to retire from …"), not one that passes through
#: a retirement on the way to something else ("After retiring from baseball, Ana …").
_RETIRED = (r"(?:has |had |is )?(?:just |finally |recently |officially |now )?(?:retired|"
            r"(?:made the decision|decided) to retire)\b")
#: What a retirement is from, when it is from work: "from Ana's role as …", "from my job".
_FROM_WORK = re.compile(r"\s+from\b[^,;.]*?\b(?:role|job|position|post|career|work|"
                        r"company|employer)\b", re.IGNORECASE)
#: What states that someone is in work: "Ana is currently employed", "Ana's employment status
#: is employed", "Ana is self-employed".
_EMPLOYED = re.compile(r"\b(?:employed|employment status)\b", re.IGNORECASE)


def _says_retired(fact: ExtractedFact | ActiveFact) -> bool:
    """Whether ``fact`` says its subject retired from work: retired with no "from" ("Ana
    retired last month"), or from a role, job or employer ("retired from Ana's role at
    Acme"); "retired from baseball" or "from competitive running" is not a retirement
    from work."""
    m = re.match(rf"{re.escape(fact.subject)} {_RETIRED}", fact.text, re.IGNORECASE)
    if m is None:
        return False
    rest = fact.text[m.end():]
    return (not re.match(r"\s+from\b", rest, re.IGNORECASE) or bool(_FROM_WORK.match(rest))
            or fact.negated and fact.attribute == "employer")


def _in_work(fact: ActiveFact) -> bool:
    """Whether ``fact`` states its subject's employment status as in work ("Ana is currently
    employed"): not a retirement, a negation or a change ("transitioned into tech")."""
    return (not fact.negated and bool(_EMPLOYED.search(fact.text)) and _states(fact)
            and not _STATE_CHANGE_WORDS.search(fact.text) and not _says_retired(fact))


def _retired_from(new: ExtractedFact, facts: Iterable[ActiveFact]
                  ) -> tuple[list[ActiveFact], list[ActiveFact]]:
    """What ``new``, a retirement, ends among ``facts``: (the jobs, the employment status).
    A retirement from an employer ends the job held there ("retired from my role at Acme");
    one that names none ends every job ("I retired last year")."""
    mine = [f for f in facts if _norm_subject(f.subject) == _norm_subject(new.subject)
            and not f.negated and not _says_retired(f)]
    if new.negated and new.attribute == "employer":
        jobs = [f for f in mine if _job_at(f, new.value) or (
            f.attribute == "employer" and same_value(f.value, new.value))]
    else:
        jobs = [f for f in mine if f.attribute in ("job", "employer")]
    return jobs, [f for f in mine if f not in jobs and _in_work(f)]


def _value_tokens(s: str) -> set[str]:
    return set(content_tokens(s))


def same_value(a: str, b: str) -> bool:
    """Values match when their content words are equal or one contains the other."""
    ta, tb = _value_tokens(a), _value_tokens(b)
    if not ta or not tb:
        return _norm_text(a) == _norm_text(b)
    return ta <= tb or tb <= ta


def _says_no_more(new: str, old: str) -> bool:
    """For a single-valued attribute: the new value adds nothing to the old one (equal, or
    its words are a subset: "Berlin" after "Berlin, Germany"). "senior director" after
    "director" adds a word: a changed value, not a repeat."""
    tn, to = _value_tokens(new), _value_tokens(old)
    if not tn or not to:
        return _norm_text(new) == _norm_text(old)
    return tn <= to


#: More content words than this, new beyond what a fact of the same value says, and the
#: statement is more than a repeat ("I've been promoted to Head of Initiatives, and it's
#: been quite a journey balancing my career with managing Chronic Fatigue Syndrome").
MAX_REPEATED_WORDS = 2


def _says_more(new: ExtractedFact, old: ActiveFact) -> bool:
    """``new`` says more than ``old``, a fact of the same attribute and value: over
    :data:`MAX_REPEATED_WORDS` content words that ``old``'s text lacks (the subject's name
    aside). Such a statement is stored too, not dropped as already known."""
    novel = set(content_tokens(new.text)) - set(content_tokens(old.text)) - set(
        content_tokens(new.subject))
    return len(novel) > MAX_REPEATED_WORDS


def _event_time(f: ExtractedFact | ActiveFact) -> datetime | None:
    t = f.valid_from or f.observed_at
    return t.replace(tzinfo=None) if t is not None and t.tzinfo is not None else t


def _seen(f: ExtractedFact | ActiveFact) -> datetime | None:
    """When the fact was stated (falls back to its event time): orders what we learned."""
    t = f.observed_at or f.valid_from
    return t.replace(tzinfo=None) if t is not None and t.tzinfo is not None else t


def candidates_for(new: ExtractedFact, active: Iterable[ActiveFact], *,
                   embedder: Embedder | None = None, k: int = 5,
                   min_similarity: float = 0.75) -> list[ActiveFact]:
    """Active facts with the same (subject, attribute), plus up to ``k`` near neighbours.

    Neighbours (cosine ≥ ``min_similarity`` with ``embedder``) catch facts that the
    extractor keyed differently ("Ana's job" vs "Ana works as"), so that duplicates NOOP.
    """
    pool = list(active)
    key = (_norm_subject(new.subject), new.attribute)
    same = [a for a in pool if same_attribute(a.attribute, key[1])
            and _norm_subject(a.subject) == key[0]]
    if new.negated and key[1] == "employer":
        # leaving an employer ends the job held there ("works at Acme as an engineer")
        same += [a for a in pool if _norm_subject(a.subject) == key[0]
                 and _job_at(a, new.value)]
    if _LIKING.search(new.text) or _DISLIKING.search(new.text) or _PAST_STANCE.search(
            new.text) or _OFF_LIST.search(new.text):
        # a preference it may turn around, whatever attribute either was keyed by
        same += [a for a in pool if not same_attribute(a.attribute, key[1])
                 and _reverses(new, a)]
    if _says_retired(new):
        # the work it ends, whatever attribute that was keyed by
        _extend(same, itertools.chain(*_retired_from(new, pool)))
    if stated_change(new.text, new.subject) is not None:
        # the state it says has changed, whatever attribute that was keyed by
        _extend(same, (a for a in pool if _changed_away(new, a)))
    if embedder is None:
        return same
    chosen = {id(a) for a in same}  # by identity: equality would compare every field
    rest = [a for a in pool if id(a) not in chosen]
    if not rest:
        return same
    vecs = np.asarray(embedder.embed([new.text] + [a.text for a in rest]), dtype=np.float32)
    sims = vecs[1:] @ vecs[0]
    order = np.argsort(-sims)[:k]
    return same + [rest[i] for i in order if sims[i] >= min_similarity]


def _extend(chosen: list[ActiveFact], more: Iterable[ActiveFact]) -> None:
    """Add to ``chosen`` the facts of ``more`` it does not hold yet (by identity: equality
    would compare every field)."""
    held = {id(a) for a in chosen}
    chosen.extend([a for a in more if id(a) not in held])


# --------------------------------------------------------------------------- rules
@dataclass
class RulesUpdater:
    """Deterministic update rules (see the module doc)."""

    single_valued: frozenset[str] = SINGLE_VALUED
    embedder: Embedder | None = None
    duplicate_similarity: float = 0.95
    name: str = "rules-update/1"

    def decide(self, new: ExtractedFact, candidates: Sequence[ActiveFact]) -> Decision:
        key = (_norm_subject(new.subject), new.attribute)
        same_key = [c for c in candidates if _norm_subject(c.subject) == key[0]
                    and same_attribute(c.attribute, key[1])]
        new_time = _event_time(new)
        new_seen = _seen(new)

        # 1. already known: same text, or same key + value + polarity
        for c in candidates:
            if _norm_text(c.text) == _norm_text(new.text):
                return Decision(Action.NOOP, c.id, f"same statement as {c.id}")
        for c in same_key:
            if c.negated == new.negated and (same_value(c.value, new.value) if not self._single(
                    key[1]) else _says_no_more(new.value, c.value)) and not _says_more(new, c):
                return Decision(Action.NOOP, c.id,
                                f"already known: {key[1]} = {c.value!r} ({c.id})")
        dup = self._near_duplicate(new, [c for c in candidates if c.negated == new.negated])
        if dup is not None:
            return dup

        if HYPOTHETICAL.search(new.text):
            # "Ana is considering quitting her job at Acme": weighed, not done
            return Decision(Action.ADD, None, "a consideration or hypothetical: ends nothing")

        # 2. a preference turned around supersedes the old one
        turned = [c for c in candidates if _reverses(new, c)]
        if turned:
            target = _latest(turned)
            return Decision(Action.UPDATE, target.id,
                            f"preference turned around: {target.text!r} -> {new.text!r}",
                            valid_to=new_time)

        # 3. a stated change ("moved from Boston to Chicago") ends the state it left
        left = [c for c in candidates if _changed_away(new, c)]
        if left:
            target = _latest(left)
            return Decision(Action.UPDATE, target.id,
                            f"changed from what {target.text!r} states: {new.text!r}",
                            valid_to=new_time)

        # 4. a retirement ends the job it leaves and the employment status
        if _says_retired(new):
            jobs, status = _retired_from(new, candidates)
            if jobs or status:
                target = _latest(jobs or status)
                rest = tuple(c.id for c in jobs + status if c is not target)
                return Decision(Action.DELETE, target.id, f"retired: ends {target.text!r}"
                                + (f" and {len(rest)} more" if rest else ""),
                                valid_to=new_time, also_ends=rest)

        # 5. retraction
        if new.negated:
            live = [c for c in same_key if not c.negated and (
                not new.value or same_value(c.value, new.value)
                or self._single(key[1]) and not _value_tokens(new.value))]
            if not live and key[1] == "employer":
                live = [c for c in candidates if _norm_subject(c.subject) == key[0]
                        and _job_at(c, new.value)]
            if live:
                target = _latest(live)
                return Decision(Action.DELETE, target.id,
                                f"retraction of {key[1]} = {target.value!r}: {new.text}",
                                valid_to=new_time,
                                also_ends=tuple(c.id for c in live if c is not target))
            return Decision(Action.ADD, None, "retraction of something not on record; "
                            "kept as a negative fact")

        # 6. new value of a single-valued attribute
        if self._single(key[1]) and same_key and key[1].startswith("own:") and not any(
                _same_kind(new.value, c.value) for c in same_key):
            # "my income is 11800 USD" then "my income is stable": a quantity and a
            # description are two aspects of the attribute, not one value replacing another
            return Decision(Action.ADD, None, f"another aspect of {key[1]!r}: "
                            f"{new.value!r} is not the kind of value {same_key[0].value!r} is")
        if self._single(key[1]) and same_key and key[1].startswith("own:") and (
                _described(new.value) or all(_described(c.value) for c in same_key)):
            # "my network has been instrumental in my career growth": a description of the
            # attribute, which adds to what else is said of it, not a value that replaces one
            return Decision(Action.ADD, None, f"a description of {key[1]!r}, not a value")
        if self._single(key[1]) and same_key:
            target = _latest([c for c in same_key if _same_kind(new.value, c.value)]
                             or same_key)
            target_seen = _seen(target)
            if new_seen is not None and target_seen is not None and new_seen < target_seen:
                return Decision(Action.NOOP, target.id,
                                f"older than the active value {target.value!r} "
                                f"(stated {target_seen.isoformat()}); newer information is kept")
            if _says_no_more(new.value, target.value):
                # the same value again, with more said (step 1): both statements stand
                return Decision(Action.ADD, None, f"{key[1]} = {target.value!r} again, "
                                "with more said")
            # every statement of the old value ends with it
            also = tuple(c.id for c in same_key if c is not target and not c.negated
                         and _says_no_more(c.value, target.value))
            return Decision(Action.UPDATE, target.id,
                            f"{key[1]} changed from {target.value!r} to {new.value!r}",
                            valid_to=new_time, also_ends=also)
        return Decision(Action.ADD, None,
                        "new information" if not same_key else
                        f"another value of multi-valued {key[1]!r}")

    def _single(self, attribute: str) -> bool:
        """Single-valued: a named attribute (job, city, …) or an ``own:`` attribute, the
        value a speaker states their own attribute has ("my monthly income is …")."""
        return attribute in self.single_valued or attribute.startswith("own:")

    def _near_duplicate(self, new: ExtractedFact, candidates: Sequence[ActiveFact]
                        ) -> Decision | None:
        if self.embedder is None or not candidates:
            return None
        vecs = np.asarray(self.embedder.embed([new.text] + [c.text for c in candidates]),
                          dtype=np.float32)
        sims = vecs[1:] @ vecs[0]
        best = int(np.argmax(sims))
        if sims[best] >= self.duplicate_similarity:
            return Decision(Action.NOOP, candidates[best].id,
                            f"near-duplicate of {candidates[best].id} "
                            f"(cosine {sims[best]:.2f})")
        return None


#: A value of more content words than this is a description ("has been instrumental in
#: supporting me through this process"), not a value ("18,000 usd", "senior director").
MAX_VALUE_WORDS = 3


def _described(value: str) -> bool:
    return not numbers_in(value) and len(content_tokens(value)) > MAX_VALUE_WORDS


def _same_kind(a: str, b: str) -> bool:
    """Both values are quantities (they hold a number) or both are descriptions."""
    return bool(numbers_in(a)) == bool(numbers_in(b))


def _latest(facts: Sequence[ActiveFact]) -> ActiveFact:
    return max(facts, key=lambda f: (_event_time(f) or datetime.min, f.id))


# --------------------------------------------------------------------------- LLM
UPDATE_PROMPT = """You maintain a long-term memory. Decide what to do with a NEW fact given
the EXISTING active facts (each with an id). Answer JSON only:
{"action": "ADD" | "UPDATE" | "DELETE" | "NOOP", "target_id": str | null, "reason": str}
- ADD: new information not covered by any existing fact.
- UPDATE: the new fact replaces an existing fact's value (e.g. a new job or city);
  target_id is the replaced fact.
- DELETE: the new fact retracts an existing fact ("I no longer work at X");
  target_id is the retracted fact.
- NOOP: the new fact is already known; target_id is the fact that already says it.
"""
UPDATE_PROMPT_VERSION = "llm-update/1"


@dataclass
class LLMUpdater:
    """Update decisions by any litellm model, with the rules as guard rails.

    Exact duplicates are answered NOOP without calling the model (replay stays idempotent
    and free); an unparseable answer or an unknown ``target_id`` falls back to the rules,
    and the reason says so.
    """

    model: str
    completion_kwargs: dict[str, Any] = field(default_factory=dict)
    completion: CompletionFn | None = None
    fallback: RulesUpdater = field(default_factory=RulesUpdater)
    name: str = UPDATE_PROMPT_VERSION

    def decide(self, new: ExtractedFact, candidates: Sequence[ActiveFact]) -> Decision:
        rules = self.fallback.decide(new, candidates)
        if rules.action is Action.NOOP and "older than" not in rules.reason:
            return rules
        existing = [{"id": c.id, "text": c.text} for c in candidates]
        payload = ask_json(self.completion, model=self.model, system=UPDATE_PROMPT,
                           user=json.dumps({"new": new.text, "existing": existing},
                                           ensure_ascii=False),
                           options=self.completion_kwargs)
        ids = {c.id for c in candidates}
        if payload is None:
            return replace(rules, reason=f"LLM answer unparseable; rules: {rules.reason}")
        try:
            action = Action(str(payload.get("action", "")).upper())
        except ValueError:
            return replace(rules, reason=f"LLM action {payload.get('action')!r} unknown; "
                                         f"rules: {rules.reason}")
        target = payload.get("target_id")
        if action is Action.ADD:
            target = None
        elif target not in ids:
            return replace(rules, reason=f"LLM target {target!r} unknown; rules: {rules.reason}")
        valid_to = _event_time(new) if action in (Action.UPDATE, Action.DELETE) else None
        # the model names one target; what the rules end with that same target still ends
        also = rules.also_ends if (action, target) == (rules.action, rules.target_fact_id) \
            else ()
        return Decision(action, target, f"LLM ({self.model}): {payload.get('reason', '')}",
                        valid_to=valid_to, also_ends=also)


# --------------------------------------------------------------------------- batch
def plan(facts: Sequence[ExtractedFact], active: Sequence[ActiveFact], updater: Updater, *,
         id_factory: Callable[[ExtractedFact], str], embedder: Embedder | None = None
         ) -> tuple[list[tuple[ExtractedFact, Decision]], list[ActiveFact]]:
    """Decide for ``facts`` in order, each seeing the effect of the ones before it.

    Returns the decisions and the resulting active set (what a store would hold after
    applying them). ``id_factory`` names the fact an ADD/UPDATE creates.
    """
    current = list(active)
    out: list[tuple[ExtractedFact, Decision]] = []
    for fact in facts:
        decision = updater.decide(fact, candidates_for(fact, current, embedder=embedder))
        out.append((fact, decision))
        if decision.action in (Action.UPDATE, Action.DELETE):
            current = _without(current, decision)
        if decision.action in (Action.ADD, Action.UPDATE):
            current.append(ActiveFact.from_metadata(id_factory(fact), fact.text,
                                                    fact.metadata()))
    return out, current


def _without(active: Sequence[ActiveFact], decision: Decision) -> list[ActiveFact]:
    """``active`` less what ``decision`` ends (its target and ``also_ends``)."""
    ended = {decision.target_fact_id, *decision.also_ends}
    return [c for c in active if c.id not in ended]


# --------------------------------------------------------------------------- ingest pipeline
@dataclass(frozen=True)
class PlannedFact:
    """One extracted fact with everything the store needs to persist it.

    ``status`` is ``"quarantined"`` (gate failed: store it, never index it, show
    ``status_reason``), ``"active"`` (ADD/UPDATE/DELETE: store it active) or ``"noop"``
    (already known: store nothing new, add ``fact``'s source span to ``decision.target``).
    For UPDATE the target becomes ``superseded`` with ``valid_to = decision.valid_to``; for
    DELETE the target is retracted (``deleted`` or ``archived``, ``valid_to`` likewise).
    """

    fact: ExtractedFact
    verdict: GateVerdict
    decision: Decision | None
    status: str
    status_reason: str


def ingest_plan(messages: Sequence[ExtractInput], active: Sequence[ActiveFact], *,
                extractor: Extractor, updater: Updater | None = None,
                embedder: Embedder | None = None, gate_embedder: Embedder | None = None,
                session_time: datetime | None = None,
                id_factory: Callable[[ExtractedFact], str] | None = None,
                ) -> list[PlannedFact]:
    """extract → gate → update for one batch of messages against the cube's active facts.

    Pure: nothing is stored. Facts are decided in order, each seeing the effect of the
    ones before it (``id_factory`` names the facts planned so far, default
    ``"{source_message_id}#{i}"``); ``embedder`` finds near-duplicate candidates,
    ``gate_embedder`` adds the gate's similarity check. The gate takes a message's speaker
    as support for what the message says about them.
    """
    updater = updater or RulesUpdater()
    by_id = {m.id: m for m in messages}
    current = list(active)
    out: list[PlannedFact] = []
    for i, fact in enumerate(extractor.extract(messages, session_time=session_time)):
        source = by_id.get(fact.source_message_id)
        span_text = source.content[fact.span[0]:fact.span[1]] if source is not None else ""
        speakers = [source.speaker] if source is not None and source.speaker else []
        verdict = gate_check(fact, span_text, embedder=gate_embedder, speakers=speakers)
        if not verdict.supported:
            out.append(PlannedFact(fact, verdict, None, "quarantined",
                                   "unsupported by its source: " + "; ".join(verdict.reasons)))
            continue
        decision = updater.decide(fact, candidates_for(fact, current, embedder=embedder))
        if decision.action is Action.NOOP:
            out.append(PlannedFact(fact, verdict, decision, "noop", decision.reason))
            continue
        if decision.action in (Action.UPDATE, Action.DELETE):
            current = _without(current, decision)
        new_id = id_factory(fact) if id_factory else f"{fact.source_message_id}#{i}"
        current.append(ActiveFact.from_metadata(new_id, fact.text, fact.metadata()))
        out.append(PlannedFact(fact, verdict, decision, "active", decision.reason))
    return out
