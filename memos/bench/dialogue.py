"""Everyday dialogue for the benchmarks: seeded, so every run ingests the same turns.

>>> next(realistic_turns(1, seed=0))[0]
'Ana'
"""

from __future__ import annotations

import random
from collections.abc import Iterator

__all__ = ["realistic_turns", "realistic_queries"]

_PEOPLE = ["Ana", "Ben", "Caroline", "Dev", "Elif", "Farah", "Gus", "Hana", "Ivan", "Jun",
           "Kemal", "Lena", "Marco", "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tariq"]
_PLACES = ["Berlin", "Lisbon", "the lake house", "Osaka", "my parents' place", "the gym",
           "the farmers market", "Toronto", "the new office", "Nairobi", "the library",
           "a pottery class", "the beach", "Seoul", "the climbing wall", "Marrakesh"]
_THINGS = ["a vintage camera", "a sourdough starter", "a rescue dog", "a used bike",
           "tickets to a jazz concert", "a book on stoicism", "a sewing machine", "a telescope",
           "running shoes", "a ukulele", "a tomato plant", "a chess set", "a kayak",
           "a painting of sunflowers", "a language course", "a board game about trains"]
_FEELINGS = ["really proud", "a bit nervous", "exhausted but happy", "so grateful",
             "pretty stressed", "excited", "calm for once", "honestly overwhelmed"]
_TEMPLATES = [
    "I went to {place} {when} with {person} and it was {feeling}.",
    "{person} gave me {thing} {when}, I'm {feeling} about it.",
    "We're planning to move to {place} next spring, {person} found a flat there.",
    "I finally bought {thing}; I've wanted one since I was a kid.",
    "Did you ever try {thing}? {person} says it changed their mornings.",
    "My sister {person} started working at {place} {when}.",
    "I've been volunteering at {place} every Saturday, it keeps me grounded.",
    "{when} I signed up for {thing} and I feel {feeling}.",
    "That sounds amazing! How did {person} react when you told them about {place}?",
    "I lost {thing} at {place} {when}, still {feeling} about it.",
    "My therapist suggested I try {thing} to deal with work stress.",
    "{person} and I celebrated our anniversary at {place}; I was {feeling}.",
]
_WHEN = ["yesterday", "last week", "last weekend", "two days ago", "this morning",
         "last month", "on Friday", "after work", "over the holidays"]


def realistic_turns(n: int, *, seed: int = 0) -> Iterator[tuple[str, str]]:
    """``n`` (speaker, text) dialogue turns of everyday chat, deterministic per seed."""
    rng = random.Random(seed)
    for i in range(n):
        text = rng.choice(_TEMPLATES).format(
            place=rng.choice(_PLACES), person=rng.choice(_PEOPLE), thing=rng.choice(_THINGS),
            feeling=rng.choice(_FEELINGS), when=rng.choice(_WHEN))
        yield _PEOPLE[i % 2], f"{text} (#{i})" if rng.random() < 0.3 else text


def realistic_queries(n: int, *, seed: int) -> list[str]:
    """``n`` questions about the people, places and things of :func:`realistic_turns`."""
    rng = random.Random(seed)
    forms = ["What did {p} give as a present?", "Who moved to {pl}?",
             "When did someone buy {t}?", "How does {p} feel about {pl}?",
             "Where does {p}'s sister work?", "what happened at {pl}"]
    return [rng.choice(forms).format(p=rng.choice(_PEOPLE), pl=rng.choice(_PLACES),
                                     t=rng.choice(_THINGS)) for _ in range(n)]
