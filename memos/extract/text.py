"""Words of a text as extraction and its checks compare them: tokens, stems, numbers, cues.

Everything here is a pure function of a string, deterministic and English-only:

- :func:`words` — the word tokens (letters and digits, with an apostrophe suffix kept:
  "Ana's", "don't");
- :func:`content_tokens` — lower-cased, lightly stemmed words minus :data:`STOPWORDS` and
  :data:`NEGATION_CUES`: the words two statements must share to say the same thing;
- :func:`numbers_in` — numbers written as digits or as number words, as digit strings;
- :func:`has_negation` — whether a text is negated ("not", "never", "no longer", "n't");
- :func:`is_past` — whether a clause is in the past tense (a past verb or "was"/"were").

>>> content_tokens("Ana loves her new dogs")
['ana', 'lov', 'new', 'dog']
>>> sorted(numbers_in("three cats and 2 dogs"))
['2', '3']
>>> has_negation("I don't eat meat"), is_past("I moved to Berlin")
(True, True)
"""

from __future__ import annotations

import re

from memos.temporal import NUMBER_WORDS

__all__ = [
    "STOPWORDS",
    "NEGATION_CUES",
    "IRREGULAR_PAST",
    "words",
    "stem",
    "content_tokens",
    "numbers_in",
    "has_negation",
    "is_past",
]

_WORD = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?")
#: Words that carry no content of their own: function words, auxiliaries, fillers.
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
#: Words that negate a statement; left out of content tokens so that polarity is judged by
#: :func:`has_negation` alone.
NEGATION_CUES = frozenset("""not no never none nobody nothing neither nor n't cannot without
isn't aren't wasn't weren't don't doesn't didn't won't wouldn't can't couldn't shouldn't
haven't hasn't hadn't longer""".split())
#: Irregular past-tense verb forms ("went", "met", "quit"): past without an "-ed".
IRREGULAR_PAST = frozenset("""went ran saw met took got bought made did had was were came
began became left brought caught drove ate fell felt found flew gave grew heard held
kept knew led lost meant paid put quit read rode said sang sat sent shot slept sold
spent spoke stood swam taught thought told threw understood woke won wore wrote
broke chose forgot hid hit hurt let set shut split spread stuck struck swept
tore""".split())


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
    """The word tokens of ``text``, case kept: ``words("Ana's dog!") == ["Ana's", "dog"]``."""
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
        if w.lower() in NUMBER_WORDS:
            found.add(str(NUMBER_WORDS[w.lower()]))
    return found


def has_negation(text: str) -> bool:
    """Whether ``text`` contains a negation ("not", "never", "no longer", "n't", "no", …)."""
    low = text.lower()
    if re.search(r"n't\b|\bno longer\b|\bnot\b|\bnever\b|\bnone\b|\bnobody\b|\bnothing\b"
                 r"|\bneither\b|\bnor\b|\bcannot\b|\bno\b", low):
        return True
    return False


def is_past(clause: str) -> bool:
    """Whether ``clause`` is in the past tense: an irregular past form, a word of five or
    more letters ending in "-ed", or "was"/"were". Decides which way a bare weekday or
    month points ("on Friday" said in the past tense is the last Friday)."""
    for w in words(clause.lower()):
        if w in IRREGULAR_PAST or (w.endswith("ed") and len(w) > 4) or w in ("was", "were"):
            return True
    return False
