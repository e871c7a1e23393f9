"""The rules extractor: offline, deterministic facts from clause patterns.

:class:`RulesExtractor` splits each user turn into sentences and clauses
(:mod:`memos.extract.clauses`), drops greetings, questions, chit-chat, hypotheticals and
reported speech, resolves first/second person to names ("I moved to Berlin" said by Ana →
"Ana moved to Berlin"; "my sister" → "Ana's sister"), resolves relative dates against the
message timestamp ("last week" on 2023-05-08 → the week of 2023-05-01, by
:func:`memos.temporal.resolve_relative_time`) and types each fact as Persona / Event /
Relationship memory with a normalised ``attribute`` key (job, employer, city, pet, hobby,
partner, …; ``stmt:<verb>`` / ``event:<verb>`` when no rule names one) and its ``value``,
so the updater can find "the same subject and attribute". Each fact's span is its clause.

The same input always gives the same facts, byte for byte: the extractor reads no clock
and no model; ``version`` names the rule set.

>>> from dataclasses import replace
from datetime import datetime
>>> msg = ExtractInput(id="m1", role="user", speaker="Ana", content="I moved to Berlin.",
...                    timestamp=datetime(2023, 5, 8))
>>> [(f.text, f.attribute, f.value) for f in RulesExtractor().extract([msg])]
[('Ana moved to Berlin.', 'city', 'berlin')]
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from memos.extract.clauses import (
    ASSISTANT_BOILERPLATE,
    DISCOURSE,
    GREETING,
    HYPOTHETICAL,
    REPORTED,
    Clause,
    clauses,
    sentences,
)
from memos.extract.fact import (
    EVENT,
    PERSONA,
    RELATIONSHIP,
    ExtractedFact,
    ExtractInput,
    MemoryType,
)
from memos.extract.text import IRREGULAR_PAST, content_tokens, has_negation, is_past, stem, words
from memos.temporal import TIME_EXPR, resolve_relative_time

__all__ = ["RulesExtractor"]

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
#: Verbs that end in "-ly" (any other word that does is taken for an adverb: "a sport I
#: once disliked", "I actively seek" keep "once", "actively" as they are).
_LY_VERBS = frozenset("""apply reply rely supply fly multiply comply imply ally rally tally
bully""".split())
_MODALS = {"can", "could", "will", "would", "shall", "should", "may", "might", "must",
           "was", "had", "did", "used"}
_THIRD = {"am": "is", "'m": "is", "have": "has", "'ve": "has", "do": "does", "don't": "doesn't",
          "go": "goes", "were": "was", "are": "is", "'re": "is", "'ll": "will",
          "haven't": "hasn't", "aren't": "isn't", "weren't": "wasn't"}


#: Verbs already in the third person (a "you've" resolved to "Ana has" is conjugated again).
_ALREADY_THIRD = frozenset({"has", "is", "was", "does", "doesn't", "hasn't", "isn't", "wasn't",
                            "goes"})


#: Verbs whose base form ends in "-ed" like a past tense ("the stability I need" →
#: "the stability Ana needs", not "Ana need").
_BASE_ED = frozenset("""need feed succeed proceed exceed bleed speed breed heed embed shed
shred wed""".split())


def _third_person(verb: str) -> str:
    low = verb.lower()
    if low in _THIRD:
        return _THIRD[low]
    if low in _ALREADY_THIRD:
        return verb
    if low in _MODALS or low in IRREGULAR_PAST or "'" in low or (
            low.endswith("ed") and low not in _BASE_ED):
        return verb
    if re.search(r"(?:s|sh|ch|x|z|o)$", low):
        return verb + "es"
    if re.search(r"[^aeiou]y$", low):
        return verb[:-1] + "ies"
    return verb + "s"


_NOT_LIKE = re.compile(r"^(?:(?:really|just|also|honestly)\s+)?(?:don't|do not|doesn't|"
                       r"does not)\s+(?:really\s+|particularly\s+)?(?:like|enjoy)\s+"
                       r"(?:to\s+(?P<verb>[a-z]+)\b)?", re.IGNORECASE)


def _gerund(verb: str) -> str:
    low = verb.lower()
    if low.endswith("e") and not low.endswith(("ee", "ye", "oe")) and len(low) > 2:
        return verb[:-1] + "ing"
    return verb + "ing"


def _dislike(predicate: str) -> str | None:
    """ "don't like to wear cargo pants" → "dislikes wearing cargo pants": one verb that
    carries the polarity, as people summarise a preference ("dislikes X")."""
    m = _NOT_LIKE.match(predicate)
    if m is None:
        return None
    verb = m.group("verb")
    return "dislikes " + (_gerund(verb) + " " if verb else "") + predicate[m.end():]


#: Acknowledgements that open a reply besides the greetings of :data:`GREETING`.
_ACKNOWLEDGEMENT = re.compile(r"^(?:good|fine|alright|all right|perfect|wonderful|lovely|"
                              r"indeed|certainly|definitely)\b", re.IGNORECASE)


def _after_greeting(text: str) -> str:
    """``text`` without an opening greeting or acknowledgement and its comma ("Good, let
    me …" → "let me …", "Absolutely, those games …" → "those games …")."""
    greeting = GREETING.match(text) or _ACKNOWLEDGEMENT.match(text)
    if greeting and text[greeting.end():].startswith(","):
        return text[greeting.end() + 1:].strip()
    return text


def _only_the_exchange(source: str) -> bool:
    """Whether a fact's source is one sentence about the exchange itself ("Good, let me
    introduce my family."): no memory, unless the sentences after it extended it ("…; both
    parents are deceased, divorced, one child")."""
    return bool(_ABOUT_LISTENER.match(_after_greeting(DISCOURSE.sub("", source)))) and sum(
        1 for _ in sentences(source)) == 1


def _names(text: str, person: str) -> bool:
    """Whether ``text`` names ``person`` by their full name or, for a name of two parts or
    more, their first name alone ("Sharon's life in sports" names Sharon Brown, "Sharon
    Jackson's support" does not)."""
    parts = person.split()
    if not parts:
        return False
    full = re.escape(" ".join(parts))
    # a first name followed by another surname is someone else ("Sharon Jackson")
    first = rf"|{re.escape(parts[0])}(?!\s+[A-Z])" if len(parts) > 1 else ""
    return bool(re.search(rf"\b(?:{full}{first})\b", text))


def _told_of_something(text: str) -> bool:
    """Whether ``text`` (a clause or sentence that stated no fact) tells of something
    other than the speaker: no first person (one about the speaker stated no fact for a
    reason: a wish, a plan), not about the listener, not reported, not irrealis, and at
    least three content words."""
    return not (_FIRST_PERSON.search(text) or _ABOUT_LISTENER.match(text)
                or re.search(r"\byour?s?\b", text, re.IGNORECASE) or REPORTED.search(text)
                or HYPOTHETICAL.search(text) or len(content_tokens(text)) < 3)


def _clean(s: str) -> str:
    s = re.sub(r"\s+", " ", s).strip(" ,;:-")
    return re.sub(r"\s+([,.!?])", r"\1", s)


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
        # retiring or stepping down from a role at an employer ends it too ("I've finally
        # retired from my role as Senior Consultant at Acme", "I stepped down from Acme")
        (r"^(?:'ve |have |has |had )?(?:just |recently |finally |officially )?(?:retired|"
         r"stepped down|(?:decided|made the decision) to (?:retire|step down)) from"
         r" (?:my |his |her |the )?(?:job |role |position |post )?(?:as (?:a |an |the )?"
         r"[^,.;!?]+? )?(?:at |with )" + _V + _END, "employer", PERSONA, True),
        (r"^(?:am|'m|is|'s|was) no longer (?:a |an )?" + _V + _END, "job", PERSONA, True),
        (r"^(?:no longer work(?:s)?|(?:don't|do not|doesn't|does not) work|"
         r"(?:stopped|quit|gave up) working) as (?:a |an |the )?" + _V + _END,
         "job", PERSONA, True),
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
        (r"^(?:work|works|am working|'m working|is working|have been working|'ve been working"
         r"|has been working) (?:at|for|with) (?P<emp>[^,.;!?]+?) as (?:a |an |the )?" + _V
         + _END, "job", PERSONA, False),
        (r"^(?:'ve |have |has |had )?(?:just |recently |finally )?(?:been |got |was )?"
         r"promoted to (?:a |an |the )?(?:role of |position of )?" + _V +
         r"(?: (?:at|in|with) (?P<emp>[^,.;!?]+?))?" + _END, "job", PERSONA, False),
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
# Irrealis and idle musing are not facts. Wants, hopes, plans, needs, feelings and opinions
# are: "Ana wants to learn Spanish" is true of Ana, and the fact keeps the verb that says so.
_INTENT = re.compile(
    r"^(?:'d|would|could|should|might|may|have to|'ll|will|am going to|'m going to|guess|"
    r"wonder|was wondering|don't know|do not know|wish)\b", re.IGNORECASE)
#: A first-person word anywhere in a clause: a statement about the speaker even when it does
#: not open with "I"/"my" ("Maintaining a balanced diet is essential for my health").
_FIRST_PERSON = re.compile(r"\b(?:i|i'm|i've|i'd|i'll|my|me|myself|mine)\b", re.IGNORECASE)
#: A fronted adverbial before the subject ("Recently, I …", "Mentally, I …").
_FRONTED = re.compile(r"^(?P<front>[^,]{2,60}?),\s+(?=(?:i|i'm|i've|my)\b)", re.IGNORECASE)
#: Openings of a clause about the listener or the exchange itself, not about the speaker.
#: The opening of a sentence that goes on about what the one before it said ("It was …",
#: "The festival atmosphere …", "This has …"), not about a new, named subject.
_ELABORATION = re.compile(r"^(?:it|it's|this|that|these|those|they|they're|they've|the|"
                          r"such|both|each|there)\b", re.IGNORECASE)
#: The longest span (characters) a statement grows to by taking in the sentences after it.
MAX_ELABORATED = 500
#: An opening that points back at what was just said ("It", "This", "Their support"):
#: the sentence continues the one before it even when it mentions the speaker.
_ANAPHOR = re.compile(r"^(?:it|it's|this|these|those|they|they're|they've|their|such)\b",
                      re.IGNORECASE)
#: A pronoun opening a statement that names nothing without the sentence before it
#: ("They've really encouraged me"); "it" and "this" are left out: mostly the situation
#: itself ("It's been a journey"), not a thing the sentence before named.
_NEEDS_ANTECEDENT = re.compile(r"^(?:they|they're|they've|their|these|those|he|he's|she|"
                               r"she's)\b", re.IGNORECASE)
#: A time expression that opens with a common word, lower-cased when it moves to a
#: sentence's end ("Last month" → "… retired last month"; "May 3" keeps its capital).
_COMMON_TIME_WORD = re.compile(r"(?:last|next|this|the|yesterday|today|tonight|tomorrow|"
                               r"in|on|a|an|\d)\b", re.IGNORECASE)
#: A first-person consideration: "I'm even considering adding golf", "I've been thinking
#: about moving". What the speaker is weighing now is a memory of them, though "considering"
#: is an irrealis cue; the fact keeps the word, so it never reads as done.
_CONSIDERING = re.compile(r"\bi(?:'m| am|'ve been| have been)(?: (?:\w+ly|even|also|still))? "
                        r"(?:considering|thinking (?:about|of))\b", re.IGNORECASE)
_ABOUT_LISTENER = re.compile(r"^(?:you|your|yours|thanks|thank|please|let's|let me)\b",
                             re.IGNORECASE)
#: "<attribute> is (now) <value>" after "my": one noun phrase of up to four words and a
#: singular present copula, or a change to the value ("rose to", "decreased from 11,800 to
#: 5,000") — the statement of an attribute's current value.
_OWNED_VALUE = re.compile(
    r"^(?P<attr>(?:(?!ha(?:s|ve)\b)[a-z-]+ ){0,3}(?!ha(?:s|ve)\b)[a-z-]+?) "
    r"(?:is|has been|has become|is still|remains|"
    r"(?:has |have )?(?:gone up|went up|gone down|went down|risen|rose|increased|grown|grew|"
    r"jumped|climbed|dropped|decreased|fallen|fell|changed)(?: from (?:\d,\d|[^,;])+?)? to)"
    r"(?: now| currently| still)? (?P<v>(?:\d,\d|[^,;])+?)(?:[,;].*)?$", re.IGNORECASE)
#: A reply that confirms what was just said about its speaker ("Yes, …", "Exactly.").
_CONFIRM = re.compile(r"^\W*(?:yes|yeah|yep|exactly|absolutely|indeed|that's right|"
                      r"that's true|true|right|correct|definitely)\b", re.IGNORECASE)
#: An agreement that turns at once into a correction ("Yes, but …", "Right, although …",
#: "Yes, actually no"): it does not confirm the claim it answers.
_BUT = re.compile(r"^\W*\w+(?:'s \w+)?\W*(?:but|though|although|however|actually|well|not)\b",
                  re.IGNORECASE)
#: Content words that say nothing about *which* claim a reply addresses.
_GENERIC_REPLY_WORDS = frozenset(stem(w) for w in """think feel know sure lot time really
great good true right correct definitely absolutely exactly indeed yes yeah important""".split())
#: "You"/"your …" opening a statement about the listener.
_YOU_SUBJECT = re.compile(r"^(?:you|you're|you've|your)\b", re.IGNORECASE)
_RELATION_MENTION = re.compile(r"\b(?:" + _REL_RE + r")s?\b", re.IGNORECASE)


#: Words that can follow a bare "I" without being its verb ("and I", "I and my sister").
_NOT_VERBS = frozenset("""and or but to the a an of in on at for with as so than that""".split())
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
            if msg.role == "user" and previous and previous[-1].role == "assistant" \
                    and _CONFIRM.match(msg.content) and not _BUT.match(msg.content):
                facts.extend(self._confirmed(previous[-1], msg, session_time))
            if msg.role == "user" or (self.include_assistant and msg.role == "assistant"):
                facts.extend(self._extract_message(msg, session_time,
                                                   self._addressee(msg, previous)))
            previous.append(msg)
        return facts

    def _confirmed(self, said: ExtractInput, reply: ExtractInput,
                   session_time: datetime | None) -> list[ExtractedFact]:
        """What the assistant said about the user ("You moved to Berlin last year"), when
        the user's next turn confirms it: the user's fact, citing the assistant's words.

        Only plain statements with "you"/"your" as their subject count — not the
        assistant's suggestions, recollections ("I recall you …"), hedges or questions. A
        confirmation is an explicit agreement ("Yes", "Exactly", …; not "Yes, but …") that
        addresses the claim: the reply shares a content word with it ("Yes, the marathon
        was tough" confirms "You ran a marathon"), or it is a bare agreement ("Yes, it has
        been hard.", under three content words) and then confirms only the last claim of
        the turn, the one it answers. A reply about something else confirms nothing."""
        user = reply.speaker or self.user_name or "the user"
        ref = said.timestamp or reply.timestamp or session_time
        reply_words = set(content_tokens(_CONFIRM.sub("", reply.content, count=1)))
        reply_words -= {stem(t) for t in content_tokens(user)} | _GENERIC_REPLY_WORDS
        bare = len(reply_words) < 3
        claims: list[ExtractedFact] = []
        for sentence in sentences(said.content):
            text = sentence.text
            if text.endswith("?") or HYPOTHETICAL.search(text) or ASSISTANT_BOILERPLATE.search(
                    text) or REPORTED.search(text) or re.search(r"\b(?:i|me|my|we|us|our)\b",
                                                                text, re.IGNORECASE):
                continue
            body = DISCOURSE.sub("", text.rstrip(".!"))
            m = _YOU_SUBJECT.match(body)
            if m is None or len(content_tokens(body)) < 3:
                continue
            resolved = _clean(re.sub(
                r"\b(?:you're|you've|you|your|yours|yourself)\b",
                lambda w: {"you're": f"{user} is", "you've": f"{user} has",
                           "your": f"{user}'s", "yours": f"{user}'s"}.get(
                               w.group(0).lower(), user), body, flags=re.IGNORECASE))
            if resolved.startswith(user + " "):  # "Ana have" → "Ana has"
                resolved = f"{user} {self._conjugate(resolved[len(user) + 1:])}"
            fact_text = resolved[0].upper() + resolved[1:] + "."
            past = is_past(body)
            if not bare and not reply_words & set(content_tokens(body)):
                continue  # the reply talks about something else
            claims.append(ExtractedFact(
                text=fact_text, subject=user, attribute=f"about:{content_tokens(body)[0]}",
                value=_clean(body.lower()),
                memory_type=RELATIONSHIP if _RELATION_MENTION.search(body) else (
                    EVENT if past else PERSONA),
                source_message_id=said.id, span=(sentence.start, sentence.end),
                negated=has_negation(body), observed_at=ref,
                resolved_names=(user,), extractor=self.name, extractor_version=self.version,
                confidence=0.6, confirmed_by=reply.id))
        return claims[-1:] if bare else claims

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
        unused: Clause | None = None  # the sentence just before, when it gave no fact
        for sentence in sentences(msg.content):
            if self._skip_sentence(sentence.text, msg.role):
                unused = None
                continue
            parts = list(clauses(sentence))
            made = [self._clause_fact(clause, msg, me, you, ref) for clause in parts]
            found = [f for f in made if f is not None]
            if len(found) == 1 and len(parts) > 1 and all(re.search(
                    r"^[\s,;]*(?:and|but)\b", msg.content[a.end:b.start], re.IGNORECASE)
                    for a, b in itertools.pairwise(parts)):
                found = [self._with_its_sentence(found[0], [c for c, f in zip(
                    parts, made, strict=True) if f is None], sentence, me, you)]
            if out and (not found or _ANAPHOR.match(DISCOURSE.sub("", sentence.text)) and all(
                    f.attribute.startswith(("stmt:", "event:", "about:")) for f in found)):
                extended = self._elaborate(out[-1], sentence, msg, me, you)
                if extended is not None:
                    out[-1] = extended
                    unused = None
                    continue
            if found and unused is not None:
                found[0] = self._with_antecedent(found[0], unused, sentence, msg, me, you)
            unused = None if found else sentence
            out.extend(found)
        return [f for f in out if not _only_the_exchange(msg.content[f.span[0]:f.span[1]])]

    def _with_its_sentence(self, fact: ExtractedFact, others: Sequence[Clause],
                           sentence: Clause, me: str, you: str) -> ExtractedFact:
        """``fact``, from one clause of ``sentence``, as the whole sentence when the other
        clauses stated no fact only for not naming the speaker ("Emotional support from
        colleagues and friends is vital, and I seek interactions that resonate" is one
        memory, not "Ana seeks interactions that resonate": the clauses are joined by "and"
        or "but", not a bare comma, which more often runs two statements together). Only a
        generic statement (no
        named attribute) without a resolved date is widened; a clause about the listener,
        reported, irrealis or of under three content words keeps the fact as it is."""
        if not fact.attribute.startswith(("stmt:", "event:", "about:")) or fact.time_text \
                or fact.confirmed_by is not None:
            return fact
        for clause in others:
            if not _told_of_something(_after_greeting(DISCOURSE.sub(
                    "", clause.text.rstrip(".!,;").strip()))):
                return fact
        body = _clean(self._resolve_pronouns(_after_greeting(DISCOURSE.sub(
            "", sentence.text.rstrip(".!").strip())), me, you))
        return replace(fact, text=f"{body[0].upper()}{body[1:]}.",
                       span=(sentence.start, sentence.end),
                       negated=fact.negated or has_negation(body))

    def _with_antecedent(self, fact: ExtractedFact, before: Clause, sentence: Clause,
                         msg: ExtractInput, me: str, you: str) -> ExtractedFact:
        """``fact`` with the sentence it points back to, when it opens with a pronoun that
        needs one ("Yes, the support from friends like Matthew and Linda has been
        invaluable. They've really encouraged me." gives "The support from friends like
        Matthew and Linda has been invaluable; they've really encouraged Ana.", not
        "They've really encouraged Ana."). ``before`` is the sentence right before, which
        stated no fact; one about the speaker (it stated no fact for a reason: a wish, a
        plan), about the listener, reported, or of under three content words is no
        antecedent, and the fact is returned unchanged."""
        if fact.span[0] != sentence.start or not _NEEDS_ANTECEDENT.match(
                DISCOURSE.sub("", fact.text)):
            return fact
        if msg.content[before.end:sentence.start].strip() or sentence.end - before.start \
                > MAX_ELABORATED:
            return fact
        body = _after_greeting(DISCOURSE.sub("", before.text.rstrip(".!").strip()))
        if not _told_of_something(body):
            return fact  # one about the speaker gave no fact for a reason (a wish, a plan)
        body = _clean(self._resolve_pronouns(body, me, you))
        text = f"{body[0].upper()}{body[1:]}; {fact.text[0].lower()}{fact.text[1:]}"
        return replace(fact, text=text, span=(before.start, fact.span[1]),
                       negated=fact.negated or has_negation(body))

    def _elaborate(self, fact: ExtractedFact, sentence: Clause, msg: ExtractInput, me: str,
                   you: str) -> ExtractedFact | None:
        """A sentence right after a statement, about what it stated rather than about
        anyone ("I've finally retired. It's a mix of relief and anticipation."): the
        statement goes on, so the fact takes it in, its span growing to cover both. Only a
        generic statement (no named attribute) of the same turn that ends where this
        sentence starts is extended; a sentence about a person, the listener or the
        exchange, reported speech, or one with under three content words is not. A
        sentence about the exchange that announces a topic ("let me introduce my family")
        takes in the sentence after it whatever that opens with."""
        if fact.source_message_id != msg.id or fact.confirmed_by is not None \
                or not fact.attribute.startswith(("stmt:", "event:", "about:")):
            return None
        if msg.content[fact.span[1]:sentence.start].strip(" .!,;"):
            return None  # something was skipped in between
        if sentence.end - fact.span[0] > MAX_ELABORATED:
            return None
        body = sentence.text.rstrip(".!").strip()
        anaphoric = bool(_ANAPHOR.match(DISCOURSE.sub("", body)))
        # "Good, let me introduce my family. One parent is deceased, …": what the speaker
        # said they would tell is what follows
        introduced = _only_the_exchange(msg.content[fact.span[0]:fact.span[1]])
        if (_FIRST_PERSON.search(body) and not anaphoric) or _ABOUT_LISTENER.match(body) \
                or not (anaphoric or introduced or _ELABORATION.match(body)) \
                or re.search(r"\byour?s?\b", body, re.IGNORECASE) or REPORTED.search(body) \
                or len(content_tokens(body)) < 3:
            return None
        body = _clean(self._resolve_pronouns(body, me, you))
        text = f"{fact.text.rstrip('.!')}; {body[0].lower()}{body[1:]}."
        if fact.time_text and fact.time_text in fact.text:
            text = f"{fact.text.replace(' ' + fact.time_text, '').rstrip('.!')}; " \
                   f"{body[0].lower()}{body[1:]} {fact.time_text}."
        return replace(fact, text=text, span=(fact.span[0], sentence.end),
                       negated=fact.negated or has_negation(body))

    @staticmethod
    def _skip_sentence(text: str, role: str) -> bool:
        t = text.strip()
        if t.endswith("?"):
            return True
        if role == "assistant" and ASSISTANT_BOILERPLATE.search(t):
            return True
        if HYPOTHETICAL.search(_CONSIDERING.sub(" ", t)):
            return True  # irrealis; a first-person consideration alone is not (a memory)
        stripped = DISCOURSE.sub("", t)
        if GREETING.match(stripped) and len(content_tokens(stripped)) < 3:
            return True
        return False

    def _clause_fact(self, clause: Clause, msg: ExtractInput, me: str, you: str,
                     ref: datetime | None) -> ExtractedFact | None:
        text = clause.text.rstrip(".!?").strip()
        if GREETING.match(text) and len(content_tokens(text)) < 3:
            return None
        # A leading time expression ("Last week, I ran …") or discourse marker is lifted off.
        body = DISCOURSE.sub("", text)
        time_match = TIME_EXPR.search(body)
        time_expr = time_match.group(0).strip() if time_match else ""
        if time_match and time_match.start() == 0:
            body = DISCOURSE.sub("", body[time_match.end():].lstrip(" ,"))
        front = ""
        subj = _SUBJECT.match(body)
        if subj is None:
            fronted = _FRONTED.match(body)
            if fronted is not None and not TIME_EXPR.search(fronted.group("front")):
                front = fronted.group("front")
                body = body[fronted.end():]
                subj = _SUBJECT.match(body)
        if subj is None:
            return self._mention_fact(clause, body, msg, me, you, ref)
        predicate = body[subj.end():].strip()
        if subj.group("contr"):
            predicate = subj.group("contr") + " " + predicate
        if not content_tokens(predicate):
            return None
        if REPORTED.search(predicate):
            return None  # someone else's claim, or the speaker quoting one
        if _INTENT.match(_strip_adverbs(predicate)) and not time_expr:
            return None  # wishes, intentions and opinions are not facts
        if time_expr and time_match and time_match.start() > 0:
            predicate = _clean(re.sub(re.escape(time_expr), "", predicate, count=1,
                                      flags=re.IGNORECASE))
        past = is_past(predicate)
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
                held = _OWNED_VALUE.match(predicate)
                if held is not None:
                    # "my monthly income is now 18,000": the current value of one attribute
                    parts = [stem(w) for w in held.group("attr").split()]
                    # "my car is …" is the named attribute the other rules key "car" too
                    attribute = parts[0] if parts[0] in _SINGLE_VALUED and len(parts) == 1 \
                        else "own:" + "_".join(parts)
                    value = _clean(held.group("v")).lower()
                else:
                    head = re.match(r"^(?:favou?rite |fave )?([a-z]+)", predicate, re.I)
                    attribute = stem(head.group(1)) if head else attribute
                    value = _clean(re.sub(r"^[\w ]*?\b(?:is|are|was|were)\b", "", predicate,
                                          count=1))
            subject = me
            sentence = f"{me}'s {self._resolve_pronouns(predicate, me, you)}"
        else:
            subject = me
            attribute, value, negated, mtype = self._attribute(_strip_adverbs(predicate))
            stated = _dislike(predicate) if attribute == "food_dislike" else None
            stated = stated or self._conjugate(predicate)
            sentence = f"{me} {self._resolve_pronouns(stated, me, you)}"
        if front:
            sentence = f"{self._resolve_pronouns(front, me, you)}, {sentence}"
        sentence = _clean(sentence)
        valid_from = valid_to = None
        time_text = ""
        if time_expr:
            resolved = resolve_relative_time(time_expr, ref, past=past)
            if resolved is not None:
                valid_from, valid_to, time_text = resolved
                sentence = f"{sentence} {time_text}"
        if time_expr and not time_text:
            # no date to count from (a message without a timestamp): kept as it was said
            said = time_expr[0].lower() + time_expr[1:] if _COMMON_TIME_WORD.match(
                time_expr) else time_expr
            sentence = f"{_clean(sentence)} {said}"
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

    def _mention_fact(self, clause: Clause, body: str, msg: ExtractInput, me: str, you: str,
                      ref: datetime | None) -> ExtractedFact | None:
        """A clause that mentions the speaker without opening with them ("The promotion has
        been great for my confidence", or by their own name: "The motivation is Sharon's
        life in sports"): the clause itself, first person resolved, typed by
        tense. Keyed ``about:<first content word>``, never single-valued: it adds, and only
        an identical statement is a duplicate."""
        if not (_FIRST_PERSON.search(body) or _names(body, me)) or _ABOUT_LISTENER.match(body):
            return None
        if REPORTED.search(body) or len(content_tokens(body)) < 3:
            return None
        text = _clean(self._resolve_pronouns(body, me, you))
        if not text:
            return None
        text = text[0].upper() + text[1:]
        if not text.endswith((".", "!")):
            text += "."
        past = is_past(body)
        time_match = TIME_EXPR.search(body)
        valid_from = valid_to = None
        time_text = ""
        if time_match:
            resolved = resolve_relative_time(time_match.group(0).strip(), ref, past=past)
            if resolved is not None:
                valid_from, valid_to, time_text = resolved
                if time_text.lower() not in text.lower():  # "in 2019" is said as it is
                    text = f"{text[:-1]} ({time_text})."
        head = content_tokens(body)[0]
        mtype = RELATIONSHIP if _RELATION_MENTION.search(body) else (
            EVENT if past or time_text else PERSONA)
        resolved_names = tuple(sorted(
            ({me} if me.lower() not in msg.content.lower() else set())
            | ({you} if re.search(r"\byour?s?\b", clause.text.lower()) else set())))
        return ExtractedFact(
            text=text, subject=me, attribute=f"about:{head}", value=_clean(body.lower()),
            memory_type=mtype, source_message_id=msg.id, span=(clause.start, clause.end),
            negated=has_negation(body), valid_from=valid_from, valid_to=valid_to,
            observed_at=msg.timestamp, time_text=time_text, resolved_names=resolved_names,
            extractor=self.name, extractor_version=self.version, confidence=0.7)

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
        past = is_past(predicate)
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
                               toks[i + 1].endswith("ed") or toks[i + 1] in IRREGULAR_PAST)
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
                   "i'm": f"{me} is", "i've": f"{me} has", "i'll": f"{me} will",
                   "i'd": f"{me} would", "we're": f"{me} is", "we've": f"{me} has",
                   "we'll": f"{me} will"}
        # "activities I like" → "activities Ana likes": a bare "I" inside a clause keeps
        # its verb in agreement (adverbs in between are skipped)
        text = re.sub(r"(?<![\w'])I((?:\s+(?:" + "|".join(sorted(_ADVERBS - {"no", "longer"}))
                      + r"|once|(?!(?:" + "|".join(sorted(_LY_VERBS)) + r")\b)[a-z]+ly))*)"
                      r"\s+([a-z]+)\b(?!')",
                      lambda m: f"I{m.group(1)} {_third_person(m.group(2))}"
                      if m.group(2) not in _NOT_VERBS else m.group(0), text)

        def sub(m: re.Match[str]) -> str:
            return mapping[m.group(0).lower()]

        return re.sub(r"\b(?:i'm|i've|i'll|i'd|we're|we've|we'll|i|me|myself|my|mine|we|us|"
                      r"our|ours|you|your|yours|yourself)\b", sub, text, flags=re.IGNORECASE)
