"""A synthetic HaluMem-format data set: users, multi-session dialogues, memory points,
distractors and questions of HaluMem's six types (format: ``shared/HALUMEM.md``).

The real HaluMem data is licensed CC-BY-NC-ND and not shipped; this generator makes a
templated but varied stand-in, deterministic per seed, for tests and smoke runs:

- each user has a persona (job, city, pet, hobby, sibling, partner, food, car, school, age,
  allergy, instrument, employer, language …), stated over several sessions in varied
  phrasings (some deliberately hard: embedded clauses, "we", leading adverbials);
- later sessions change single-valued attributes (``is_update: "True"`` with
  ``original_memories``) and report dated events with relative dates ("last week");
- interference points are things said that must *not* become memory (hypotheticals,
  wishes, other people's facts, reported speech, assistant suggestions, questions), each
  with a ``reason`` and ``imitates`` (the memory they look like);
- questions: Basic Fact Recall, Dynamic Update, Multi-hop Inference, Generalization &
  Application, Memory Conflict, Memory Boundary (answer "unknown", empty evidence).

:func:`planted_facts` tampers with facts extracted from a generated dialogue (changed
number, name, negation or value) to measure how many unsupported facts the gate catches.

>>> records = generate(seed=1, users=1)
>>> sorted(records[0])
['persona_info', 'sessions', 'uuid']
"""

from __future__ import annotations

import json
import random
import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from memos.extract import ExtractedFact, ExtractInput, Extractor, RulesExtractor, check

__all__ = [
    "generate",
    "write_jsonl",
    "planted_facts",
    "PlantedFact",
    "TIME_FORMAT",
    "parse_time",
    "QUESTION_TYPES",
    "user_name",
    "dialogue_inputs",
    "main",
    "gate_rates",
]

TIME_FORMAT = "%b %d, %Y, %H:%M:%S"
QUESTION_TYPES = ("Basic Fact Recall", "Dynamic Update", "Multi-hop Inference",
                  "Generalization & Application", "Memory Conflict", "Memory Boundary")
PERSONA, EVENT, RELATION = "Persona Memory", "Event Memory", "Relationship Memory"


def parse_time(value: str) -> datetime:
    """Parse HaluMem's "Jan 15, 2029, 15:12:20" (or ISO) timestamps."""
    for fmt in (TIME_FORMAT, "%B %d, %Y, %H:%M:%S", "%b %d, %Y", "%B %d, %Y"):
        try:
            return datetime.strptime(value.strip(), fmt)
        except ValueError:
            continue
    return datetime.fromisoformat(value.strip())


def _fmt(t: datetime) -> str:
    return t.strftime(TIME_FORMAT)


def _long_date(d: date) -> str:
    return f"{d.strftime('%B')} {d.day}, {d.year}"


FIRST_NAMES = [("Ana", "F"), ("Bruno", "M"), ("Chloe", "F"), ("Daniel", "M"), ("Elena", "F"),
               ("Farid", "M"), ("Greta", "F"), ("Hiro", "M"), ("Ines", "F"), ("Jonas", "M"),
               ("Keiko", "F"), ("Liam", "M"), ("Maya", "F"), ("Nikolai", "M"), ("Olivia", "F"),
               ("Pedro", "M"), ("Quinn", "F"), ("Rafael", "M"), ("Sofia", "F"), ("Tomas", "M")]
OTHER_NAMES = ["Mia", "Leo", "Zoe", "Omar", "Lena", "Ivan", "Nora", "Felix", "Iris", "Hugo",
               "Clara", "Emil", "Rosa", "Theo", "Vera", "Anton", "Lucia", "Marco", "Elsa", "Paul"]
PET_NAMES = ["Rex", "Luna", "Biscuit", "Milo", "Pepper", "Olive", "Mochi", "Ziggy", "Nala",
             "Toby", "Kiwi", "Gizmo"]
PET_KINDS = ["dog", "cat", "parrot", "rabbit", "hamster", "turtle"]
JOBS = ["nurse", "teacher", "software engineer", "architect", "pharmacist", "chef",
        "photographer", "accountant", "journalist", "electrician", "librarian", "dentist",
        "translator", "pilot", "carpenter", "veterinarian"]
CITIES = ["Berlin", "Lisbon", "Toronto", "Austin", "Melbourne", "Dublin", "Kyoto", "Denver",
          "Oslo", "Prague", "Seville", "Montreal", "Edinburgh", "Valencia", "Portland", "Munich"]
HOBBIES = ["hiking", "painting", "rock climbing", "pottery", "chess", "gardening",
           "photography", "yoga", "baking", "cycling", "knitting", "surfing"]
FOODS = ["sushi", "ramen", "tacos", "lasagna", "pho", "paella", "dumplings", "curry",
         "falafel", "risotto"]
CARS = ["Toyota Prius", "Honda Civic", "Tesla Model 3", "Subaru Outback", "Ford Focus",
        "Volvo XC40", "Mazda CX-5", "Kia Niro"]
SCHOOLS = ["the University of Toronto", "Trinity College", "Stanford University",
           "the University of Lisbon", "Kyoto University", "McGill University"]
EMPLOYERS = ["Siemens", "Spotify", "Deloitte", "Zalando", "Shopify", "Philips", "Lufthansa",
             "Atlassian", "Nokia", "Ikea"]
ALLERGIES = ["peanuts", "shellfish", "pollen", "penicillin", "dairy"]
INSTRUMENTS = ["guitar", "piano", "violin", "drums", "cello", "ukulele"]
LANGUAGES = ["Spanish", "Japanese", "German", "Portuguese", "Italian", "Korean"]
PLACES = ["the Louvre", "the science museum", "the botanical garden", "the aquarium",
          "the old castle", "the national gallery"]

GREETINGS = ["Hi there!", "Hello again.", "Hey, good to talk to you.", "Good morning!",
             "Hi! How are you today?", "Hey! Got a minute?"]
CHITCHAT = ["The weather has been so strange lately.", "Haha, that's funny.",
            "Thanks, that's really helpful!", "Can you recommend a good podcast?",
            "What do you think about rainy days?", "Okay, sounds good.",
            "How do you remember all this?", "Anyway, what should I cook tonight?"]
ASSISTANT_ACKS = ["That's great to hear! Let me know if there's anything I can help with.",
                  "Thanks for sharing that with me.", "I'm happy to help with that.",
                  "That sounds wonderful!", "Good to know. Is there anything else on your mind?",
                  "I understand. Feel free to tell me more."]
ASSISTANT_RESTATE = ["So you {gist}? That sounds exciting.", "Got it, you {gist}."]


@dataclass
class _Point:
    content: str
    mtype: str
    source: str = "primary"
    is_update: bool = False
    original: tuple[str, ...] = ()
    importance: float = 0.7
    reason: str = ""
    imitates: str = ""


@dataclass
class _Fact:
    """A persona attribute's current state for question generation."""

    attr: str
    value: str
    content: str
    mtype: str
    history: tuple[str, ...] = ()
    question: str = ""
    answer: str = ""


class _User:
    def __init__(self, rng: random.Random, name: str, gender: str) -> None:
        self.rng = rng
        self.name = name
        self.pron = "she" if gender == "F" else "he"
        self.poss = "her" if gender == "F" else "his"
        self.facts: dict[str, _Fact] = {}
        self.events: list[tuple[str, str, date, str]] = []  # (content, question, when, answer)
        self.city_at: list[tuple[date, str]] = []
        self.distractor_values: dict[str, str] = {}
        self.initial: dict[str, str] = {}
        self.session_of: dict[str, int] = {}

    def pick(self, pool: Sequence[str], *, avoid: Sequence[str] = ()) -> str:
        choices = [p for p in pool if p not in avoid]
        return self.rng.choice(choices)


# Each persona template: attr -> (utterances, content, question, answer key, type, importance)
def _persona_templates(u: _User) -> dict[str, dict[str, Any]]:
    n = u.name
    return {
        "job": dict(pool=JOBS, say=["I work as a {v}.",
                                    "I'm a {v} by trade, been doing it for years.",
                                    "These days I work as a {v}, which keeps me busy.",
                                    "Work is hectic, I'm a {v} at a small practice."],
                    content=f"{n} works as a {{v}}.", q=f"What does {n} do for a living?",
                    upd=["I changed careers, I'm now a {v}.", "Big news: I got a new job as a {v}!",
                         "I started a new job as a {v} last week."],
                    upd_content=f"{n} now works as a {{v}}.", type=PERSONA, imp=0.9),
        "city": dict(pool=CITIES, say=["I live in {v}.",
                                       "I've been living in {v} for a few years now.",
                                       "I'm based in {v}, near the river.",
                                       "Life in {v} is pretty good, I live close to the center."],
                     content=f"{n} lives in {{v}}.", q=f"Which city does {n} live in?",
                     upd=["I just moved to {v}!", "I relocated to {v} for a fresh start.",
                          "We moved to {v} last month."],
                     upd_content=f"{n} moved to {{v}} and now lives there.", type=PERSONA,
                     imp=0.9),
        "hobby": dict(pool=HOBBIES, say=["I love {v}.", "I've taken up {v} recently.",
                                         "On weekends I go {v} whenever I can.",
                                         "I really enjoy {v}, it clears my head."],
                      content=f"{n} enjoys {{v}}.", q=f"What hobby does {n} enjoy?",
                      type=PERSONA, imp=0.6),
        "food": dict(pool=FOODS, say=["My favorite food is {v}.", "I absolutely love {v}.",
                                      "Honestly nothing beats {v} for me."],
                     content=f"{n}'s favorite food is {{v}}.", q=f"What is {n}'s favorite food?",
                     type=PERSONA, imp=0.5),
        "car": dict(pool=CARS, say=["I drive a {v}.", "I bought a {v} a while back.",
                                    "My car is a {v}."],
                    content=f"{n} drives a {{v}}.", q=f"What car does {n} drive?",
                    upd=["I sold my old car and I bought a {v}.", "I now drive a {v}.",
                         "I traded in my car, I drive a {v} now."],
                    upd_content=f"{n} now drives a {{v}}.", type=PERSONA, imp=0.5),
        "school": dict(pool=SCHOOLS, say=["I graduated from {v}.", "I studied at {v}.",
                                          "Back in the day I went to {v}."],
                       content=f"{n} studied at {{v}}.", q=f"Where did {n} study?",
                       type=PERSONA, imp=0.5),
        "age": dict(pool=[str(a) for a in range(24, 61)],
                    say=["I'm {v} years old.", "I am {v}, if you can believe it.",
                         "I turned {v} this year."],
                    content=f"{n} is {{v}} years old.", q=f"How old is {n}?",
                    upd=["I turned {v} yesterday!", "I just turned {v}."],
                    upd_content=f"{n} is now {{v}} years old.", type=PERSONA, imp=0.6),
        "allergy": dict(pool=ALLERGIES, say=["I'm allergic to {v}.",
                                             "Just so you know, I'm allergic to {v}."],
                        content=f"{n} is allergic to {{v}}.", q=f"What is {n} allergic to?",
                        type=PERSONA, imp=0.8),
        "instrument": dict(pool=INSTRUMENTS, say=["I play the {v}.",
                                                  "I've played the {v} since I was a kid."],
                           content=f"{n} plays the {{v}}.",
                           q=f"Which instrument does {n} play?", type=PERSONA, imp=0.5),
        "employer": dict(pool=EMPLOYERS, say=["I work at {v}.", "I've been working for {v} "
                                              "for three years."],
                         content=f"{n} works at {{v}}.", q=f"Which company does {n} work for?",
                         upd=["I left {old} and I joined {v}.", "I quit {old}, I work at {v} now."],
                         upd_content=f"{n} now works at {{v}}.", type=PERSONA, imp=0.8),
        "language": dict(pool=LANGUAGES, say=["I'm learning {v}.", "I speak {v} fluently."],
                         content=f"{n} speaks {{v}}.", q=f"Which language is {n} learning?",
                         type=PERSONA, imp=0.4),
    }


def _relation_facts(u: _User) -> list[tuple[str, list[str], str, str, str]]:
    n, rng = u.name, u.rng
    rel = rng.choice(["sister", "brother"])
    sib = u.pick(OTHER_NAMES)
    partner = u.pick(OTHER_NAMES, avoid=[sib])
    prel = rng.choice(["wife", "husband", "partner"])
    kind = rng.choice(PET_KINDS)
    pet = u.pick(PET_NAMES)
    return [
        ("sibling", [f"I have a {rel} named {sib}.", f"My {rel} is called {sib}.",
                     f"I have a younger {rel} named {sib}."],
         f"{n} has a {rel} named {sib}.", f"What is the name of {n}'s {rel}?", sib),
        ("partner", [f"I'm married to {partner}.", f"My {prel}'s name is {partner}.",
                     f"I've been married to {partner} for five years."],
         f"{n} is married to {partner}.", f"Who is {n} married to?", partner),
        ("pet", [f"I have a {kind} named {pet}.", f"We adopted a {kind} called {pet}.",
                 f"My {kind} {pet} is the best."],
         f"{n} has a {kind} named {pet}.", f"What is the name of {n}'s {kind}?", pet),
    ]


_EVENTS = [
    ("ran a half marathon", "When did {n} run a half marathon?"),
    ("visited {place}", "When did {n} visit {place}?"),
    ("attended a cousin's wedding", "When did {n} attend a cousin's wedding?"),
    ("went to a jazz concert", "When did {n} go to a jazz concert?"),
    ("finished a pottery course", "When did {n} finish a pottery course?"),
    ("got a promotion", "When did {n} get a promotion?"),
    ("hosted a dinner party", "When did {n} host a dinner party?"),
    ("passed the driving test", "When did {n} pass the driving test?"),
    ("started a vegetable garden", "When did {n} start a vegetable garden?"),
    ("adopted a rescue kitten", "When did {n} adopt a rescue kitten?"),
]
# (phrase, how to date it from the day it was said) -> (start date, gold phrase)
_REL_DATES = ["yesterday", "two days ago", "last week", "last month", "on Saturday"]


def _gold_date(phrase: str, said: date) -> tuple[date, str]:
    if phrase == "yesterday":
        d = said - timedelta(days=1)
        return d, f"on {_long_date(d)}"
    if phrase == "two days ago":
        d = said - timedelta(days=2)
        return d, f"on {_long_date(d)}"
    if phrase == "last week":
        d = said - timedelta(days=said.weekday() + 7)
        return d, f"in the week of {_long_date(d)}"
    if phrase == "last month":
        first = (said.replace(day=1) - timedelta(days=1)).replace(day=1)
        return first, f"in {first.strftime('%B')} {first.year}"
    # on Saturday, said after it: the most recent Saturday strictly before
    delta = (said.weekday() - 5) % 7 or 7
    d = said - timedelta(days=delta)
    return d, f"on {_long_date(d)}"


def _distractors(u: _User) -> list[tuple[str, str, str, str, str]]:
    """(speaker role, utterance, false memory it imitates, reason, memory type)."""
    n, rng = u.name, u.rng
    job = u.pick(JOBS, avoid=[u.facts["job"].value] if "job" in u.facts else [])
    city = u.pick(CITIES, avoid=[f.value for f in u.facts.values()])
    kind = rng.choice(PET_KINDS)
    pet = u.pick(PET_NAMES)
    hobby = u.pick(HOBBIES, avoid=[u.facts["hobby"].value] if "hobby" in u.facts else [])
    friend = u.pick(OTHER_NAMES)
    food = u.pick(FOODS, avoid=[u.facts["food"].value] if "food" in u.facts else [])
    u.distractor_values.update(job=job, city=city, hobby=hobby)
    return [
        ("user", f"If I were a {job}, I would travel much more.", f"{n} works as a {job}.",
         "hypothetical: the user is not a " + job, PERSONA),
        ("user", f"Imagine I had a {kind} named {pet}, that would be so much fun.",
         f"{n} has a {kind} named {pet}.", "imagined pet, not a real one", RELATION),
        ("user", f"I wish I lived in {city}.", f"{n} lives in {city}.",
         "a wish, not where the user lives", PERSONA),
        ("user", f"My friend {friend} said she just moved to {city}.", f"{n} moved to {city}.",
         f"reported speech about {friend}, not the user", PERSONA),
        ("user", f"My coworker {friend} is obsessed with {hobby}.", f"{n} enjoys {hobby}.",
         "a coworker's hobby, not the user's", PERSONA),
        ("assistant", f"You could try {hobby} sometime, many people find it relaxing.",
         f"{n} does {hobby}.", "an assistant suggestion, not something the user does",
         PERSONA),
        ("user", f"Do you think I should get a {kind}?", f"{n} has a {kind}.",
         "a question, not a fact", PERSONA),
        ("user", f"Maybe someday I'll try {food}, people keep recommending it.",
         f"{n}'s favorite food is {food}.", "a vague intention about food never tried",
         PERSONA),
    ]


def _session_times(rng: random.Random, n: int) -> list[datetime]:
    t = datetime(2029, 1, 1) + timedelta(days=rng.randint(0, 60), hours=rng.randint(8, 20),
                                         minutes=rng.randint(0, 59))
    out = []
    for _ in range(n):
        out.append(t)
        t = t + timedelta(days=rng.randint(6, 25), hours=rng.randint(-3, 3),
                          minutes=rng.randint(0, 59))
    return out


class _SessionBuilder:
    def __init__(self, rng: random.Random, start: datetime) -> None:
        self.rng = rng
        self.t = start
        self.start = start
        self.dialogue: list[dict[str, Any]] = []
        self.points: list[_Point] = []
        self.questions: list[dict[str, Any]] = []

    def turn(self, role: str, content: str) -> datetime:
        self.t = self.t + timedelta(seconds=self.rng.randint(20, 120))
        self.dialogue.append({"role": role, "content": content, "timestamp": _fmt(self.t),
                              "dialogue_turn": len(self.dialogue) // 2})
        return self.t

    def exchange(self, user_text: str, *, restate: str | None = None) -> datetime:
        said = self.turn("user", user_text)
        if restate and self.rng.random() < 0.3:
            self.turn("assistant", self.rng.choice(ASSISTANT_RESTATE).format(gist=restate))
        else:
            self.turn("assistant", self.rng.choice(ASSISTANT_ACKS))
        return said

    def filler(self) -> None:
        self.exchange(self.rng.choice(CHITCHAT))

    def point(self, p: _Point, when: datetime) -> None:
        p.importance = round(p.importance, 2)
        self.points.append(p)
        self._times.append(when)

    _times: list[datetime]

    def record(self) -> dict[str, Any]:
        mps = []
        for i, (p, when) in enumerate(zip(self.points, self._times, strict=True)):
            mp: dict[str, Any] = {
                "index": i, "memory_content": p.content, "memory_type": p.mtype,
                "memory_source": p.source, "is_update": "True" if p.is_update else "False",
                "original_memories": list(p.original), "importance": p.importance,
                "timestamp": _fmt(when)}
            if p.source == "interference":
                mp["reason"] = p.reason
                mp["imitates"] = p.imitates
            mps.append(mp)
        out: dict[str, Any] = {"start_time": _fmt(self.start), "end_time": _fmt(self.t),
                               "dialogue": self.dialogue, "memory_points": mps}
        if self.questions:
            out["questions"] = self.questions
        return out


def _articles(text: str) -> str:
    return re.sub(r"\b([Aa]) (?=[aeiouAEIOU])", lambda m: m.group(1) + "n ", text)


def _gist(utterance: str) -> str:
    g = re.sub(r"^I'm ", "are ", utterance.rstrip(".!"))
    g = re.sub(r"^I ", "", g)
    return re.sub(r"\bmy\b", "your", g)


def _make_user(rng: random.Random, sessions: int) -> dict[str, Any]:
    name, gender = rng.choice(FIRST_NAMES)
    u = _User(rng, name, gender)
    templates = _persona_templates(u)
    attrs = list(templates)
    rng.shuffle(attrs)
    times = _session_times(rng, sessions)
    builders = []
    for t in times:
        b = _SessionBuilder(rng, t)
        b._times = []
        builders.append(b)

    def state(b: _SessionBuilder, attr: str) -> None:
        tpl = templates[attr]
        value = u.pick(tpl["pool"])
        if attr == "age":
            value = str(rng.randint(24, 60))
        utter = _articles(rng.choice(tpl["say"]).format(v=value))
        said = b.exchange(utter, restate=_gist(utter))
        content = _articles(tpl["content"].format(v=value))
        u.facts[attr] = _Fact(attr, value, content, tpl["type"], question=tpl["q"],
                              answer=value)
        u.initial[attr] = value
        u.session_of[attr] = builders.index(b)
        b.point(_Point(content, tpl["type"], importance=tpl["imp"] - rng.random() * 0.1), said)
        if attr == "city":
            u.city_at.append((said.date(), value))

    # session 0: introductions; persona attributes are spread over the first sessions
    first = builders[0]
    first.exchange(rng.choice(GREETINGS))
    n_intro = max(4, len(attrs) // 2)
    for attr in attrs[:n_intro]:
        state(first, attr)
        if rng.random() < 0.3:
            first.filler()
    rels = _relation_facts(u)
    for k, (attr, says, content, question, answer) in enumerate(rels):
        b = builders[min(k % 2, len(builders) - 1)]
        said = b.exchange(rng.choice(says))
        u.facts[attr] = _Fact(attr, answer, content, RELATION if attr != "pet" else PERSONA,
                              question=question, answer=answer)
        b.point(_Point(content, RELATION if attr != "pet" else PERSONA,
                       importance=0.75 - rng.random() * 0.1), said)
    for k, attr in enumerate(attrs[n_intro:]):
        b = builders[1 + k % max(1, len(builders) - 1)] if len(builders) > 1 else first
        state(b, attr)

    # events with relative dates, spread over later sessions
    event_pool = list(_EVENTS)
    rng.shuffle(event_pool)
    for k, (what, question) in enumerate(event_pool[: 2 * max(1, len(builders) - 1)]):
        b = builders[1 + k % (len(builders) - 1)] if len(builders) > 1 else first
        place = rng.choice(PLACES)
        phrase = rng.choice(_REL_DATES)
        what_f = what.format(place=place)
        lead = phrase[0].upper() + phrase[1:]
        utter = rng.choice([f"{lead} I {what_f}.", f"I {what_f} {phrase}.",
                            f"Guess what, {phrase} I {what_f}!"])
        said = b.exchange(utter)
        start, gold = _gold_date(phrase, said.date())
        content = f"{u.name} {what_f} {gold}."
        u.events.append((content, question.format(n=u.name, place=place), start, gold[3:]
                         if gold.startswith("on ") else gold))
        b.point(_Point(content, EVENT, importance=0.55 - rng.random() * 0.1), said)

    # updates of single-valued attributes in later sessions
    updatable = [a for a in attrs if "upd" in templates[a] and a in u.facts]
    rng.shuffle(updatable)
    updated: list[str] = []
    for k, attr in enumerate(updatable[: max(2, len(builders) - 1)]):
        later = list(range(u.session_of[attr] + 1, len(builders)))
        if not later:
            continue  # an update must come after the value it changes
        b = builders[later[-1 - (k % len(later))]]
        tpl = templates[attr]
        old = u.facts[attr]
        value = str(int(old.value) + 1) if attr == "age" else u.pick(tpl["pool"],
                                                                       avoid=[old.value])
        said = b.exchange(_articles(rng.choice(tpl["upd"]).format(v=value, old=old.value)))
        content = _articles(tpl["upd_content"].format(v=value))
        u.facts[attr] = _Fact(attr, value, content, tpl["type"], history=(old.content,),
                              question=tpl["q"], answer=value)
        b.point(_Point(content, tpl["type"], is_update=True, original=(old.content,),
                       importance=0.9 - rng.random() * 0.1), said)
        updated.append(attr)
        if attr == "city":
            u.city_at.append((said.date(), value))

    # distractors: 3-4 per user, mostly in later sessions
    for k, (role, utter, imitates, reason, mtype) in enumerate(
            rng.sample(_distractors(u), k=4)):
        b = builders[(k + 1) % len(builders)]
        if role == "assistant":
            said = b.turn("user", "I'm looking for something new to do on weekends.")
            b.turn("assistant", utter)
        else:
            said = b.exchange(utter)
        b.point(_Point(imitates, mtype, source="interference", reason=reason,
                       imitates=imitates, importance=0.3), said)

    for b in builders:
        if rng.random() < 0.6:
            b.filler()
        b.exchange(rng.choice(["Thanks, talk to you later!", "Bye for now.",
                               "Okay, that's all for today."]))

    builders[-1].questions = _questions(u, rng, updated)
    return {"uuid": str(uuid.UUID(int=rng.getrandbits(128))),
            "persona_info": _persona_info(u, gender),
            "sessions": [b.record() for b in builders]}


def _persona_info(u: _User, gender: str) -> str:
    parts = [f"Name: {u.name}", f"Gender: {'Female' if gender == 'F' else 'Male'}"]
    for attr in ("job", "city", "age", "hobby"):
        if attr in u.initial:
            parts.append(f"{attr.capitalize()}: {u.initial[attr]}")
    return "; ".join(parts)


def _ev(f: _Fact) -> list[dict[str, str]]:
    return [{"memory_content": f.content, "memory_type": f.mtype}]


def _questions(u: _User, rng: random.Random, updated: list[str]) -> list[dict[str, Any]]:
    n = u.name
    qs: list[dict[str, Any]] = []

    def q(question: str, answer: str, evidence: list[dict[str, str]], qtype: str,
          difficulty: str = "easy") -> None:
        qs.append({"question": question, "answer": answer, "evidence": evidence,
                   "difficulty": difficulty, "question_type": qtype})

    stable = [a for a in u.facts if a not in updated]
    for attr in rng.sample(stable, k=min(3, len(stable))):
        f = u.facts[attr]
        q(f.question, f.answer, _ev(f), "Basic Fact Recall")
    for attr in updated[:2]:
        f = u.facts[attr]
        q(f.question[:-1] + " now?", f.answer, _ev(f), "Dynamic Update", "medium")
    if u.events:
        content, question, when, gold = rng.choice(u.events)
        q(question, gold, [{"memory_content": content, "memory_type": EVENT}],
          "Basic Fact Recall", "medium")
    if "sibling" in u.facts and "city" in u.facts:
        sib, city = u.facts["sibling"], u.facts["city"]
        rel = "sister" if "sister" in sib.content else "brother"
        q(f"What is the name of {n}'s {rel}, and in which city does {n} live?",
          f"{sib.answer}; {city.answer}", _ev(sib) + _ev(city), "Multi-hop Inference", "hard")
    gen = [a for a in ("hobby", "food", "allergy") if a in u.facts]
    if gen:
        attr = rng.choice(gen)
        f = u.facts[attr]
        question = {"hobby": f"Suggest a weekend activity that {n} would enjoy.",
                    "food": f"Which dish should I cook to make {n} happy?",
                    "allergy": f"What ingredient must a host avoid when cooking for {n}?"}[attr]
        q(question, f.answer, _ev(f), "Generalization & Application", "medium")
    if updated:
        f = u.facts[updated[0]]
        old = f.history[0]
        q(f"{old[:-1]}, right?", f"No. {f.content}", _ev(f), "Memory Conflict", "hard")
    elif "job" in u.distractor_values:
        job = u.facts.get("job")
        if job is not None:
            q(f"{n} works as a {u.distractor_values['job']}, right?", f"No. {job.content}",
              _ev(job), "Memory Conflict", "hard")
    missing = [("What is the name of {n}'s goldfish?"), ("Which gym does {n} go to?"),
               ("What is {n}'s favorite movie?"), ("What is the name of {n}'s cousin?")]
    q(rng.choice(missing).format(n=n), "unknown", [], "Memory Boundary", "medium")
    return qs


def generate(seed: int, users: int = 3, *, sessions: int = 4) -> list[dict[str, Any]]:
    """``users`` HaluMem-format user records; identical for identical arguments."""
    if users < 1 or sessions < 1:
        raise ValueError("users and sessions must be >= 1")
    rng = random.Random(seed)
    return [_make_user(random.Random(rng.getrandbits(64)), sessions) for _ in range(users)]


def write_jsonl(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write one JSON object per line (one user per line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


# --------------------------------------------------------------------------- gate testing
@dataclass(frozen=True)
class PlantedFact:
    """A fact with the span it cites; ``supported`` is the ground truth."""

    fact: ExtractedFact
    source_text: str
    supported: bool
    tamper: str  # "" | "number" | "name" | "negation" | "value"


def user_name(record: dict[str, Any]) -> str:
    m = re.search(r"Name:\s*([^;]+)", record.get("persona_info", ""))
    return m.group(1).strip() if m else "the user"


def dialogue_inputs(record: dict[str, Any], session_index: int) -> list[ExtractInput]:
    """The session's turns as extractor inputs (ids ``s{i}-t{j}``)."""
    name = user_name(record)
    out = []
    for j, turn in enumerate(record["sessions"][session_index]["dialogue"]):
        out.append(ExtractInput(id=f"s{session_index}-t{j}", role=turn["role"],
                                speaker=name if turn["role"] == "user" else "assistant",
                                content=turn["content"], timestamp=parse_time(turn["timestamp"])))
    return out


_NEGATABLE = [(r"\b(is|was|has been) ", r"\1 not "), (r"\b(works|lives|drives|plays|enjoys|"
              r"loves|speaks|has|moved|ran|visited|went|studied)\b", r"does not \1")]


def _negate(text: str) -> str | None:
    if re.search(r"\bnot\b|\bno longer\b|n't\b", text):
        return re.sub(r"\s*\b(?:not|no longer)\b", "", text, count=1)
    for pat, rep in _NEGATABLE:
        if re.search(pat, text):
            new = re.sub(pat, rep, text, count=1)
            return re.sub(r"does not (\w+?)(?:e?s)\b", lambda m: "does not " + m.group(1), new) \
                if "does not" in new else new
    return None


def planted_facts(record: dict[str, Any], *, extractor: Extractor | None = None,
                  seed: int = 0) -> Iterator[PlantedFact]:
    """For each fact the extractor finds in ``record``'s dialogues, yield it (supported) and
    one tampered copy (unsupported): a changed number, name, negation or value.
    """
    rng = random.Random(seed)
    extractor = extractor or RulesExtractor()
    pools = [JOBS, CITIES, HOBBIES, FOODS, CARS, EMPLOYERS, ALLERGIES, INSTRUMENTS, LANGUAGES,
             PET_KINDS]
    for si in range(len(record["sessions"])):
        msgs = {m.id: m for m in dialogue_inputs(record, si)}
        for fact in extractor.extract(list(msgs.values())):
            source = msgs[fact.source_message_id].content[fact.span[0]:fact.span[1]]
            yield PlantedFact(fact, source, True, "")
            body = fact.text.replace(fact.time_text, "") if fact.time_text else fact.text
            options: list[tuple[str, str]] = []
            nums = re.findall(r"\b\d+\b", body)
            if nums:
                num = rng.choice(nums)
                options.append(("number", re.sub(rf"\b{num}\b", str(int(num) + rng.randint(1, 9)),
                                                 fact.text, count=1)))
            names = [w for w in re.findall(r"\b[A-Z][a-z]+\b", body)[1:]
                     if w not in fact.resolved_names]
            if names:
                old = rng.choice(names)
                new = rng.choice([x for x in OTHER_NAMES + CITIES + PET_NAMES if x != old])
                options.append(("name", re.sub(rf"\b{old}\b", new, fact.text, count=1)))
            negated = _negate(fact.text)
            if negated and negated != fact.text:
                options.append(("negation", negated))
            for pool in pools:
                hit = next((v for v in pool if re.search(rf"\b{re.escape(v)}\b", body,
                                                         re.IGNORECASE)), None)
                if hit:
                    other = rng.choice([v for v in pool if v != hit])
                    options.append(("value", re.sub(re.escape(hit), other, fact.text, count=1,
                                                    flags=re.IGNORECASE)))
                    break
            if options:
                kind, text = rng.choice(options)
                yield PlantedFact(replace(fact, text=text), source, False, kind)


def main(argv: Sequence[str] | None = None) -> None:  # pragma: no cover - thin wrapper
    import argparse

    ap = argparse.ArgumentParser(description="Write a synthetic HaluMem-format JSONL file.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--users", type=int, default=3)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    write_jsonl(generate(args.seed, args.users), args.out)


def gate_rates(records: Sequence[dict[str, Any]], *, seed: int = 0) -> dict[str, float | int]:
    """How the faithfulness gate treats planted facts: the share of tampered (unsupported)
    facts it refuses and of untouched (supported) facts it lets through."""
    planted = [p for r in records for p in planted_facts(r, seed=seed)]
    bad = [p for p in planted if not p.supported]
    good = [p for p in planted if p.supported]
    caught = sum(not check(p.fact, p.source_text).supported for p in bad)
    passed = sum(check(p.fact, p.source_text).supported for p in good)
    return {"unsupported": len(bad), "caught": round(caught / max(len(bad), 1), 4),
            "supported": len(good), "passed": round(passed / max(len(good), 1), 4)}
